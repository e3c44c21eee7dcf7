//! Argo CD repository credential templates (`argocd.argoproj.io/secret-type: repo-creds`) for a
//! Tier's repositories. Argo CD clones the system repository with its submodules (the app
//! repository as `base`, the configuration repositories under `config/`); it gives a submodule
//! credentials only through a credential template whose URL is a prefix of the submodule's URL,
//! never through a repository Secret of the parent. So the Tier's git credentials are written as
//! templates whose URL prefixes cover the system, app and configuration URLs.
//!
//! [`secrets`] builds them (pure, the same for the controller and `shopctl argocd-creds`);
//! [`apply`] applies them with server-side apply and prunes the Tier's stale ones; [`delete_all`]
//! removes them when the Tier is deleted.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams};
use shopset_core::api::{Configuration, Tier};
use shopset_git::gitops::Auth;

use crate::argocd::{FIELD_MANAGER, MANAGED_BY, TIER_LABEL};

/// Argo CD's label that makes a Secret a credential template.
pub const SECRET_TYPE: (&str, &str) = ("argocd.argoproj.io/secret-type", "repo-creds");
/// The namespace of the Tier a template belongs to: Argo CD's namespace is shared by the Tiers of
/// many namespaces, and two of them may have the same name.
pub const TIER_NAMESPACE_LABEL: &str = "shopset.dev/tier-namespace";
/// The longest name a Secret may have (a DNS-1123 subdomain).
const MAX_NAME: usize = 253;

/// Why the credential templates could not be applied or pruned. Never holds a credential.
#[derive(Debug, thiserror::Error)]
pub enum RepoCredsError {
    #[error("Argo CD namespace {namespace:?} does not exist; fix: install Argo CD there or set spec.argocd.namespace")]
    NoNamespace { namespace: String },
    #[error("cannot {action} Argo CD credential template Secret {namespace}/{name}: {message}")]
    Api { action: &'static str, namespace: String, name: String, message: String },
    #[error("cannot list Argo CD credential template Secrets in {namespace}: {message}")]
    List { namespace: String, message: String },
}

impl RepoCredsError {
    /// An API error of `action` on a template, in the words a person acts on, with no credential
    /// of `auth` in it (the API server may quote what it was sent).
    fn of(action: &'static str, namespace: &str, name: &str, auth: &Auth, e: kube::Error) -> Self {
        if let kube::Error::Api(status) = &e
            && status.code == 404
            && status.details.as_ref().map(|d| d.kind.as_str()) == Some("namespaces")
        {
            return RepoCredsError::NoNamespace { namespace: namespace.into() };
        }
        let mut message = redact(&crate::error::api_message(&e), auth);
        if matches!(&e, kube::Error::Api(s) if s.code == 403) {
            message.push_str(&format!(
                "; fix: let the controller manage Secrets in Argo CD's namespace: kubectl apply -n {namespace} -f deploy/argocd/repo-creds-rolebinding.yaml"
            ));
        }
        if action == "list" {
            return RepoCredsError::List { namespace: namespace.into(), message };
        }
        RepoCredsError::Api { action, namespace: namespace.into(), name: name.into(), message }
    }
}

/// `text` with every credential of `auth`, as given and base64-encoded, replaced.
fn redact(text: &str, auth: &Auth) -> String {
    let mut out = text.to_string();
    for secret in auth.secrets() {
        let encoded = base64::engine::general_purpose::STANDARD.encode(secret);
        for form in [secret.to_string(), encoded] {
            out = out.replace(&form, "<redacted>");
        }
    }
    out
}

/// The repository URLs of a Tier that Argo CD reads: the system repository and, as its
/// submodules, the app repository and the Configurations' repositories. Sorted, each once.
pub fn urls(tier: &Tier, configurations: &[Configuration]) -> Vec<String> {
    let all = [tier.spec.system.url.as_str(), tier.spec.app.url.as_str()]
        .into_iter()
        .chain(configurations.iter().map(|c| c.spec.url.as_str()));
    all.map(str::to_string).collect::<BTreeSet<_>>().into_iter().collect()
}

/// How Argo CD reaches a repository, as far as credentials go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Transport {
    /// `https://` or `http://`: username and password.
    Http,
    /// `ssh://` or `user@host:path`: a private key.
    Ssh,
}

