//! Clusters and failure domains with the `shopset-controller` binary, a real control plane and a
//! git daemon: a ShopSet naming a destination its Tier does not list stalls the Tier with the
//! names it could be and nothing is written; named right, each Application points at its own
//! cluster; a ShopSet moved in the cluster moves its Application, and the commit says so; a
//! ShopSet in maintenance has its Application's automated sync off, and on again after.
//!
//! Needs `e2e/install-tools` and `cargo build --workspace --features shopset-controller/fault-injection`.

mod support;

use std::time::Duration;

use shopset_e2e::gitserver::{GitDaemon, ls_remote};
use support::*;

/// Tests of this file on the shared control plane.
const TESTS: usize = 1;

/// Two clusters in two zones: the one Argo CD runs in, and one Argo CD knows by name.
const DESTINATIONS: &str = "      server: https://kubernetes.default.svc
    destinations:
    - name: dc-a
      server: https://kubernetes.default.svc
      failureDomain: {zone: zone-a}
    - name: dc-b
      cluster: prod-b
      failureDomain: {zone: zone-b}
    syncPolicy:
      automated: {prune: true}
";

#[test]
fn a_shopset_on_an_unknown_destination_stalls_and_named_right_its_application_points_there() {
    let test = "fleet";
    let cp = Plane::shared(TESTS);
    let daemon = GitDaemon::start();
    let s = Setup::on_daemon(&cp, &daemon, "fleet", &TierOptions::default());
    let file = s.manifests.join("tier.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let text = replace_once(&text, "tier.yaml", "      server: https://kubernetes.default.svc\n", DESTINATIONS);
    let text = replace_once(
        &text,
        "tier.yaml",
        "  shops: [canary-eu-shop-1]\n",
        "  shops: [canary-eu-shop-1]\n  destination: dc-a\n",
    );
    let text = replace_once(
        &text,
        "tier.yaml",
        "  shops: [canary-us-shop-1]\n",
        "  shops: [canary-us-shop-1]\n  destination: dc-z\n",
    );
    std::fs::write(&file, text).unwrap();
    s.apply(&cp);
    let mut ctl = Controller::new(&cp, s.work.path(), &s.ns, "controller");
    ctl.start(&Run::new("fleet"));

    // The API server cannot see the Tier from a ShopSet; the controller does, and stalls.
    let (_, reason, message) = wait_until("Ready=False, InvalidSpec", Duration::from_secs(60), &ctl, || {
        let r = s.ready(&cp);
        (r.0 == "False" && r.1 == "InvalidSpec").then_some(r)
    });
    assert_eq!(reason, "InvalidSpec");
    assert!(
        message.contains(
            "ShopSet/canary-us: spec.destination: names no destination of its Tier (tier-0) (got \"dc-z\"); fix: set spec.destination to one of dc-a, dc-b"
        ),
        "{message}"
    );
    let stalled = s.jsonpath(&cp, "tier", TIER, r#"{.status.conditions[?(@.type=="Stalled")].status}"#);
    assert_eq!(stalled, "True", "only a change of the ShopSet helps");
    assert!(ls_remote(&s.system_url).is_empty(), "nothing written to the system repository");
    assert!(s.applications(&cp).is_empty(), "no Applications: {:?}", s.applications(&cp));
    phase(test, &format!("stalled: {message}"));

    // Named right: each Application points at its own cluster.
    let patch = |name: &str, to: &str| {
        let body = format!(r#"{{"spec":{{"destination":"{to}"}}}}"#);
        cp.kubectl_ok(["-n", &s.ns, "patch", "shopset", name, "--type", "merge", "-p", &body]);
    };
    patch("canary-us", "dc-b");
    let destination = |name: &str| {
        jsonpath(&cp, &s.argocd_ns, "application", name, "{.spec.destination.server}|{.spec.destination.name}")
    };
    wait_until("both Applications", Duration::from_secs(90), &ctl, || {
        (s.ready(&cp).0 == "True" && s.applications(&cp) == SHOPSETS).then_some(())
    });
    assert_eq!(destination("canary-eu"), "https://kubernetes.default.svc|");
    assert_eq!(destination("canary-us"), "|prod-b");
    phase(test, "each Application on its own destination");

    // A move in the cluster (what `shopctl shopset move --apply` writes) moves the Application.
    patch("canary-eu", "dc-b");
    wait_until("canary-eu on dc-b", Duration::from_secs(90), &ctl, || {
        (destination("canary-eu") == "|prod-b").then_some(())
    });
    let log = s.system_log();
    assert!(log.iter().any(|(_, subject)| subject.contains("shopsets moved from dc-a to dc-b: canary-eu")), "{log:?}");
    phase(test, "moved");

    // A whole ShopSet in maintenance: its Application's automated sync goes in the cluster, and
    // comes back after. The rendering drops a field there, which only an apply removes (an
    // Application is applied again when its rendering changed, not only when the cluster differs).
    let automated = |name: &str| jsonpath(&cp, &s.argocd_ns, "application", name, "{.spec.syncPolicy.automated}");
    assert!(!automated("canary-us").is_empty(), "automated sync on before");
    let maintenance = |value: &str| {
        let body = format!(r#"{{"spec":{{"maintenance":{value}}}}}"#);
        cp.kubectl_ok(["-n", &s.ns, "patch", "shopset", "canary-us", "--type", "merge", "-p", &body]);
    };
    maintenance(r#"{"reason":"database migration","since":"2026-12-01T08:00:00Z"}"#);
    wait_until("canary-us without automated sync", Duration::from_secs(90), &ctl, || {
        automated("canary-us").is_empty().then_some(())
    });
    assert!(!automated("canary-eu").is_empty(), "the other ShopSet keeps automated sync");
    maintenance("null");
    wait_until("canary-us with automated sync again", Duration::from_secs(90), &ctl, || {
        (!automated("canary-us").is_empty()).then_some(())
    });
    phase(test, "maintenance turned automated sync off and on");
    ctl.stop();
}
