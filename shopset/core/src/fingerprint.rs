//! Fingerprints that stay the same across processes, platforms and versions (std's hasher does
//! not promise that): for names on disk and for telling that an input did not change.

/// FNV-1a, 64 bits.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100000001b3))
}

/// A 64-bit checksum that tells a damaged file from an intact one, a word at a time (FNV-1a's byte
/// loop costs milliseconds on the megabytes of a render memo). Every step is a bijection of the
/// state for a given word, so a change confined to one word always changes the result. Not a
/// defence against someone forging a file: it only tells damage apart.
pub fn checksum64(bytes: &[u8]) -> u64 {
    let mut h = 0x9e3779b97f4a7c15u64 ^ bytes.len() as u64;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(0xff51afd7ed558ccd).rotate_left(29);
    }
    for b in words.remainder() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x100000001b3);
    }
    // murmur3's finalizer: every bit of the state reaches every bit of the result.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51afd7ed558ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ceb9fe1a85ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_values() {
        // The reference values of FNV-1a 64.
        assert_eq!(super::fnv1a(b""), 0xcbf29ce484222325);
        assert_eq!(super::fnv1a(b"a"), 0xaf63dc4c8601ec8c);
    }

    #[test]
    fn checksum_changes_with_any_flipped_bit_and_with_length() {
        let bytes: Vec<u8> = (0..=255u8).cycle().take(203).collect();
        let sum = super::checksum64(&bytes);
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[i] ^= 1 << bit;
                assert_ne!(super::checksum64(&damaged), sum, "byte {i} bit {bit}");
            }
        }
        assert_ne!(super::checksum64(&bytes[..202]), sum);
        assert_ne!(super::checksum64(&[bytes.as_slice(), &[0]].concat()), sum);
    }
}