/// The part of `url` that a credential template may not generalise over (scheme, user, host and
/// port, up to and with the separator before the path), the transport, and the rest. `None` for
/// URLs no credential applies to (`file://`, `git://`, local paths).
fn split(url: &str) -> Option<(Transport, &str, &str)> {
    if let Some((scheme, rest)) = url.split_once("://") {
        let transport = match scheme.to_ascii_lowercase().as_str() {
            "https" | "http" => Transport::Http,
            "ssh" => Transport::Ssh,
            _ => return None,
        };
        let authority = rest.find('/').map_or(rest.len(), |i| i + 1);
        let at = scheme.len() + 3 + authority;
        return Some((transport, &url[..at], &url[at..]));
    }
    // scp-like `user@host:path` (a `:` before any `/`).
    let colon = url.find(':')?;
    if url[..colon].contains('/') || !url[..colon].contains('@') {
        return None;
    }
    Some((Transport::Ssh, &url[..=colon], &url[colon + 1..]))
}

/// One credential template: its URL prefix and the repositories it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The longest common prefix of `urls` that ends at a path boundary (`/`, or the `:` of an
    /// scp-like URL): Argo CD uses a template for every repository URL it is a prefix of.
    pub prefix: String,
    pub urls: Vec<String>,
    ssh: bool,
}

/// `urls` grouped by transport, scheme, user, host and port; per group the prefix that covers
/// every URL of it and as little else as possible. URLs no credential applies to are left out.
pub fn groups(urls: &[String]) -> Vec<Group> {
    let mut by_key: BTreeMap<(Transport, String), Vec<(&str, &str)>> = BTreeMap::new();
    for url in urls {
        if let Some((transport, authority, path)) = split(url) {
            by_key.entry((transport, authority.to_string())).or_default().push((url, path));
        }
    }
    by_key
        .into_iter()
        .map(|((transport, authority), members)| {
            // A group has at least the member that made it.
            let mut common = members[0].1;
            for (_, path) in &members[1..] {
                let same = common
                    .char_indices()
                    .zip(path.chars())
                    .take_while(|((_, a), b)| a == b)
                    .last()
                    .map_or(0, |((i, a), _)| i + a.len_utf8());
                common = &common[..same];
            }
            // Back to the last `/` within the common part: `org/app.git` and `org/apex.git`
            // share `org/ap`, but a template for `org/ap` would also cover `org/apis.git`.
            let common = common.rfind('/').map_or("", |i| &common[..=i]);
            Group {
                prefix: format!("{authority}{common}"),
                urls: members.iter().map(|(u, _)| u.to_string()).collect(),
                ssh: transport == Transport::Ssh,
            }
        })
        .collect()
}

/// The name of the template of `prefix` for Tier `namespace`/`tier`: readable, and a hash of all
/// three, as `shopset-shops-tier-0` alone would be the same for namespace `shops-tier` and Tier
/// `0`. At most 253 characters.
pub fn secret_name(namespace: &str, tier: &str, prefix: &str) -> String {
    let hash = shopset_core::fingerprint::fnv1a(format!("{namespace}\0{tier}\0{prefix}").as_bytes());
    let suffix = format!("-{:08x}", hash as u32);
    let mut base = format!("shopset-{namespace}-{tier}");
    base.truncate(MAX_NAME - suffix.len());
    // A DNS-1123 subdomain ends in an alphanumeric character; the suffix does.
    format!("{base}{suffix}")
}

/// The Argo CD credential templates of a Tier, in its `spec.argocd.namespace`: one per group of
/// [`groups`] that the credentials fit (username and password for HTTP(S), the private key for
/// SSH). None when the Tier names no credentials.
pub fn secrets(tier: &Tier, configurations: &[Configuration], auth: &Auth) -> Vec<Secret> {
    if tier.spec.credentials.is_none() {
        return Vec::new();
    }
    let namespace = tier.namespace().unwrap_or_else(|| "default".into());
    let name = tier.name_any();
    let mut out = Vec::new();
    for group in groups(&urls(tier, configurations)) {
        let mut data = BTreeMap::from([("type".to_string(), "git".to_string()), ("url".into(), group.prefix.clone())]);
        if group.ssh {
            let Some(key) = &auth.ssh_key else { continue };
            data.insert("sshPrivateKey".into(), key.clone());
        } else {
            let Some(password) = &auth.password else { continue };
            // The user the controller's own git gives a token without one (Argo CD wants one).
            data.insert("username".into(), auth.username.clone().unwrap_or_else(|| "git".into()));
            data.insert("password".into(), password.clone());
        }
        let labels = BTreeMap::from([
            (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
            (SECRET_TYPE.0.into(), SECRET_TYPE.1.into()),
            (TIER_LABEL.into(), name.clone()),
            (TIER_NAMESPACE_LABEL.into(), namespace.clone()),
        ]);
        out.push(Secret {
            metadata: ObjectMeta {
                name: Some(secret_name(&namespace, &name, &group.prefix)),
                namespace: Some(tier.spec.argocd.namespace.clone()),
                labels: Some(labels),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".into()),
            data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v.into_bytes()))).collect()),
            ..Secret::default()
        });
    }
    out
}

