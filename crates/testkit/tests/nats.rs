//! testkit's NATS cluster against real `nats-server` processes: the meta
//! group forms, a killed leader is replaced, a restarted node rejoins, a
//! frozen node stops answering and answers again once thawed.
//!
//! A missing `nats-server` fails these tests with its install command.

use std::time::Duration;

use testkit::{NatsCluster, eventually};

/// How long the meta group may take to elect a new leader or to count a
/// node as current again (an election takes a few seconds).
const WITHIN: Duration = Duration::from_secs(30);

/// The leader's view, once a leader is agreed.
async fn leader_view(cluster: &NatsCluster) -> (usize, testkit::MetaCluster) {
    let leader = eventually("an agreed meta leader", WITHIN, || async {
        cluster.meta_leader().await
    })
    .await
    .unwrap();
    let meta = cluster
        .meta_cluster(leader)
        .await
        .unwrap()
        .expect("a clustered node has a meta group");
    (leader, meta)
}

/// How many peers of the leader's meta group are up to date, itself
/// included.
fn current_peers(meta: &testkit::MetaCluster) -> usize {
    1 + meta
        .replicas
        .iter()
        .filter(|peer| peer.current && !peer.offline)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_form_a_jetstream_meta_group() {
    let cluster = NatsCluster::start().await.expect("the NATS cluster starts");
    assert_eq!(cluster.len(), 3);
    let urls = cluster.urls();
    assert_eq!(urls.len(), 3);
    for (url, port) in urls.iter().zip(cluster.client_ports()) {
        assert_eq!(url, &format!("nats://127.0.0.1:{port}"));
    }

    let (leader, meta) = leader_view(&cluster).await;
    assert_eq!(meta.leader, cluster.server_name(leader));
    assert_eq!(meta.cluster_size, 3);
    assert_eq!(meta.name, testkit::NATS_CLUSTER_NAME);
    assert_eq!(current_peers(&meta), 3, "{meta:?}");
    for i in 0..3 {
        assert!(cluster.is_healthy(i).await, "n{} is healthy", i + 1);
        assert!(cluster.store_dir(i).join("jetstream").is_dir());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_and_rejoins_after_a_restart() {
    let cluster = NatsCluster::start().await.expect("the NATS cluster starts");
    let (old, _) = leader_view(&cluster).await;

    cluster.kill(old).await.unwrap();
    assert!(!cluster.is_running(old).await);
    let new = eventually("another meta leader", WITHIN, || async {
        cluster.meta_leader().await.filter(|&leader| leader != old)
    })
    .await
    .unwrap();
    assert_ne!(new, old);

    cluster.restart(old).await.unwrap();
    assert!(cluster.is_running(old).await);
    // restart() returns once the leader counts the node as current.
    let (_, meta) = leader_view(&cluster).await;
    assert_eq!(meta.cluster_size, 3);
    assert_eq!(current_peers(&meta), 3, "{meta:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_answers_again_once_thawed() {
    let cluster = NatsCluster::start().await.expect("the NATS cluster starts");
    let (leader, _) = leader_view(&cluster).await;
    let follower = (leader + 1) % 3;

    cluster.freeze(follower).await.unwrap();
    assert!(
        cluster.is_running(follower).await,
        "frozen is still running"
    );
    assert!(
        !cluster.is_healthy(follower).await,
        "a frozen node answers nothing"
    );
    // The two others still have a leader between them.
    let during = eventually("a meta leader while one node is frozen", WITHIN, || async {
        cluster.meta_leader().await
    })
    .await
    .unwrap();
    assert_ne!(during, follower);

    cluster.thaw(follower).await.unwrap();
    cluster.wait_ready().await.unwrap();
    assert!(cluster.is_healthy(follower).await);
    let (_, meta) = leader_view(&cluster).await;
    assert_eq!(current_peers(&meta), 3, "{meta:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freezing_every_node_stops_every_answer_until_thawed() {
    let cluster = NatsCluster::start().await.expect("the NATS cluster starts");
    cluster.freeze_all().await.unwrap();
    for i in 0..3 {
        assert!(!cluster.is_healthy(i).await, "n{} is frozen", i + 1);
    }
    assert_eq!(
        cluster.meta_leader().await,
        None,
        "frozen nodes are not asked"
    );
    cluster.thaw_all().await.unwrap();
    cluster.wait_ready().await.unwrap();
    let (_, meta) = leader_view(&cluster).await;
    assert_eq!(current_peers(&meta), 3, "{meta:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_server_runs_jetstream_without_a_cluster() {
    let server = NatsCluster::builder()
        .nodes(1)
        .start()
        .await
        .expect("one NATS server starts");
    assert_eq!(server.urls(), vec![server.url(0)]);
    assert!(server.is_healthy(0).await);
    assert_eq!(server.meta_cluster(0).await.unwrap(), None);
    assert_eq!(server.meta_leader().await, Some(0));
    let config = std::fs::read_to_string(server.dir().join("n1/nats.conf")).unwrap();
    assert!(!config.contains("cluster"), "{config}");

    server.kill(0).await.unwrap();
    server.restart(0).await.unwrap();
    assert!(server.is_healthy(0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_folder_keeps_its_ports_and_fixed_client_ports_are_used() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| testkit::free_port().unwrap()).collect();
    let first = NatsCluster::builder()
        .client_ports(ports.clone())
        .dir(dir.path())
        .start()
        .await
        .expect("the NATS cluster starts on fixed ports");
    assert_eq!(first.client_ports(), ports);
    let monitor = first.monitor_url(2);
    drop(first);

    // Other ports asked for: the kept folder's win.
    let other: Vec<u16> = (0..3).map(|_| testkit::free_port().unwrap()).collect();
    let again = NatsCluster::builder()
        .client_ports(other)
        .dir(dir.path())
        .start()
        .await
        .expect("the kept NATS cluster starts again");
    assert_eq!(again.client_ports(), ports);
    assert_eq!(again.monitor_url(2), monitor);
}

#[tokio::test]
async fn wrong_shapes_are_refused_before_anything_starts() {
    let err = NatsCluster::builder()
        .nodes(3)
        .client_ports([4222])
        .start()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("1 client ports for 3"), "{err}");
    let err = NatsCluster::builder().nodes(0).start().await.unwrap_err();
    assert!(err.to_string().contains("at least one node"), "{err}");
}
