//! What a tenant's objects may make the controller do. A Tier is namespaced: whoever may create
//! one in their namespace must not make the controller read its own filesystem, where its cache
//! holds every tenant's repositories. So the controller refuses local repositories (`file://`
//! URLs, paths) unless started with `--allow-local-urls`, which only tests and local demos use.
//! `shopctl` runs as its user, on that user's files, and keeps accepting them.

use kube::ResourceExt;
use shopset_core::manifests::TierInput;
use shopset_core::repository::is_local;

/// Reason of the condition of a Tier refused for a local repository.
pub const LOCAL_URL_REFUSED: &str = "LocalURLRefused";

/// A Tier whose repositories include local ones, and which.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "Tier {tier}: {}: the controller reads no local repositories (its cache holds every tenant's repositories); fix: use the URL of a git server (https://, ssh://, git:// or user@host:path); local URLs are for `shopctl`, or a controller started with --allow-local-urls in tests and local demos only",
    describe(.urls)
)]
pub struct LocalUrlRefused {
    /// `namespace/name`.
    pub tier: String,
    /// (field, value): `spec.app.url`, `spec.system.url` or `Configuration/<name> spec.url`.
    pub urls: Vec<(String, String)>,
}

fn describe(urls: &[(String, String)]) -> String {
    let list: Vec<String> = urls.iter().map(|(field, value)| format!("{field} {value:?}")).collect();
    let verb = if urls.len() == 1 { "is a local repository" } else { "are local repositories" };
    format!("{} {verb}", list.join(" and "))
}

/// The local repositories `input` names, in the order a sync reads them: app, system, then
/// each Configuration. The promotion source Tier lends only its branch name, not its URLs.
pub fn local_urls(input: &TierInput) -> Result<(), LocalUrlRefused> {
    let tier = &input.tier;
    let mut urls = vec![
        ("spec.app.url".to_string(), tier.spec.app.url.clone()),
        ("spec.system.url".to_string(), tier.spec.system.url.clone()),
    ];
    urls.extend(
        input.configurations.iter().map(|c| (format!("Configuration/{} spec.url", c.name_any()), c.spec.url.clone())),
    );
    urls.retain(|(_, url)| is_local(url));
    if urls.is_empty() {
        return Ok(());
    }
    let tier = format!("{}/{}", tier.namespace().unwrap_or_else(|| "default".into()), tier.name_any());
    Err(LocalUrlRefused { tier, urls })
}

#[cfg(test)]
mod tests {
    use shopset_core::api::{Configuration, Tier};

    use super::*;

    fn input(app: &str, system: &str, config: &str) -> TierInput {
        let tier: Tier = serde_json::from_value(serde_json::json!({
            "apiVersion": "shopset.dev/v1alpha1", "kind": "Tier",
            "metadata": {"name": "tier-0", "namespace": "team-a"},
            "spec": {"app": {"url": app}, "system": {"url": system}},
        }))
        .unwrap();
        let cfg: Configuration = serde_json::from_value(serde_json::json!({
            "apiVersion": "shopset.dev/v1alpha1", "kind": "Configuration",
            "metadata": {"name": "shop-config", "namespace": "team-a"},
            "spec": {"url": config},
        }))
        .unwrap();
        TierInput { tier, from: None, configurations: vec![cfg], shopsets: Vec::new() }
    }

    #[test]
    fn git_servers_pass() {
        let ok = input("https://g.example/app.git", "git@g.example:system.git", "git://127.0.0.1:9418/config.git");
        assert_eq!(local_urls(&ok), Ok(()));
    }

    #[test]
    fn each_local_repository_is_named_with_its_field_and_the_fix() {
        let err = local_urls(&input(
            "file:///var/cache/shopset/team-b-app",
            "https://g.example/system.git",
            "/var/cache/shopset/team-b-config",
        ))
        .unwrap_err();
        assert_eq!(
            err.urls,
            [
                ("spec.app.url".to_string(), "file:///var/cache/shopset/team-b-app".to_string()),
                ("Configuration/shop-config spec.url".to_string(), "/var/cache/shopset/team-b-config".to_string()),
            ]
        );
        let message = err.to_string();
        for words in [
            "Tier team-a/tier-0: ",
            "spec.app.url \"file:///var/cache/shopset/team-b-app\" and Configuration/shop-config spec.url",
            "are local repositories",
            "fix: ",
            "--allow-local-urls",
        ] {
            assert!(message.contains(words), "{words:?} in {message}");
        }
        let one = local_urls(&input("https://g.example/app.git", "file:///srv/system.git", "https://g.example/c.git"))
            .unwrap_err()
            .to_string();
        assert!(one.contains("spec.system.url \"file:///srv/system.git\" is a local repository"), "{one}");
    }
}
