//! GitHub push webhooks: signature check and which repository and branch moved.

use hmac::{KeyInit, Mac};
use serde_json::Value;
use shopset_core::repository::normalize_url;

/// Largest request body accepted (GitHub caps payloads at 25 MB; pushes are far smaller).
pub const MAX_BODY: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    #[error("missing X-Hub-Signature-256 header")]
    MissingSignature,
    #[error("signature does not match")]
    BadSignature,
    #[error("body is not a push event: {0}")]
    NotAPush(String),
}

/// Checks `X-Hub-Signature-256: sha256=<hex>` over the raw body, in constant time.
pub fn verify_signature(secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), WebhookError> {
    let header = header.ok_or(WebhookError::MissingSignature)?;
    let hex = header.strip_prefix("sha256=").ok_or(WebhookError::BadSignature)?;
    let expected = decode_hex(hex).ok_or(WebhookError::BadSignature)?;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).map_err(|_| WebhookError::BadSignature)?;
    mac.update(body);
    mac.verify_slice(&expected).map_err(|_| WebhookError::BadSignature)
}

/// The signature header value GitHub would send for `body` (for tests and clients).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    format!("sha256={}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// A push: the branch that moved and every URL the repository is known by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    pub branch: String,
    pub urls: Vec<String>,
}

/// Parses a GitHub push event body.
pub fn parse_push(body: &[u8]) -> Result<Push, WebhookError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| WebhookError::NotAPush(e.to_string()))?;
    let git_ref = v.get("ref").and_then(Value::as_str).ok_or_else(|| WebhookError::NotAPush("no `ref`".into()))?;
    let branch = git_ref
        .strip_prefix("refs/heads/")
        .ok_or_else(|| WebhookError::NotAPush(format!("{git_ref} is not a branch")))?
        .to_string();
    Ok(Push { branch, urls: repository_urls(&v)? })
}

/// Parses a GitHub `pull_request_review` event body as the push it stands for: a review of a
/// promotion pull request concerns the tier whose branch is its base (the one it merges into),
/// so the controller counts the approvals at once instead of at the tier's next look.
pub fn parse_review(body: &[u8]) -> Result<Push, WebhookError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| WebhookError::NotAPush(e.to_string()))?;
    let branch = v
        .pointer("/pull_request/base/ref")
        .and_then(Value::as_str)
        .ok_or_else(|| WebhookError::NotAPush("a review without `pull_request.base.ref`".into()))?
        .to_string();
    Ok(Push { branch, urls: repository_urls(&v)? })
}

/// Every URL of an event's `repository`.
fn repository_urls(v: &Value) -> Result<Vec<String>, WebhookError> {
    let repo = v.get("repository").ok_or_else(|| WebhookError::NotAPush("no `repository`".into()))?;
    let urls: Vec<String> = ["clone_url", "ssh_url", "git_url", "html_url", "url", "svn_url"]
        .iter()
        .filter_map(|k| repo.get(*k).and_then(Value::as_str).map(str::to_string))
        .collect();
    if urls.is_empty() {
        return Err(WebhookError::NotAPush("the repository has no URL".into()));
    }
    Ok(urls)
}

/// Whether a push moved `branch` of the repository at `url`.
pub fn matches(push: &Push, url: &str, branch: &str) -> bool {
    let want = normalize_url(url);
    push.branch == branch && push.urls.iter().any(|u| normalize_url(u) == want)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_tampering_is_refused() {
        let body = br#"{"ref":"refs/heads/tier-0"}"#;
        let sig = sign(b"s3cret", body);
        assert_eq!(verify_signature(b"s3cret", body, Some(&sig)), Ok(()));
        assert_eq!(verify_signature(b"other", body, Some(&sig)), Err(WebhookError::BadSignature));
        assert_eq!(verify_signature(b"s3cret", b"{}", Some(&sig)), Err(WebhookError::BadSignature));
        assert_eq!(verify_signature(b"s3cret", body, None), Err(WebhookError::MissingSignature));
        assert_eq!(verify_signature(b"s3cret", body, Some("sha1=00")), Err(WebhookError::BadSignature));
        assert_eq!(verify_signature(b"s3cret", body, Some("sha256=zz")), Err(WebhookError::BadSignature));
    }

    #[test]
    fn url_forms_of_one_repository_match() {
        let push = Push { branch: "tier-0".into(), urls: vec!["https://github.com/Acme/shop.git".into()] };
        assert!(matches(&push, "git@github.com:Acme/shop.git", "tier-0"));
        assert!(matches(&push, "ssh://git@GitHub.com/Acme/shop", "tier-0"));
        assert!(!matches(&push, "https://github.com/Acme/shop", "tier-1"));
        assert!(!matches(&push, "https://github.com/Acme/other", "tier-0"));
    }

    #[test]
    fn push_events_parse() {
        let body =
            br#"{"ref":"refs/heads/tier-0","repository":{"clone_url":"https://h/a.git","ssh_url":"git@h:a.git"}}"#;
        let push = parse_push(body).unwrap();
        assert_eq!(push.branch, "tier-0");
        assert_eq!(push.urls.len(), 2);
        assert!(parse_push(br#"{"ref":"refs/tags/v1","repository":{"url":"x"}}"#).is_err());
        // A review of a promotion pull request stands for its base branch.
        let review = br#"{"action":"submitted","review":{"state":"approved"},"pull_request":{"number":7,"head":{"ref":"tier-0"},"base":{"ref":"tier-1"}},"repository":{"clone_url":"https://github.com/acme/shop-app.git"}}"#;
        let push = parse_review(review).unwrap();
        assert_eq!(push.branch, "tier-1");
        assert!(matches(&push, "git@github.com:acme/shop-app.git", "tier-1"));
        assert!(parse_review(br#"{"action":"submitted","repository":{"url":"x"}}"#).is_err());
        assert!(parse_push(b"not json").is_err());
    }
}