/// The templates as one YAML stream, `---` between documents: what `shopctl argocd-creds` prints
/// and `kubectl apply -f -` takes.
pub fn to_yaml(secrets: &[Secret]) -> Result<String, serde_yaml::Error> {
    let docs: Vec<String> = secrets.iter().map(serde_yaml::to_string).collect::<Result<_, _>>()?;
    Ok(docs.join("---\n"))
}

/// What [`apply`] changed: `namespace/name` of each template.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub applied: Vec<String>,
    pub deleted: Vec<String>,
}

/// The label selector of the templates of Tier `namespace`/`tier`.
fn selector(namespace: &str, tier: &str) -> String {
    format!(
        "{}={},{}={},{TIER_LABEL}={tier},{TIER_NAMESPACE_LABEL}={namespace}",
        MANAGED_BY.0, MANAGED_BY.1, SECRET_TYPE.0, SECRET_TYPE.1
    )
}

/// Applies `secrets` (from [`secrets`]) in the Tier's Argo CD namespace and, with `prune`,
/// deletes the Tier's templates there that are not among them. Fails closed: when listing fails,
/// nothing is deleted.
pub async fn apply(
    client: &kube::Client,
    tier: &Tier,
    auth: &Auth,
    secrets: &[Secret],
    prune: bool,
) -> Result<Applied, RepoCredsError> {
    let namespace = &tier.spec.argocd.namespace;
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut out = Applied::default();
    for secret in secrets {
        let name = secret.name_any();
        api.patch(&name, &params, &Patch::Apply(secret))
            .await
            .map_err(|e| RepoCredsError::of("apply", namespace, &name, auth, e))?;
        out.applied.push(format!("{namespace}/{name}"));
    }
    if prune {
        let keep: BTreeSet<String> = secrets.iter().map(|s| s.name_any()).collect();
        out.deleted = self::prune(client, tier, auth, &keep).await?;
    }
    Ok(out)
}

/// Deletes the Tier's templates in its Argo CD namespace whose names are not in `keep`.
async fn prune(
    client: &kube::Client,
    tier: &Tier,
    auth: &Auth,
    keep: &BTreeSet<String>,
) -> Result<Vec<String>, RepoCredsError> {
    let namespace = &tier.spec.argocd.namespace;
    let tier_namespace = tier.namespace().unwrap_or_else(|| "default".into());
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let selector = selector(&tier_namespace, &tier.name_any());
    // Names only: the list's metadata carries no credential.
    let existing = match api.list_metadata(&ListParams::default().labels(&selector)).await {
        Ok(list) => list,
        // Nothing to write and no right to Secrets there: Argo CD's admin never bound
        // deploy/argocd/ for a Tier without credentials, and the controller wrote nothing.
        Err(kube::Error::Api(s)) if s.code == 403 && keep.is_empty() => {
            tracing::debug!(namespace, "may not list Secrets: no credential template to prune");
            return Ok(Vec::new());
        }
        Err(e) => return Err(RepoCredsError::of("list", namespace, "", auth, e)),
    };
    let mut deleted = Vec::new();
    for name in existing.items.iter().map(|s| s.name_any()).filter(|n| !keep.contains(n)) {
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => deleted.push(format!("{namespace}/{name}")),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(RepoCredsError::of("delete", namespace, &name, auth, e)),
        }
    }
    Ok(deleted)
}

