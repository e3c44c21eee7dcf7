//! Clusters and failure domains: `shopctl shopset move` edits one line of the reviewed manifest
//! (comments kept), refuses an unknown destination with the names it could be and writes nothing,
//! applies to a real API server with `--apply`; the sync that follows points the Application at
//! the new cluster and its commit says the ShopSet moved.

mod common;

use common::{Fixture, example_manifest};
use shopset_e2e::controlplane::ControlPlane;
use shopset_e2e::tools::repo_root;

/// tier-1 over three clusters in three zones: by API server URL, or by Argo CD cluster name.
pub const DESTINATIONS: &str = "    destinations:
    - name: dc-a
      server: https://kubernetes.default.svc
      failureDomain: {cloud: aws, zone: eu-west-1a}
    - name: dc-b
      server: https://10.20.0.1:6443
      failureDomain: {cloud: aws, zone: eu-west-1b}
    - name: dc-c
      cluster: prod-c
      failureDomain: {cloud: gcp, zone: us-east1-b}
    syncPolicy:
";

/// The example manifests with tier-1's destinations, both its ShopSets on dc-a, and a comment.
fn fleet() -> Fixture {
    let f = Fixture::daemon();
    f.write_manifest("tier-1.yaml", &example_manifest("tier-1.yaml").replacen("    syncPolicy:\n", DESTINATIONS, 1));
    let shopsets = example_manifest("shopsets.yaml")
        .replacen(
            "  name: eu-west\nspec:\n  tier: tier-1\n",
            "  name: eu-west\nspec:\n  tier: tier-1\n  destination: dc-a # first cluster\n",
            1,
        )
        .replacen(
            "  name: us-east\nspec:\n  tier: tier-1\n",
            "  name: us-east\nspec:\n  tier: tier-1\n  destination: dc-a\n",
            1,
        );
    f.write_manifest("shopsets.yaml", &shopsets);
    f
}

fn read(f: &Fixture, file: &str) -> String {
    std::fs::read_to_string(f.manifests().join(file)).unwrap()
}

#[test]
fn move_edits_one_line_and_the_next_sync_says_the_shopset_moved() {
    let f = fleet();
    let m = f.manifests().to_str().unwrap().to_string();
    f.sync_ok(&[]);
    let app = f.system_git(&["show", "tier-1:applications/eu-west.yaml"]);
    assert!(app.contains("    server: \"https://kubernetes.default.svc\"\n"), "{app}");
    assert!(app.contains("    shopset.dev/destination: \"dc-a\"\n"), "{app}");
    let before = read(&f, "shopsets.yaml");

    // A dry run shows the one-line change and writes nothing.
    let run = f.shopctl(&["shopset", "move", "eu-west", "--to", "dc-b", "-f", &m, "--dry-run"]).success();
    assert!(run.stdout.contains("ShopSet eu-west would move from dc-a to dc-b (server https://10.20.0.1:6443, failure domain cloud=aws,zone=eu-west-1b)"), "{run}");
    assert!(run.stdout.contains("-  destination: dc-a # first cluster"), "{run}");
    assert!(run.stdout.contains("+  destination: dc-b # first cluster"), "{run}");
    assert_eq!(read(&f, "shopsets.yaml"), before);

    // An unknown destination: exit 2, the names it could be, nothing written.
    let run = f.shopctl(&["shopset", "move", "eu-west", "--to", "dc-z", "-f", &m]).failure(2);
    assert!(
        run.stderr.contains("ShopSet/eu-west: spec.destination: names no destination of its Tier (tier-1) (got \"dc-z\"); fix: set spec.destination to one of dc-a, dc-b, dc-c"),
        "{run}"
    );
    assert_eq!(read(&f, "shopsets.yaml"), before);

    // The move: that line alone changes, the comment stays.
    let run = f.shopctl(&["shopset", "move", "eu-west", "--to", "dc-b", "-f", &m]).success();
    assert!(run.stdout.contains("ShopSet eu-west moves from dc-a to dc-b"), "{run}");
    assert!(run.stdout.contains("commit it for review"), "{run}");
    assert_eq!(read(&f, "shopsets.yaml"), before.replacen("destination: dc-a # first", "destination: dc-b # first", 1));
    // Again: nothing to do.
    let run = f.shopctl(&["shopset", "move", "eu-west", "--to", "dc-b", "-f", &m]).success();
    assert!(run.stdout.contains("ShopSet eu-west unchanged: already on dc-b"), "{run}");

    // The sync that follows points the Application there and says so in its commit.
    f.sync_ok(&["--tier", "tier-1"]);
    let app = f.system_git(&["show", "tier-1:applications/eu-west.yaml"]);
    assert!(app.contains("    server: \"https://10.20.0.1:6443\"\n"), "{app}");
    let message = f.system_git(&["log", "-1", "--format=%B", "tier-1"]);
    assert!(message.starts_with("tier-1: shopsets moved from dc-a to dc-b: eu-west"), "{message}");
    assert!(message.contains("\nshopsets moved from dc-a to dc-b: eu-west\n"), "{message}");

    // To a cluster Argo CD knows by name: destination.name.
    f.shopctl(&["shopset", "move", "us-east", "--to", "dc-c", "-f", &m]).success();
    f.sync_ok(&["--tier", "tier-1"]);
    let app = f.system_git(&["show", "tier-1:applications/us-east.yaml"]);
    assert!(app.contains("  destination:\n    name: \"prod-c\"\n    namespace: \"shops-us-east\"\n"), "{app}");
    let message = f.system_git(&["log", "-1", "--format=%B", "tier-1"]);
    assert!(message.contains("shopsets moved from dc-a to dc-c: us-east"), "{message}");
}

