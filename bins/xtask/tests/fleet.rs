//! `cargo xtask up --gateways 2` end to end: the real binary starts a
//! 3-node NATS JetStream cluster and two gateways (and the store service)
//! that share one write queue on it.

mod common;

use std::os::unix::fs::PermissionsExt;

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
    let jsz: Value = http
        .get(format!("{monitor}/jsz?streams=true&config=true"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let streams: Vec<&Value> = jsz["account_details"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten())
        .filter(|s| s["name"] == "GATEWAY_WRITES")
        .collect();
    assert_eq!(streams.len(), 1, "{jsz}");
    assert_eq!(streams[0]["config"]["num_replicas"], 3, "{jsz}");

    stack.stop();
    assert!(
        place.dir.join("nats").join("n1").join("store").is_dir(),
        "NATS data is kept"
    );
}
