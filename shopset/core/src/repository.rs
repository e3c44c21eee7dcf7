//! Repository URLs as people write them.

/// A repository URL reduced to `host[:port]/path`, so the https, ssh and scp-like forms of one
/// repository compare equal.
pub fn normalize_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    let url = url.strip_suffix(".git").unwrap_or(url);
    let rest = match url.split_once("://") {
        Some((_, rest)) => rest.to_string(),
        // scp-like user@host:path
        None => url.replacen(':', "/", 1),
    };
    let rest = match rest.split_once('@') {
        Some((user, host)) if !user.contains('/') => host.to_string(),
        _ => rest,
    };
    match rest.split_once('/') {
        Some((host, path)) => format!("{}/{}", host.to_ascii_lowercase(), path),
        None => rest.to_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_ssh_and_scp_forms_of_one_repository_compare_equal() {
        let want = normalize_url("https://GitHub.com/acme/shop.git");
        for url in ["git@github.com:acme/shop.git", "ssh://git@github.com/acme/shop", "https://github.com/acme/shop/"] {
            assert_eq!(normalize_url(url), want, "{url}");
        }
        assert_ne!(normalize_url("https://github.com/acme/other"), want);
    }
}
