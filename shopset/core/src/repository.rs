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

/// Whether git would read `url` from the local filesystem rather than from a git server: a
/// `file://` URL, a path (absolute or relative), or anything else that is not an `http(s)://`,
/// `ssh://` or `git://` URL with a host, nor scp-like `user@host:path`. An allowlist, so a transport
/// nobody thought of counts as local. libgit2 opens an existing directory as a local repository
/// before it considers the scp-like form, so `user@host:path` naming a directory of the working
/// directory counts as local too (the only check here that reads the filesystem).
pub fn is_local(url: &str) -> bool {
    // libgit2 matches these prefixes case-sensitively, as written here.
    for scheme in ["https://", "http://", "ssh://", "git://"] {
        if let Some(rest) = url.strip_prefix(scheme) {
            let host = rest.split('/').next().unwrap_or_default();
            let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
            return host.is_empty();
        }
    }
    let scp_like = url.split_once(':').is_some_and(|(user_host, path)| {
        user_host.split_once('@').is_some_and(|(user, host)| {
            !user.is_empty() && !host.is_empty() && !user_host.contains('/') && !path.is_empty()
        })
    });
    !scp_like || std::path::Path::new(url).is_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_paths_and_unknown_transports_are_local_and_git_servers_are_not() {
        for url in [
            "https://github.com/acme/shop.git",
            "http://127.0.0.1:8080/shop.git",
            "ssh://git@github.com/acme/shop",
            "ssh://github.com:2222/acme/shop",
            "git://127.0.0.1:9418/shop.git",
            "git@github.com:acme/shop.git",
        ] {
            assert!(!is_local(url), "{url} is a git server");
        }
        for url in [
            "file:///var/cache/shopset/other-tenant",
            "file://localhost/var/cache/shopset",
            "FILE:///var/cache",
            "/var/cache/shopset/other-tenant",
            "./repo",
            "repo",
            "../repo.git",
            "ext::sh -c touch% /tmp/pwned",
            "fd::17",
            "HTTPS://github.com/acme/shop.git",
            "https:///no-host",
            "ssh://git@/no-host",
            "git+ssh://host/path",
            "c:/repo",
            "host:path",
            "",
        ] {
            assert!(is_local(url), "{url:?} is local");
        }
    }

    #[test]
    fn https_ssh_and_scp_forms_of_one_repository_compare_equal() {
        let want = normalize_url("https://GitHub.com/acme/shop.git");
        for url in ["git@github.com:acme/shop.git", "ssh://git@github.com/acme/shop", "https://github.com/acme/shop/"] {
            assert_eq!(normalize_url(url), want, "{url}");
        }
        assert_ne!(normalize_url("https://github.com/acme/other"), want);
    }
}
