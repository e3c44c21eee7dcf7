//! Leader election on a `coordination.k8s.io/v1` Lease: one writer per system repository.
//!
//! Optimistic concurrency (resourceVersion) makes acquisition atomic: of two replicas racing for
//! an expired Lease, the API server lets exactly one replace it.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};

/// A Lease held (or wanted) by one identity.
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl LeaseLock {
    pub fn new(api: Api<Lease>, name: impl Into<String>, identity: impl Into<String>, duration: Duration) -> Self {
        Self { api, name: name.into(), identity: identity.into(), duration }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// Takes or renews the Lease; `Ok(true)` when this identity holds it afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let spec = |transitions: i32, acquired: Option<MicroTime>| LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs().max(1) as i32),
            acquire_time: acquired.or(Some(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        };
        match self.api.get_opt(&self.name).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                    spec: Some(spec(0, None)),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Some(mut lease) => {
                let current = lease.spec.clone().unwrap_or_default();
                let holder = current.holder_identity.clone().unwrap_or_default();
                let transitions = current.lease_transitions.unwrap_or(0);
                let new_spec = if holder == self.identity {
                    spec(transitions, current.acquire_time.clone())
                } else {
                    let renewed = current.renew_time.as_ref().map(|t| t.0).unwrap_or(Timestamp::UNIX_EPOCH);
                    let ttl = Duration::from_secs(current.lease_duration_seconds.unwrap_or(15).max(1) as u64);
                    let expired =
                        holder.is_empty() || now.duration_since(renewed).unsigned_abs() > ttl && renewed < now;
                    if !expired {
                        return Ok(false);
                    }
                    if holder.is_empty() {
                        tracing::info!("acquiring the released lease");
                    } else {
                        tracing::info!(previous = %holder, "taking over the expired lease");
                    }
                    spec(transitions + 1, None)
                };
                lease.spec = Some(new_spec);
                // resourceVersion from the read makes this a compare-and-swap.
                match self.api.replace(&self.name, &PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Gives the Lease up (on shutdown), so another replica takes over at once.
    pub async fn release(&self) -> Result<(), kube::Error> {
        if let Some(mut lease) = self.api.get_opt(&self.name).await? {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() == Some(&self.identity) {
                spec.holder_identity = None;
                spec.renew_time = None;
                match self.api.replace(&self.name, &PostParams::default(), &lease).await {
                    Ok(_) | Err(kube::Error::Api(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}
