//! Commit ids as people read them.

/// The short form of a commit id, as `git log --oneline` and Argo CD print it: its first seven
/// characters, or the whole id when it is shorter (never a panic on a short or non-ASCII string).
pub fn short(id: &str) -> &str {
    match id.char_indices().nth(SHORT_LEN) {
        Some((end, _)) => &id[..end],
        None => id,
    }
}

/// [`short`] of an optional id, with `none` for a missing one.
pub fn short_or<'a>(id: Option<&'a str>, none: &'a str) -> &'a str {
    id.map_or(none, short)
}

/// Characters of a short commit id.
pub const SHORT_LEN: usize = 7;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seven_characters_or_the_whole_id() {
        assert_eq!(short("0123456789abcdef"), "0123456");
        assert_eq!(short("abc"), "abc");
        assert_eq!(short(""), "");
        assert_eq!(short("ééééééééé"), "ééééééé");
        assert_eq!(short_or(None, "-"), "-");
        assert_eq!(short_or(Some("0123456789"), "-"), "0123456");
    }
}
