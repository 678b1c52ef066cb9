//! `cargo xtask up --gateways 2` end to end: the real binary starts a
//! 3-node NATS JetStream cluster and two gateways (and the store service)
//! that share one write queue on it; from outside, as a client and an
//! operator would, the store service is frozen and a PUT chain sent
//! through both gateways in turn is queued, readable from the other
//! gateway, and replayed in order.

mod common;

use std::{os::unix::fs::PermissionsExt, time::Duration};

use common::{Place, Stack};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_with_two_gateways_runs_them_on_one_jetstream_queue() {
    let place = Place::new();
    let port = || testkit::free_port().unwrap().to_string();
    let (store, gateway) = (port(), testkit::free_port().unwrap());
    let nats = [port(), port(), port()].join(",");
    let stack = Stack::up_services(
        &place,
        &[
            "--gateways",
            "2",
            "--store-port",
            &store,
            "--gateway-port",
            &gateway.to_string(),
            "--nats-ports",
            &nats,
        ],
    );

    // Both gateways are ready and reach the shared queue.
    let http = testkit::http_client().unwrap();
    for port in [gateway, gateway + 1] {
        let response = http
            .get(format!("http://127.0.0.1:{port}/ready"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "gateway on {port}");
        let ready: Value = response.json().await.unwrap();
        assert_eq!(ready["writeQueue"], true, "gateway on {port}: {ready}");
    }

    // One queue: the gateways' one stream, replicated on the three nodes.
    let config = std::fs::read_to_string(place.dir.join("gateway.toml")).unwrap();
    assert!(config.contains("queue_backend = \"jetstream\""), "{config}");
    let key = place.dir.join("gateway-queue.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the queue key is private");

    let out = place.run("status", &["--json"]);
    assert!(out.status.success());
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes = status["nats"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{status}");
    assert!(nodes.iter().all(|n| n["health"] == "healthy"), "{status}");
    let gateways: Vec<&Value> = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"].as_str().unwrap().starts_with("gateway"))
        .collect();
    assert_eq!(gateways.len(), 2, "{status}");
    assert!(gateways.iter().all(|g| g["writeQueue"] == true), "{status}");

    let topology: Value =
        serde_json::from_str(&std::fs::read_to_string(place.dir.join("topology.json")).unwrap())
            .unwrap();
    let monitor = topology["nats"][0]["monitor"].as_str().unwrap();
    let jsz: Value = get_json(&http, format!("{monitor}/jsz?streams=true&config=true")).await;
    let streams: Vec<&Value> = jsz["account_details"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten())
        .filter(|s| s["name"] == "GATEWAY_WRITES")
        .collect();
    assert_eq!(streams.len(), 1, "{jsz}");
    assert_eq!(streams[0]["config"]["num_replicas"], 3, "{jsz}");

    let token = {
        let out = place.run("token", &["--scope", "stores:read stores:write"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    the_fleet_shares_status_and_order(&http, [gateway, gateway + 1], &store, &token).await;

    stack.stop();
    assert!(
        place.dir.join("nats").join("n1").join("store").is_dir(),
        "NATS data is kept"
    );
}

/// The store service on `store_port` frozen (SIGSTOP) and both gateways'
/// breakers open: `If-Match` "1", "2", "3" through the two gateways in
/// turn, each 202 with its status readable from the other gateway; after
/// the thaw the chain ends at version 4 with every write completed 200.
async fn the_fleet_shares_status_and_order(
    http: &reqwest::Client,
    gateways: [u16; 2],
    store_port: &str,
    token: &str,
) {
    let url = |i: usize, path: &str| format!("http://127.0.0.1:{}{path}", gateways[i]);
    let created: Value = http
        .post(url(0, "/api/stores"))
        .bearer_auth(token)
        .json(&serde_json::json!({"name": "Fleet Chain"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let path = format!("/api/stores/{}", created["store"]["id"].as_str().unwrap());
    for i in 0..2 {
        let read = http
            .get(url(i, &path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), 200, "a good copy in gateway {i}");
    }

    let store_pid = pid_listening_on(store_port.parse().unwrap()).expect("store-service's pid");
    signal("STOP", store_pid);
    for i in 0..2 {
        // 12 reads at once time out together: the breaker (10 calls) opens.
        let mut reads = tokio::task::JoinSet::new();
        for _ in 0..12 {
            reads.spawn(http.get(url(i, &path)).bearer_auth(token).send());
        }
        while reads.join_next().await.is_some() {}
        testkit::eventually(
            "the gateway's breaker to open",
            Duration::from_secs(120),
            || {
                let read = http.get(url(i, &path)).bearer_auth(token).send();
                async move {
                    let body: Value = read.await.ok()?.json().await.ok()?;
                    (body["meta"]["staleReason"] == "circuit_open").then_some(())
                }
            },
        )
        .await
        .unwrap();
    }
    let mut queued = Vec::new();
    for version in 1..=3_usize {
        let via = (version - 1) % 2;
        let answer = http
            .put(url(via, &path))
            .bearer_auth(token)
            .header("if-match", format!("\"{version}\""))
            .json(&serde_json::json!({"name": format!("Fleet Chain v{}", version + 1)}))
            .send()
            .await
            .unwrap();
        let status = answer.status();
        let body: Value = answer.json().await.unwrap();
        assert_eq!(status, 202, "{body}");
        let id = body["requestId"].as_str().unwrap().to_owned();
        let other = url(1 - via, &format!("/api/requests/{id}"));
        let record = http.get(other).bearer_auth(token).send().await.unwrap();
        assert_eq!(record.status(), 200, "the other gateway knows {id}");
        queued.push(id);
    }
    signal("CONT", store_pid);
    for (k, id) in queued.iter().enumerate() {
        let status = url(k % 2, &format!("/api/requests/{id}"));
        let record =
            testkit::eventually("a queued write to finish", Duration::from_secs(120), || {
                let read = http.get(&status).bearer_auth(token).send();
                async move {
                    let record: Value = read.await.ok()?.json().await.ok()?;
                    matches!(record["status"].as_str(), Some("completed" | "failed"))
                        .then_some(record)
                }
            })
            .await
            .unwrap();
        assert_eq!(record["status"], "completed", "{record}");
        assert_eq!(record["response"]["status"], 200, "{record}");
    }
    let direct: Value = get_json(http, format!("http://127.0.0.1:{store_port}{path}")).await;
    assert_eq!(direct["store"]["version"], 4, "{direct}");
    assert_eq!(direct["store"]["name"], "Fleet Chain v4", "{direct}");
}

/// Sends SIG`name` to `pid` (`kill -STOP` / `kill -CONT`, as an operator
/// would).
fn signal(name: &str, pid: u32) {
    let status = std::process::Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

/// The process listening on TCP `port` (IPv4 or IPv6), from /proc: the
/// socket's inode in /proc/net/tcp{,6}, then the process holding it.
fn pid_listening_on(port: u16) -> Option<u32> {
    let hex = format!(":{port:04X}");
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .find_map(|table| {
            std::fs::read_to_string(table)
                .ok()?
                .lines()
                .skip(1)
                .find_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    // local_address, state 0A = LISTEN, inode.
                    (fields.get(1)?.ends_with(&hex) && *fields.get(3)? == "0A")
                        .then(|| fields.get(9).map(|i| (*i).to_owned()))
                        .flatten()
                })
        })?;
    let socket = format!("socket:[{inode}]");
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let holds = std::fs::read_dir(entry.path().join("fd"))
                .ok()?
                .flatten()
                .any(|fd| {
                    std::fs::read_link(fd.path()).is_ok_and(|l| l.to_str() == Some(socket.as_str()))
                });
            holds.then_some(pid)
        })
}

/// `GET url`: its JSON body.
async fn get_json(http: &reqwest::Client, url: impl reqwest::IntoUrl) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}
