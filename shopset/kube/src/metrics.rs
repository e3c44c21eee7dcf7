//! Prometheus metrics of the controller.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierLabels {
    pub namespace: String,
    pub tier: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PromotionLabels {
    pub namespace: String,
    pub tier: String,
    /// `promoted` or `failed`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub tier: String,
    pub reason: String,
}

/// Every metric, registered once.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<TierLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub duration: Family<TierLabels, Histogram>,
    pub pushes: Family<TierLabels, Counter>,
    pub syncs: Family<TierLabels, Counter>,
    pub in_flight: Family<TierLabels, Gauge>,
    pub in_flight_max: Family<TierLabels, Gauge>,
    pub last_sync: Family<TierLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub last_sync_age: Family<TierLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub webhooks: Counter,
    pub webhooks_refused: Counter,
    pub auto_promotions: Family<PromotionLabels, Counter>,
    last: Mutex<HashMap<TierLabels, SystemTime>>,
    /// Reconciles of each tier running now, and the most ever at once: kept under one lock so
    /// the maximum cannot miss a moment when two ran.
    running: Mutex<HashMap<TierLabels, (i64, i64)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("shopset");
        let reconciles = Family::<TierLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Family::<TierLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.01, 2.0, 14))
        });
        let pushes = Family::<TierLabels, Counter>::default();
        let syncs = Family::<TierLabels, Counter>::default();
        let in_flight = Family::<TierLabels, Gauge>::default();
        let in_flight_max = Family::<TierLabels, Gauge>::default();
        let last_sync = Family::default();
        let last_sync_age = Family::default();
        let webhooks = Counter::default();
        let webhooks_refused = Counter::default();
        let auto_promotions = Family::<PromotionLabels, Counter>::default();
        registry.register("reconciles", "Reconciles of a Tier", reconciles.clone());
        registry.register("reconcile_errors", "Failed reconciles, by reason", errors.clone());
        registry.register("reconcile_duration_seconds", "Time a reconcile took", duration.clone());
        registry.register("pushes", "Commits pushed to a system branch", pushes.clone());
        registry.register(
            "syncs",
            "Syncs of a Tier that rendered and compared its tree (not the poll's nothing-moved path)",
            syncs.clone(),
        );
        registry.register("reconciles_in_flight", "Reconciles of a Tier running now", in_flight.clone());
        registry.register(
            "reconciles_in_flight_max",
            "Most reconciles of a Tier running at once since the start (1: never twice at once)",
            in_flight_max.clone(),
        );
        registry.register(
            "last_sync_timestamp_seconds",
            "When a Tier last synced successfully (Unix time)",
            last_sync.clone(),
        );
        registry.register(
            "last_sync_age_seconds",
            "Seconds since a Tier last synced successfully",
            last_sync_age.clone(),
        );
        registry.register("webhook_deliveries", "Webhook deliveries accepted", webhooks.clone());
        registry.register(
            "webhook_refused",
            "Webhook deliveries refused (bad signature or body)",
            webhooks_refused.clone(),
        );
        registry.register(
            "auto_promotions",
            "Automatic promotions into a Tier (spec.promotion.auto), by result: promoted or failed",
            auto_promotions.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            duration,
            pushes,
            syncs,
            in_flight,
            in_flight_max,
            last_sync,
            last_sync_age,
            webhooks,
            webhooks_refused,
            auto_promotions,
            last: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
        }
    }
}

impl Metrics {
    pub fn reconciled(&self, labels: &TierLabels, took: Duration) {
        self.reconciles.get_or_create(labels).inc();
        self.duration.get_or_create(labels).observe(took.as_secs_f64());
    }

    /// Counts a reconcile of the tier as running until the returned guard drops.
    pub fn running(&self, labels: &TierLabels) -> Running<'_> {
        self.step(labels, 1);
        Running { metrics: self, labels: labels.clone() }
    }

    fn step(&self, labels: &TierLabels, by: i64) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let (now, max) = running.entry(labels.clone()).or_insert((0, 0));
        *now += by;
        *max = (*max).max(*now);
        self.in_flight.get_or_create(labels).set(*now);
        self.in_flight_max.get_or_create(labels).set(*max);
    }

    pub fn failed(&self, tier: &str, reason: &str) {
        self.errors.get_or_create(&ErrorLabels { tier: tier.into(), reason: reason.into() }).inc();
    }

    /// Counts an automatic promotion into `tier` that was done (`promoted`) or `failed`.
    pub fn promoted(&self, namespace: &str, tier: &str, result: &str) {
        let labels = PromotionLabels { namespace: namespace.into(), tier: tier.into(), result: result.into() };
        self.auto_promotions.get_or_create(&labels).inc();
    }

    pub fn synced(&self, labels: &TierLabels) {
        let now = SystemTime::now();
        self.last_sync.get_or_create(labels).set(now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64());
        self.last.lock().unwrap_or_else(|p| p.into_inner()).insert(labels.clone(), now);
    }

    /// The text exposition, with ages brought up to date.
    pub fn encode(&self) -> String {
        let now = SystemTime::now();
        for (labels, at) in self.last.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            self.last_sync_age.get_or_create(labels).set(now.duration_since(*at).unwrap_or_default().as_secs_f64());
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("encoding into a String");
        out
    }
}

/// A reconcile of a tier counted as running (see [`Metrics::running`]).
pub struct Running<'a> {
    metrics: &'a Metrics,
    labels: TierLabels,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.metrics.step(&self.labels, -1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_reconciles_of_a_tier_at_once_is_kept_after_they_end() {
        let m = Metrics::default();
        let (a, b) = (
            TierLabels { namespace: "ns".into(), tier: "tier-0".into() },
            TierLabels { namespace: "ns".into(), tier: "tier-1".into() },
        );
        drop(m.running(&a));
        let one = m.running(&a);
        let other = m.running(&b);
        assert_eq!((m.in_flight.get_or_create(&a).get(), m.in_flight_max.get_or_create(&a).get()), (1, 1));
        let two = m.running(&a);
        assert_eq!(m.in_flight_max.get_or_create(&a).get(), 2, "two of tier-0 at once");
        drop((one, two, other));
        assert_eq!(m.in_flight.get_or_create(&a).get(), 0);
        assert_eq!(m.in_flight_max.get_or_create(&a).get(), 2, "the maximum stays");
        assert_eq!(m.in_flight_max.get_or_create(&b).get(), 1, "tiers counted apart");
        assert!(m.encode().contains("shopset_reconciles_in_flight_max{namespace=\"ns\",tier=\"tier-0\"} 2"));
    }
}