#[test]
fn a_tier_without_destinations_refuses_a_move() {
    let f = Fixture::daemon();
    let m = f.manifests().to_str().unwrap().to_string();
    let before = read(&f, "shopsets.yaml");
    let run = f.shopctl(&["shopset", "move", "eu-west", "--to", "dc-b", "-f", &m]).failure(2);
    assert!(run.stderr.contains("ShopSet/eu-west: spec.destination: names a destination, but its Tier lists none in spec.argocd.destinations (got \"dc-b\"); fix: add that destination to Tier tier-1's spec.argocd.destinations"), "{run}");
    assert_eq!(read(&f, "shopsets.yaml"), before);
}

/// `--apply` writes the move to a real API server by server-side apply, taking spec.destination
/// over from `kubectl`, which applied the ShopSet first.
#[test]
fn move_apply_writes_the_shopset_to_the_api_server() {
    let f = fleet();
    let m = f.manifests().to_str().unwrap().to_string();
    let cp = ControlPlane::start();
    cp.kubectl_ok(["apply", "--server-side", "-k", repo_root().join("deploy/crds").to_str().unwrap()]);
    cp.kubectl_ok(["wait", "--for=condition=Established", "crd/shopsets.shopset.dev", "crd/tiers.shopset.dev"]);
    cp.kubectl_ok(["create", "namespace", "shops"]);
    cp.kubectl_ok(["apply", "--server-side", "-n", "shops", "-f", &m]);
    let kubeconfig = cp.kubeconfig().to_str().unwrap().to_string();
    let run = f
        .shopctl_env(
            &["shopset", "move", "eu-west", "--to", "dc-c", "-f", &m, "-n", "shops", "--apply"],
            &[("KUBECONFIG", kubeconfig.as_str())],
        )
        .success();
    assert!(run.stdout.contains("applied to the cluster (server-side apply, field manager shopctl)"), "{run}");
    let stored = cp.kubectl_ok(["get", "shopset", "eu-west", "-n", "shops", "-o", "jsonpath={.spec.destination}"]);
    assert_eq!(stored, "dc-c");
    // The edited file applied again by its usual manager agrees with the cluster: no conflict.
    cp.kubectl_ok(["apply", "--server-side", "-n", "shops", "-f", &m]);
    // The API server's CEL refuses a destination with neither server nor cluster, as shopctl does.
    let tier = read(&f, "tier-1.yaml").replacen("      cluster: prod-c\n", "", 1);
    let out = cp.kubectl_with_stdin(["apply", "--server-side", "-n", "shops", "-f", "-"], &tier);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the API server accepted a destination without a target");
    assert!(
        stderr.contains(&format!(
            "spec.argocd.destinations[2]: Invalid value: \"object\": {}",
            shopset::rules::DESTINATION_TARGET
        )),
        "{stderr}"
    );
}

/// `doctor` finds a tier whose ShopSets all share one failure domain (without a cluster: it reads
/// the manifests only), and its fix, run as written, clears it.
#[test]
fn doctor_finds_a_tier_in_one_failure_domain_and_its_fix_clears_it() {
    let f = fleet();
    let m = f.manifests().to_str().unwrap().to_string();
    f.sync_ok(&[]);
    let no_cluster = [("KUBECONFIG", "/nonexistent/kubeconfig")];
    let run = f.shopctl_env(&["doctor", "tier-1", "-f", &m], &no_cluster).failure(3);
    assert!(
        run.stdout.contains(
            "all 2 ShopSets of tier tier-1 run in one failure domain (cloud=aws,zone=eu-west-1a): eu-west, us-east"
        ),
        "{run}"
    );
    assert!(run.stdout.contains("not checked: destination-cluster: no cluster"), "{run}");
    let fix = format!("shopctl shopset move us-east --to dc-b -f {m}");
    assert!(run.stdout.contains(&fix), "{run}");
    // tier-0 lists no destinations: one cluster is no finding there.
    f.shopctl_env(&["doctor", "tier-0", "-f", &m], &no_cluster).success();

    let args: Vec<&str> = fix.split(' ').skip(1).collect();
    f.shopctl(&args).success();
    f.sync_ok(&["--tier", "tier-1"]);
    let run = f.shopctl_env(&["doctor", "tier-1", "-f", &m], &no_cluster).success();
    assert!(run.stdout.contains("failure-domain"), "the analyzer ran: {run}");
}

