//! SSH host keys checked against OpenSSH `known_hosts` lines.
//!
//! Why our own matcher: the `ssh-key` crate reads known_hosts lines (hashed names included) into
//! entries, but deciding whether an entry names a host — comma lists, `*` and `?` globs, `!`
//! negation, HMAC-SHA1 of hashed names, `@revoked` — is left to the caller, and that is most of
//! what is below. A dependency for the line splitting alone would not make it shorter.

/// The port of an SSH URL: `ssh://[user@]host[:port]/path` (also `ssh+git://`, `git+ssh://`);
/// 22 for the scp-like `[user@]host:path` and when none is given.
pub(super) fn ssh_port(url: &str) -> u16 {
    let Some(rest) = ["ssh://", "ssh+git://", "git+ssh://"].iter().find_map(|s| url.strip_prefix(s)) else {
        return 22;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let port = match host_port.strip_prefix('[') {
        Some(bracketed) => bracketed.split_once("]:").map(|(_, p)| p),
        None => host_port.rsplit_once(':').map(|(_, p)| p),
    };
    port.and_then(|p| p.parse().ok()).unwrap_or(22)
}

/// The name OpenSSH looks a host up by in known_hosts: `host`, or `[host]:port` off port 22.
pub(super) fn known_hosts_name(host: &str, port: u16) -> String {
    if port == 22 { host.to_string() } else { format!("[{host}]:{port}") }
}

/// Whether `known_hosts` (OpenSSH format) lists `key` (the raw key blob the server showed) for
/// `name` (see [`known_hosts_name`]). The error says why not, with a fix, and never holds a key.
///
/// Host patterns may be lists, negated (`!`) and use `*` and `?`, or hashed (`|1|salt|hash`, as
/// `ssh-keygen -H` and `HashKnownHosts yes` write them); `@revoked` lines refuse their key.
/// `@cert-authority` lines are not supported: they never match.
pub(super) fn check_known_hosts(known_hosts: &str, name: &str, key: &[u8]) -> Result<(), String> {
    let (mut listed, mut matched, mut revoked) = (false, false, false);
    for line in known_hosts.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let mut fields = line.split_whitespace();
        let Some(mut hosts) = fields.next() else { continue };
        let marker = hosts.strip_prefix('@');
        if marker.is_some() {
            let Some(next) = fields.next() else { continue };
            hosts = next;
        }
        if marker.is_some_and(|m| m != "revoked") {
            continue;
        }
        let names_host = match hosts.strip_prefix("|1|") {
            Some(hashed) => hashed_host_matches(hashed, name),
            None => host_patterns_match(hosts, name),
        };
        if !names_host {
            continue;
        }
        let (Some(_kind), Some(b64)) = (fields.next(), fields.next()) else { continue };
        let same = base64_decode(b64).is_some_and(|k| k == key);
        if marker.is_some() {
            revoked |= same;
        } else {
            listed = true;
            matched |= same;
        }
    }
    let keyscan = match name.strip_prefix('[').and_then(|r| r.split_once("]:")) {
        Some((host, port)) => format!("ssh-keyscan -p {port} {host}"),
        None => format!("ssh-keyscan {name}"),
    };
    if revoked {
        Err(format!(
            "the host key of {name} is marked @revoked in known_hosts; fix: do not connect until the server has a new key, then list that key for {name} in known_hosts"
        ))
    } else if matched {
        Ok(())
    } else if listed {
        Err(format!(
            "the host key of {name} does not match known_hosts; fix: if the server's key was changed on purpose, \
                replace its known_hosts line with the new key (`{keyscan}`, its fingerprint checked with the \
                server's owner); otherwise someone may be intercepting the connection: do not connect"
        ))
    } else {
        Err(format!(
            "known_hosts has no entry for {name}; fix: add the server's key line for {name} (e.g. from `{keyscan}`, its fingerprint checked with the server's owner)"
        ))
    }
}

/// Whether a hashed known_hosts host (`salt|hash` after `|1|`, both base64) is `name`: the hash is
/// HMAC-SHA1 of the name, lowercased as OpenSSH looks it up, keyed by the salt.
fn hashed_host_matches(salt_and_hash: &str, name: &str) -> bool {
    use hmac::{KeyInit, Mac};
    let Some((salt, hash)) = salt_and_hash.split_once('|') else { return false };
    let (Some(salt), Some(hash)) = (base64_decode(salt), base64_decode(hash)) else { return false };
    let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt) else { return false };
    mac.update(name.to_ascii_lowercase().as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// Whether a comma-separated known_hosts pattern list matches `name`: some pattern matches
/// and no negated (`!`) one does. Matching ignores ASCII case, as OpenSSH does.
fn host_patterns_match(patterns: &str, name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let mut positive = false;
    for pattern in patterns.split(',').map(str::to_ascii_lowercase) {
        match pattern.strip_prefix('!') {
            Some(negated) if glob_match(negated.as_bytes(), name.as_bytes()) => return false,
            Some(_) => {}
            None => positive |= glob_match(pattern.as_bytes(), name.as_bytes()),
        }
    }
    positive
}

/// `*` (any run) and `?` (one character) wildcard matching.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| glob_match(rest, &text[i..])),
        Some((b'?', rest)) => !text.is_empty() && glob_match(rest, &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && glob_match(rest, &text[1..]),
    }
}

/// Standard base64 (padding optional); None for anything else.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

