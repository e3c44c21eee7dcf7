//! Every connection a sync opens goes through ShopSet's socket stream, with TCP_NODELAY set.
//!
//! Alone in its test binary (so in its own process): the stream's counters are process-wide, and
//! no other test may open connections meanwhile. A TCP proxy in front of a real `git daemon`
//! counts what the server side accepted; the stream must have opened exactly as many.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use shopset::gitops::{Auth, GitCache, connections, connections_with_nagle};
use shopset::manifests::Inventory;
use shopset::render::Renderer;
use shopset::sync::{SyncOptions, sync_tier};
use shopset_e2e::gitserver::{GitDaemon, seed_dir};
use shopset_e2e::tools::repo_root;

/// Forwards every connection to `target` and counts them.
fn counting_proxy(target: u16) -> (u16, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicU64::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().map_while(Result::ok) {
            count.fetch_add(1, Ordering::SeqCst);
            let server = TcpStream::connect(("127.0.0.1", target)).expect("connect to git daemon");
            let pipe = |mut from: TcpStream, mut to: TcpStream| {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(Shutdown::Write);
                });
            };
            pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
            pipe(server, client);
        }
    });
    (port, accepted)
}

#[test]
fn every_git_connection_goes_through_the_stream_without_nagle() {
    let daemon = GitDaemon::start();
    let (app, config, system) = (daemon.create_repo("app"), daemon.create_repo("config"), daemon.create_repo("system"));
    let examples = repo_root().join("examples");
    seed_dir(&app, "main", &examples.join("app"), "Shop application base");
    seed_dir(&config, "main", &examples.join("config"), "Shared shop configuration");
    let (proxy, accepted) = counting_proxy(daemon.port());
    let via_proxy = |url: &str| url.replace(&format!(":{}/", daemon.port()), &format!(":{proxy}/"));

    let work = tempfile::tempdir().unwrap();
    let mut inventory = Inventory::default();
    for name in ["configuration.yaml", "shopsets.yaml", "tier-0.yaml"] {
        let text = std::fs::read_to_string(examples.join(name)).unwrap();
        let text = shopset::quickstart::with_urls(&text, |local| match local {
            "app.git" => via_proxy(&app),
            "config.git" => via_proxy(&config),
            _ => via_proxy(&system),
        });
        let mut problems = Vec::new();
        inventory.add_yaml(&work.path().join(name), &text, &mut problems).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
    }
    let input = inventory.tier_input("tier-0").unwrap();

    let (opened_before, nagle_before) = (connections(), connections_with_nagle());
    let cache = GitCache::new(work.path().join("cache"));
    let report = sync_tier(&cache, &Auth::default(), &input, &Renderer::embedded().unwrap(), &SyncOptions::default())
        .expect("sync through the proxy");
    assert!(report.commit.is_some(), "the first sync pushes a commit");

    let opened = connections() - opened_before;
    // ls-remotes, fetches, branch creations and the push: several connections, all through the stream.
    assert!(opened >= 4, "only {opened} connections: did the sync talk to the servers at all?");
    // The kernel completes a connection before the proxy's accept() returns: give it a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while accepted.load(Ordering::SeqCst) < opened && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), opened, "connections the server side accepted vs. the stream opened");
    assert_eq!(connections_with_nagle() - nagle_before, 0, "a connection kept Nagle's algorithm on");
}