/// `doctor` finds a destination that no Argo CD cluster Secret names, in a real API server, by
/// `server` and by cluster `name`; the in-cluster default needs none; real Secrets clear it.
#[test]
fn doctor_finds_destinations_without_an_argocd_cluster_secret() {
    let f = fleet();
    let m = f.manifests().to_str().unwrap().to_string();
    f.sync_ok(&[]);
    let cp = ControlPlane::start();
    cp.kubectl_ok(["create", "namespace", "argocd"]);
    let kubeconfig = cp.kubeconfig().to_str().unwrap().to_string();
    let env = [("KUBECONFIG", kubeconfig.as_str())];
    let doctor = || f.shopctl_env(&["doctor", "tier-1", "-f", &m], &env);
    let problems = |out: &str| -> Vec<String> {
        out.lines().filter(|l| l.contains("Problem: destination ")).map(|l| l.trim().to_string()).collect()
    };

    let run = doctor();
    let found = problems(&run.stdout);
    assert_eq!(found.len(), 2, "dc-b and dc-c, not the in-cluster dc-a: {run}");
    assert!(found[0].contains("destination dc-b (server https://10.20.0.1:6443) of tier tier-1: no Argo CD cluster Secret in namespace argocd names it (used by no ShopSet yet)"), "{run}");
    assert!(found[1].contains("destination dc-c (cluster prod-c)"), "{run}");
    assert!(
        run.stdout.contains("kubectl -n argocd label secret cluster-dc-b argocd.argoproj.io/secret-type=cluster"),
        "{run}"
    );

    // A Secret of another type names dc-b: not a cluster Secret, still a finding.
    cp.kubectl_ok([
        "-n",
        "argocd",
        "create",
        "secret",
        "generic",
        "not-a-cluster",
        "--from-literal=server=https://10.20.0.1:6443",
    ]);
    assert_eq!(problems(&doctor().stdout).len(), 2);
    // Real cluster Secrets, one by server, one by name.
    for (secret, name, server) in
        [("cluster-dc-b", "dc-b", "https://10.20.0.1:6443"), ("cluster-prod-c", "prod-c", "https://10.30.0.1:6443")]
    {
        cp.kubectl_ok([
            "-n",
            "argocd",
            "create",
            "secret",
            "generic",
            secret,
            &format!("--from-literal=name={name}"),
            &format!("--from-literal=server={server}"),
            "--from-literal=config={}",
        ]);
        cp.kubectl_ok(["-n", "argocd", "label", "secret", secret, "argocd.argoproj.io/secret-type=cluster"]);
    }
    let run = doctor();
    assert!(problems(&run.stdout).is_empty(), "{run}");
    assert!(run.stdout.contains("destination-cluster"), "the analyzer ran: {run}");
}

/// `status` shows where the cells run: by failure domain, then destination, empty ones too.
#[test]
fn status_groups_shopsets_by_failure_domain_and_destination() {
    let f = fleet();
    let m = f.manifests().to_str().unwrap().to_string();
    f.shopctl(&["shopset", "move", "us-east", "--to", "dc-c", "-f", &m]).success();
    f.sync_ok(&[]);
    let no_cluster = [("KUBECONFIG", "/nonexistent/kubeconfig")];
    let run = f.shopctl_env(&["status", "tier-1", "-f", &m], &no_cluster).success();
    assert!(
        run.stdout.contains(
            "  failure domain cloud=aws,zone=eu-west-1a
    dc-a (server https://kubernetes.default.svc): 1 ShopSet: eu-west
  failure domain cloud=aws,zone=eu-west-1b
    dc-b (server https://10.20.0.1:6443): no ShopSet
  failure domain cloud=gcp,zone=us-east1-b
    dc-c (cluster prod-c): 1 ShopSet: us-east
"
        ),
        "{run}"
    );
    let json = f.shopctl_env(&["status", "tier-1", "-f", &m, "-o", "json"], &no_cluster).success();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(
        v[0]["placement"][2],
        serde_json::json!({"failureDomain": "cloud=gcp,zone=us-east1-b", "destination": "dc-c", "target": "cluster prod-c", "shopsets": ["us-east"]})
    );
    // A tier without destinations: its one cluster.
    let run = f.shopctl_env(&["status", "tier-0", "-f", &m], &no_cluster).success();
    assert!(
        run.stdout.contains(
            "  failure domain -\n    spec.argocd.destination (server https://kubernetes.default.svc): 2 ShopSets: canary-eu, canary-us\n"
        ),
        "{run}"
    );
}