/// Deletes every template of the Tier (the Tier is being deleted).
pub async fn delete_all(client: &kube::Client, tier: &Tier) -> Result<Vec<String>, RepoCredsError> {
    prune(client, tier, &Auth::default(), &BTreeSet::new()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(urls: &[&str]) -> Vec<String> {
        urls.iter().map(|u| u.to_string()).collect()
    }

    fn prefixes(urls: &[&str]) -> Vec<String> {
        groups(&strings(urls)).into_iter().map(|g| g.prefix).collect()
    }

    #[test]
    fn one_prefix_per_scheme_user_host_and_port_ending_at_a_path_boundary() {
        assert_eq!(
            prefixes(&[
                "https://git.example.com/acme/shop-app.git",
                "https://git.example.com/acme/shop-config.git",
                "https://git.example.com/acme/shop-system.git",
            ]),
            ["https://git.example.com/acme/"],
            "`acme/shop-` is no boundary: it would cover acme/shop-anything"
        );
        assert_eq!(
            prefixes(&["http://127.0.0.1:8080/a/x.git", "http://127.0.0.1:8080/b/y.git"]),
            ["http://127.0.0.1:8080/"],
        );
        assert_eq!(
            prefixes(&["https://h/org/team/app.git", "https://h/org/team/sub/cfg.git", "https://h/org/team/sys.git"]),
            ["https://h/org/team/"],
        );
        // One URL: its own directory.
        assert_eq!(prefixes(&["https://h/org/app.git"]), ["https://h/org/"]);
        // Other port, scheme, user or host: another template each.
        assert_eq!(
            prefixes(&[
                "https://h/org/app.git",
                "https://h:8443/org/cfg.git",
                "http://h/org/sys.git",
                "https://other/org/cfg.git",
                "ssh://git@h/org/a.git",
                "ssh://deploy@h/org/b.git",
                "git@h:org/c.git",
                "git@h:org/d.git",
            ]),
            [
                "http://h/org/",
                "https://h/org/",
                "https://h:8443/org/",
                "https://other/org/",
                "git@h:org/",
                "ssh://deploy@h/org/",
                "ssh://git@h/org/",
            ],
        );
        assert_eq!(prefixes(&["git@h:a.git", "git@h:b.git"]), ["git@h:"], "the scp-like host separator");
        // Nothing for what takes no credentials.
        assert!(prefixes(&["file:///srv/git/app.git", "git://h/app.git", "/srv/git/app.git"]).is_empty());
        // Each prefix covers every URL of its group.
        let urls = strings(&["https://h/o/a/x.git", "https://h/o/ab/y.git", "https://h/o/a/z/w.git"]);
        for group in groups(&urls) {
            assert_eq!(group.prefix, "https://h/o/");
            assert!(group.urls.iter().all(|u| u.starts_with(&group.prefix)), "{group:?}");
        }
    }

    fn tier(credentials: bool) -> Tier {
        let mut tier: Tier = serde_json::from_value(serde_json::json!({
            "apiVersion": "shopset.dev/v1alpha1", "kind": "Tier",
            "metadata": {"name": "tier-0", "namespace": "shops"},
            "spec": {"app": {"url": "https://g.example/acme/app.git", "path": "base"},
                     "system": {"url": "https://g.example/acme/system.git"},
                     "argocd": {"namespace": "argocd"}},
        }))
        .unwrap();
        if credentials {
            tier.spec.credentials = serde_json::from_value(serde_json::json!({"secretRef": {"name": "git"}})).unwrap();
        }
        tier
    }

    fn configuration(url: &str) -> Configuration {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "shopset.dev/v1alpha1", "kind": "Configuration",
            "metadata": {"name": "cfg", "namespace": "shops"},
            "spec": {"url": url, "path": "component"},
        }))
        .unwrap()
    }

    fn password() -> Auth {
        Auth { username: Some("shopset".into()), password: Some("s3cret-pw".into()), ..Auth::default() }
    }

    fn data(secret: &Secret) -> BTreeMap<String, String> {
        secret.data.iter().flatten().map(|(k, v)| (k.clone(), String::from_utf8(v.0.clone()).unwrap())).collect()
    }

    #[test]
    fn a_template_is_an_argo_cd_repo_creds_secret_of_the_tier_in_argo_cds_namespace() {
        let out = secrets(&tier(true), &[configuration("https://g.example/acme/config.git")], &password());
        assert_eq!(out.len(), 1, "{out:?}");
        let secret = &out[0];
        assert_eq!(secret.metadata.namespace.as_deref(), Some("argocd"));
        let name = secret.name_any();
        assert!(name.starts_with("shopset-shops-tier-0-") && name.len() == "shopset-shops-tier-0-".len() + 8, "{name}");
        assert_eq!(name, secret_name("shops", "tier-0", "https://g.example/acme/"), "deterministic");
        assert_eq!(
            secret.labels(),
            &BTreeMap::from([
                ("app.kubernetes.io/managed-by".to_string(), "shopset-controller".to_string()),
                ("argocd.argoproj.io/secret-type".into(), "repo-creds".into()),
                ("shopset.dev/tier".into(), "tier-0".into()),
                ("shopset.dev/tier-namespace".into(), "shops".into()),
            ])
        );
        assert_eq!(
            data(secret),
            BTreeMap::from([
                ("type".to_string(), "git".to_string()),
                ("url".into(), "https://g.example/acme/".into()),
                ("username".into(), "shopset".into()),
                ("password".into(), "s3cret-pw".into()),
            ])
        );
        assert!(secret.string_data.is_none(), "data only: server-side apply owns exactly what is stored");
        let yaml = to_yaml(&out).unwrap();
        assert!(yaml.starts_with("apiVersion: v1\nkind: Secret\n"), "{yaml}");
        assert!(yaml.contains("    argocd.argoproj.io/secret-type: repo-creds\n"), "{yaml}");
        let back: Secret = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(&back, secret);
    }

    #[test]
    fn one_template_per_host_and_only_the_credentials_that_fit_it() {
        let mut t = tier(true);
        t.spec.system.url = "https://g.example/acme/system.git".into();
        let cfgs = [configuration("ssh://git@other.example/acme/config.git")];
        let out = secrets(&t, &cfgs, &password());
        assert_eq!(out.len(), 1, "an SSH repository gets no template from a password: {out:?}");
        let key = Auth { ssh_key: Some("-----BEGIN OPENSSH PRIVATE KEY-----\nk\n".into()), ..password() };
        let out = secrets(&t, &cfgs, &key);
        assert_eq!(out.len(), 2, "{out:?}");
        let ssh = out.iter().map(data).find(|d| d["url"].starts_with("ssh://")).expect("an SSH template");
        assert_eq!(ssh["url"], "ssh://git@other.example/acme/");
        assert_eq!(ssh["sshPrivateKey"], "-----BEGIN OPENSSH PRIVATE KEY-----\nk\n");
        assert!(!ssh.contains_key("password") && !ssh.contains_key("username"), "{ssh:?}");
        let names: BTreeSet<String> = out.iter().map(|s| s.name_any()).collect();
        assert_eq!(names.len(), 2, "a name per template: {names:?}");
        let yaml = to_yaml(&out).unwrap();
        assert_eq!(yaml.matches("\n---\n").count(), 1, "{yaml}");
    }

    #[test]
    fn a_token_without_a_username_goes_as_user_git_as_the_controllers_own_git_sends_it() {
        let token = Auth { password: Some("ghp_token".into()), ..Auth::default() };
        let out = secrets(&tier(true), &[], &token);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!((data(&out[0])["username"].as_str(), data(&out[0])["password"].as_str()), ("git", "ghp_token"));
    }

    #[test]
    fn no_template_without_credentials_on_the_tier() {
        assert!(secrets(&tier(false), &[], &password()).is_empty(), "credentials not named by the Tier");
        assert!(secrets(&tier(true), &[], &Auth::default()).is_empty());
    }

    #[test]
    fn names_are_dns_subdomains_and_never_shared_by_two_tiers() {
        assert_ne!(secret_name("shops-tier", "0", "https://h/"), secret_name("shops", "tier-0", "https://h/"));
        assert_ne!(secret_name("shops", "tier-0", "https://h/a/"), secret_name("shops", "tier-0", "https://h/b/"));
        let long = secret_name(&"n".repeat(63), &"t".repeat(253), "https://h/");
        assert_eq!(long.len(), 253, "{long}");
        assert!(long.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'));
    }

    #[test]
    fn an_api_error_never_carries_a_credential() {
        let auth = password();
        let encoded = base64::engine::general_purpose::STANDARD.encode("s3cret-pw");
        let status = kube::core::Status::failure(
            &format!("Secret \"x\" is invalid: data[password]: s3cret-pw / {encoded}"),
            "Invalid",
        )
        .with_code(422);
        let err = RepoCredsError::of("apply", "argocd", "x", &auth, kube::Error::Api(Box::new(status)));
        let text = err.to_string();
        assert!(!text.contains("s3cret-pw") && !text.contains(&encoded), "{text}");
        let forbidden = kube::core::Status::failure("secrets is forbidden", "Forbidden").with_code(403);
        let err = RepoCredsError::of("list", "argocd", "", &auth, kube::Error::Api(Box::new(forbidden)));
        assert!(err.to_string().contains("deploy/argocd/repo-creds-rolebinding.yaml"), "{err}");
    }
}