#[cfg(test)]
mod known_hosts_tests {
    use super::*;

    // An ed25519 public key blob ("ssh-ed25519", 32 key bytes) and another one.
    const KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAILRTh3+Tjca+a/xcB3OM+WIiaYLnVTtrZHutgORQlZYa";
    const OTHER: &str = "AAAAC3NzaC1lZDI1NTE5AAAAICB11tfJnXBl2dprl8TNECmmQIzPDPEQ7IJ+5EC12/C0";

    fn key() -> Vec<u8> {
        base64_decode(KEY).unwrap()
    }

    #[test]
    fn base64_round_trips_the_key_type() {
        let k = key();
        assert_eq!(k.len(), 51);
        assert_eq!(&k[4..15], b"ssh-ed25519");
        assert_eq!(base64_decode("aGk="), Some(b"hi".to_vec()));
        assert_eq!(base64_decode("a-b"), None);
    }

    #[test]
    fn ports_and_names() {
        assert_eq!(ssh_port("ssh://git@127.0.0.1:2222/repo.git"), 2222);
        assert_eq!(ssh_port("ssh://127.0.0.1/repo.git"), 22);
        assert_eq!(ssh_port("ssh://git@[::1]:2200/repo.git"), 2200);
        assert_eq!(ssh_port("git@github.com:org/repo.git"), 22);
        assert_eq!(known_hosts_name("127.0.0.1", 2222), "[127.0.0.1]:2222");
        assert_eq!(known_hosts_name("github.com", 22), "github.com");
    }

    #[test]
    fn accepts_only_the_listed_key_for_the_host_and_port() {
        let kh = format!("# comment\n[127.0.0.1]:2222 ssh-ed25519 {KEY} host\nother.example ssh-ed25519 {OTHER}\n");
        assert_eq!(check_known_hosts(&kh, "[127.0.0.1]:2222", &key()), Ok(()));
        // The same key on another port or host is not listed there.
        let err = check_known_hosts(&kh, "[127.0.0.1]:2223", &key()).unwrap_err();
        assert!(err.starts_with("known_hosts has no entry for [127.0.0.1]:2223"), "{err}");
        assert!(err.contains("ssh-keyscan -p 2223 127.0.0.1"), "{err}");
        let err = check_known_hosts(&kh, "127.0.0.1", &key()).unwrap_err();
        assert!(err.contains("no entry for 127.0.0.1"), "{err}");
        // Another key for a listed host is refused.
        let err = check_known_hosts(&kh, "[127.0.0.1]:2222", &base64_decode(OTHER).unwrap()).unwrap_err();
        assert!(err.starts_with("the host key of [127.0.0.1]:2222 does not match known_hosts; fix:"), "{err}");
        assert!(!err.contains(KEY) && !err.contains(OTHER), "{err}");
    }

    #[test]
    fn patterns_markers_and_hashes() {
        let k = key();
        assert_eq!(
            check_known_hosts(&format!("a.example,*.shop.example ssh-ed25519 {KEY}"), "git.shop.example", &k),
            Ok(())
        );
        assert!(check_known_hosts(&format!("*.example,!git.example ssh-ed25519 {KEY}"), "git.example", &k).is_err());
        assert_eq!(check_known_hosts(&format!("GIT.example ssh-ed25519 {KEY}"), "git.example", &k), Ok(()));
        let revoked = format!("git.example ssh-ed25519 {KEY}\n@revoked * ssh-ed25519 {KEY}");
        assert!(check_known_hosts(&revoked, "git.example", &k).unwrap_err().contains("@revoked"));
        assert!(check_known_hosts(&format!("@cert-authority * ssh-ed25519 {KEY}"), "git.example", &k).is_err());
        // A hashed name that is not this host's.
        let err = check_known_hosts(&format!("|1|c2FsdA==|aGFzaA== ssh-ed25519 {KEY}"), "git.example", &k).unwrap_err();
        assert!(err.starts_with("known_hosts has no entry for git.example"), "{err}");
        assert!(check_known_hosts("", "git.example", &k).is_err());
    }

    #[test]
    fn hashed_entries_as_ssh_keygen_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        std::fs::write(&file, format!("[127.0.0.1]:2222 ssh-ed25519 {KEY}\ngit.example ssh-ed25519 {OTHER}\n"))
            .unwrap();
        let out =
            std::process::Command::new("ssh-keygen").arg("-H").arg("-f").arg(&file).output().expect("run ssh-keygen");
        assert!(out.status.success(), "ssh-keygen -H: {}", String::from_utf8_lossy(&out.stderr));
        let hashed = std::fs::read_to_string(&file).unwrap();
        assert!(hashed.lines().all(|l| l.starts_with("|1|")), "{hashed}");
        assert_eq!(check_known_hosts(&hashed, "[127.0.0.1]:2222", &key()), Ok(()));
        assert_eq!(check_known_hosts(&hashed, "GIT.example", &base64_decode(OTHER).unwrap()), Ok(()));
        // Listed, but with the other key: a mismatch, not a missing entry.
        let err = check_known_hosts(&hashed, "git.example", &key()).unwrap_err();
        assert!(err.starts_with("the host key of git.example does not match known_hosts"), "{err}");
        let err = check_known_hosts(&hashed, "[127.0.0.1]:2223", &key()).unwrap_err();
        assert!(err.starts_with("known_hosts has no entry for [127.0.0.1]:2223"), "{err}");
    }
}
