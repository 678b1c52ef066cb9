//! The local stack survives its own failovers (issue 20), end to end with
//! the real binary and real PostgreSQL: `up` restarts on the node the data
//! chooses, `failover` swaps the roles under a write loop, and a diverged
//! old primary is refused, then rewound only when asked, its divergent
//! commits reported.

mod common;

use std::sync::{Arc, Mutex, atomic::AtomicBool, atomic::Ordering};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// The probe table: one row per acknowledged write.
const TABLE: &str = "CREATE TABLE IF NOT EXISTS probe (id bigint PRIMARY KEY, note text NOT NULL)";

async fn ids(client: &tokio_postgres::Client) -> Vec<i64> {
    client
        .query("SELECT id FROM probe ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn in_recovery(client: &tokio_postgres::Client) -> bool {
    client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap()
        .get(0)
}

/// Waits (30 s at most) until `client`'s node holds the rows `expected`.
async fn replicated(client: &tokio_postgres::Client, expected: &[i64]) {
    for _ in 0..600 {
        if ids(client).await == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the rows {expected:?} did not reach the standby: {:?}",
        ids(client).await
    );
}

/// A stack with the probe table and row 1 on both nodes; (pg0, pg1).
async fn with_one_row(place: &Place) -> (tokio_postgres::Client, tokio_postgres::Client) {
    let pg0 = place.psql(place.pg[0]).await;
    pg0.batch_execute(TABLE).await.unwrap();
    pg0.execute("INSERT INTO probe VALUES (1, 'shared')", &[])
        .await
        .unwrap();
    let pg1 = place.psql(place.pg[1]).await;
    replicated(&pg1, &[1]).await;
    (pg0, pg1)
}

/// `pg_promote()` on `client`'s node.
async fn promote(client: &tokio_postgres::Client) {
    let promoted: bool = client
        .query_one("SELECT pg_promote(true, 60)", &[])
        .await
        .unwrap()
        .get(0);
    assert!(promoted);
}

/// `xtask status --json`.
fn status(place: &Place) -> Value {
    let out = place.run("status", &["--json"]);
    assert!(
        out.status.success(),
        "status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status --json prints JSON")
}

fn node<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["postgres"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == name)
        .unwrap_or_else(|| panic!("no {name} in {status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_promotion_up_restarts_on_the_newest_timeline() {
    let place = Place::new();
    let stack = Stack::up(&place, &[]);
    let (pg0, pg1) = with_one_row(&place).await;

    // The primary dies; the replica is promoted and takes a write.
    let pid = place.postmaster("pg0").expect("pg0 runs");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    promote(&pg1).await;
    pg1.execute("INSERT INTO probe VALUES (2, 'after the failover')", &[])
        .await
        .unwrap();
    drop((pg0, pg1));
    stack.stop();

    // `up` again: pg1 is chosen, in one line that says why; pg0 follows it.
    let stack = Stack::up(&place, &[]);
    let chosen = stack.said("postgres: primary");
    assert_eq!(chosen.len(), 1, "{:?}", stack.lines.lock().unwrap());
    assert!(
        chosen[0].contains("primary pg1") && chosen[0].contains("timeline 2"),
        "{chosen:?}"
    );
    let pg1 = place.psql(place.pg[1]).await;
    let pg0 = place.psql(place.pg[0]).await;
    assert!(!in_recovery(&pg1).await);
    assert!(in_recovery(&pg0).await);
    assert_eq!(
        ids(&pg1).await,
        vec![1, 2],
        "both writes are on the primary"
    );
    replicated(&pg0, &[1, 2]).await;
    let port: String = std::fs::read_to_string(place.dir.join("env.sh")).unwrap();
    assert!(
        port.contains(&format!("PGPORT={}", place.pg[1])),
        "env.sh names the current primary: {port}"
    );
    let status = status(&place);
    assert_eq!(node(&status, "pg1")["role"], "primary");
    assert_eq!(node(&status, "pg1")["timeline"], 2);
    assert_eq!(node(&status, "pg0")["role"], "standby");
    assert_eq!(node(&status, "pg0")["replication"]["from"], "pg1");
    assert_eq!(node(&status, "pg0")["replication"]["state"], "streaming");
    assert_eq!(status["openbao"]["seal"], "unsealed");
    drop((pg0, pg1));
    stack.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_under_a_write_loop_loses_no_acknowledged_write() {
    let place = Place::new();
    let stack = Stack::up(&place, &[]);
    place
        .psql(place.pg[0])
        .await
        .batch_execute(TABLE)
        .await
        .unwrap();

    // A writer that follows the primary: it counts a row only when its
    // commit was acknowledged.
    let acked = Arc::new(Mutex::new(Vec::<i64>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
        let ports = place.pg;
        let password = env_var(&place.dir, "PGPASSWORD");
        tokio::spawn(async move {
            let mut next = 0_i64;
            let mut client: Option<tokio_postgres::Client> = None;
            while !stop.load(Ordering::Relaxed) {
                if client.is_none() {
                    for port in ports {
                        let url = format!(
                            "postgres://postgres:{password}@127.0.0.1:{port}/postgres?connect_timeout=1"
                        );
                        if let Ok((c, connection)) =
                            tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                        {
                            tokio::spawn(connection);
                            if let Ok(row) = c.query_one("SELECT pg_is_in_recovery()", &[]).await
                                && !row.get::<_, bool>(0)
                            {
                                client = Some(c);
                                break;
                            }
                        }
                    }
                }
                if let Some(c) = &client {
                    match c
                        .execute("INSERT INTO probe VALUES ($1, 'loop')", &[&next])
                        .await
                    {
                        Ok(_) => acked.lock().unwrap().push(next),
                        Err(_) => client = None,
                    }
                    next += 1;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    while acked.lock().unwrap().len() < 20 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = place.run("failover", &[]);
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "failover: {printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "1/4 pg0 fenced",
        "2/4 OpenBao's database engine",
        "3/4",
        "4/4 pg0 streams from pg1",
        "done in",
    ] {
        assert!(printed.contains(step), "no `{step}` in:\n{printed}");
    }
    // Writes go on against the new primary.
    let before = acked.lock().unwrap().len();
    while acked.lock().unwrap().len() < before + 20 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    let pg1 = place.psql(place.pg[1]).await;
    assert!(!in_recovery(&pg1).await, "pg1 is the primary");
    let kept = ids(&pg1).await;
    let lost: Vec<&i64> = acked.iter().filter(|id| !kept.contains(id)).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    let pg0 = place.psql(place.pg[0]).await;
    assert!(in_recovery(&pg0).await, "pg0 is a standby");
    replicated(&pg0, &kept).await;
    let status = status(&place);
    assert_eq!(node(&status, "pg0")["replication"]["state"], "streaming");
    // OpenBao issues database users on the new primary.
    let kv = bao(
        &place.dir,
        &["kv", "get", "-format=json", "secret/store-service/database"],
    );
    assert_eq!(kv["data"]["data"]["primary_port"], place.pg[1]);
    let creds = bao(
        &place.dir,
        &["read", "-format=json", "database/creds/store-service"],
    );
    assert!(creds["data"]["username"].is_string(), "{creds}");
    drop((pg0, pg1));
    stack.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diverged_old_primary_is_refused_then_rewound_when_asked() {
    let place = Place::new();
    let stack = Stack::up(&place, &[]);
    let (pg0, pg1) = with_one_row(&place).await;
    // Split brain: pg1 is promoted while pg0 still takes writes.
    promote(&pg1).await;
    pg1.execute("INSERT INTO probe VALUES (2, 'on the new primary')", &[])
        .await
        .unwrap();
    pg0.execute("INSERT INTO probe VALUES (3, 'on the old primary')", &[])
        .await
        .unwrap();
    drop((pg0, pg1));
    stack.stop();

    // Refused: nothing started, pg0's commit named with both ways out.
    let out = place.up_command(&[]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("pg0 holds 1 committed transaction(s) that pg1 does not have"),
        "{said}"
    );
    assert!(said.contains("xid "), "{said}");
    assert!(said.contains("cargo xtask up --primary pg0"), "{said}");
    assert!(said.contains("cargo xtask up --discard-diverged"), "{said}");
    assert!(place.postmaster("pg0").is_none() && place.postmaster("pg1").is_none());

    // Asked to: pg0 is rewound onto pg1, its commit reported, not kept.
    let stack = Stack::up(&place, &["--discard-diverged"]);
    let rewound = stack.said("pg0 rewound (pg_rewind) onto pg1");
    assert_eq!(rewound.len(), 1, "{:?}", stack.lines.lock().unwrap());
    assert!(
        rewound[0].contains("DISCARDED 1 committed transaction(s): xid "),
        "{rewound:?}"
    );
    let pg1 = place.psql(place.pg[1]).await;
    let pg0 = place.psql(place.pg[0]).await;
    assert_eq!(ids(&pg1).await, vec![1, 2]);
    assert!(in_recovery(&pg0).await);
    replicated(&pg0, &[1, 2]).await;
    drop((pg0, pg1));
    stack.stop();
}
