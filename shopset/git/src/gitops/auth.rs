//! Git credentials: what they hold, how they are read from a Secret's data, and that they are
//! never printed.

use std::collections::BTreeMap;
use std::fmt;

/// Git credentials. Never printed: `Debug` shows which kind is set, not the values.
#[derive(Clone, Default)]
pub struct Auth {
    pub username: Option<String>,
    pub password: Option<String>,
    /// An SSH private key (PEM/OpenSSH text).
    pub ssh_key: Option<String>,
    pub ssh_passphrase: Option<String>,
    /// SSH host keys to trust, OpenSSH `known_hosts` lines (public, not a secret). When set, an
    /// SSH server must present a key one of them lists for its host (and port); when unset,
    /// libgit2 checks `~/.ssh/known_hosts`. Never "accept any key".
    pub known_hosts: Option<String>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("username", &self.username.as_ref().map(|_| "<set>"))
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ssh_key", &self.ssh_key.as_ref().map(|_| "<redacted>"))
            .field("known_hosts", &self.known_hosts.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl Auth {
    /// Every secret value, so callers can make sure none reaches a message.
    pub fn secrets(&self) -> Vec<&str> {
        [&self.password, &self.ssh_key, &self.ssh_passphrase]
            .into_iter()
            .filter_map(|s| s.as_deref())
            .filter(|s| !s.is_empty())
            .collect()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.username.is_none() && self.password.is_none() && self.ssh_key.is_none()
    }
}

impl Auth {
    /// Credentials from the data of a Kubernetes Secret, with Flux's keys: `username`, `password`
    /// (a token goes here), `identity` (SSH private key), `identity.passphrase`, `known_hosts`
    /// (the SSH host keys to trust).
    pub fn from_secret_data(data: &BTreeMap<String, Vec<u8>>) -> Result<Self, String> {
        let text = |key: &str| -> Result<Option<String>, String> {
            data.get(key)
                .map(|v| String::from_utf8(v.clone()).map_err(|_| format!("key {key:?} is not UTF-8 text")))
                .transpose()
        };
        let auth = Auth {
            username: text("username")?,
            password: text("password")?,
            ssh_key: text("identity")?,
            ssh_passphrase: text("identity.passphrase")?,
            known_hosts: text("known_hosts")?,
        };
        if auth.password.is_none() && auth.ssh_key.is_none() {
            return Err("it has neither `password` nor `identity`".into());
        }
        Ok(auth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAILRTh3+Tjca+a/xcB3OM+WIiaYLnVTtrZHutgORQlZYa";

    #[test]
    fn debug_does_not_show_known_hosts_or_keys() {
        let auth = Auth {
            ssh_key: Some("PRIVATE".into()),
            known_hosts: Some(format!("h ssh-ed25519 {KEY}")),
            ..Auth::default()
        };
        let debug = format!("{auth:?}");
        assert!(!debug.contains("PRIVATE") && !debug.contains(KEY), "{debug}");
        let data = [("identity", "PRIVATE"), ("known_hosts", "h ssh-ed25519 AAAA")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        assert_eq!(Auth::from_secret_data(&data).unwrap().known_hosts.as_deref(), Some("h ssh-ed25519 AAAA"));
    }
}
