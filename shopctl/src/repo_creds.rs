//! `shopctl argocd-creds`: Argo CD's credential templates for a tier's repositories, printed as
//! the controller applies them (the same library function builds both), for installs where the
//! controller may not write Secrets in Argo CD's namespace or to see what it writes:
//!
//! ```sh
//! shopctl argocd-creds tier-0 -f manifests/ --credentials git-credentials.yaml | kubectl apply -f -
//! ```

use std::path::PathBuf;

use anyhow::{Result, anyhow};
use kube::ResourceExt;

use crate::{Cli, Output, auth, load};

#[derive(clap::Args, Debug)]
pub struct ArgoCdCredsArgs {
    /// The tier whose repositories the templates cover.
    tier: String,
    /// Manifest files or directories holding the Tier, its ShopSets and Configurations.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
}

pub fn argocd_creds(cli: &Cli, args: &ArgoCdCredsArgs) -> Result<()> {
    // The Secrets' names and labels carry the Tier's namespace: the manifest's, or --namespace.
    let inventory = load(cli, &args.files)?;
    let input = inventory.tier_input(&args.tier)?;
    let tier = input.tier.clone();
    let Some(creds) = &tier.spec.credentials else {
        eprintln!(
            "Tier {} names no credentials (spec.credentials): Argo CD reads its repositories without any",
            tier.name_any()
        );
        return Ok(());
    };
    let auth = auth(cli)?;
    if auth.password.is_none() && auth.ssh_key.is_none() {
        return Err(anyhow!(
            "Tier {} names Secret {:?} (spec.credentials.secretRef) but no credentials were given; fix: pass that Secret's manifest with --credentials FILE (or SHOPSET_CREDENTIALS), or set SHOPSET_GIT_USERNAME and SHOPSET_GIT_PASSWORD, or SHOPSET_GIT_SSH_KEY_FILE",
            tier.name_any(),
            creds.secret_ref.name
        ));
    }
    let secrets = shopset::repo_creds::secrets(&tier, &input.configurations, &auth);
    if secrets.is_empty() {
        return Err(anyhow!(
            "the credentials given fit none of Tier {}'s repositories ({}); fix: give username and password for http(s) URLs, identity for ssh URLs",
            tier.name_any(),
            shopset::repo_creds::urls(&tier, &input.configurations).join(", ")
        ));
    }
    match cli.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&secrets)?),
        Output::Text | Output::Yaml => print!("{}", shopset::repo_creds::to_yaml(&secrets)?),
    }
    Ok(())
}
