//! The git credentials a Tier names: a Secret of its own namespace, read as git credentials.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use shopset_core::api::Tier;
use shopset_git::gitops::Auth;

/// Why a Tier's credentials cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("Secret {namespace}/{name} named by spec.credentials.secretRef {detail}")]
    Unusable { namespace: String, name: String, detail: String },
    #[error("cannot read Secret {namespace}/{name} named by spec.credentials.secretRef: {detail}")]
    Unreadable { namespace: String, name: String, detail: String },
}

/// Credentials from a Secret (`data` and `stringData` merged, as the API server does).
pub fn from_secret(secret: &Secret) -> Result<Auth, String> {
    let mut data: BTreeMap<String, Vec<u8>> =
        secret.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect();
    data.extend(secret.string_data.iter().flatten().map(|(k, v)| (k.clone(), v.clone().into_bytes())));
    Auth::from_secret_data(&data)
}

/// The credentials of a Tier: none when it names no Secret.
pub async fn of_tier(tier: &Tier, client: &kube::Client) -> Result<Auth, CredentialsError> {
    let Some(creds) = &tier.spec.credentials else { return Ok(Auth::default()) };
    let namespace = tier.namespace().unwrap_or_else(|| "default".into());
    let name = creds.secret_ref.name.clone();
    let unusable =
        |detail: String| CredentialsError::Unusable { namespace: namespace.clone(), name: name.clone(), detail };
    let secret = match Api::<Secret>::namespaced(client.clone(), &namespace).get_opt(&name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => {
            return Err(unusable(format!(
                "does not exist; nothing is committed or pruned until it does; fix: create it in namespace \
                 {namespace} (keys username and password, or identity and known_hosts), or remove \
                 spec.credentials from the Tier"
            )));
        }
        Err(kube::Error::Api(s)) if s.code == 403 => {
            return Err(unusable(format!(
                "cannot be read: the controller may not read Secrets in namespace {namespace}; fix: kubectl apply -n {namespace} -f deploy/tenant/credentials-rolebinding.yaml"
            )));
        }
        Err(e) => {
            return Err(CredentialsError::Unreadable {
                namespace: namespace.clone(),
                name: name.clone(),
                detail: crate::error::api_message(&e),
            });
        }
    };
    from_secret(&secret).map_err(|detail| unusable(format!("is not usable: {detail}")))
}
