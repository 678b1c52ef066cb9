//! `cargo xtask up | down | reset` end to end: the real binary, real
//! PostgreSQL and OpenBao, data kept between two runs.

mod common;

use std::path::Path;

use common::{Place, Stack, bao, env_var, xtask};
use tokio_postgres::NoTls;

async fn psql(dir: &Path, port: u16) -> tokio_postgres::Client {
    let url = format!(
        "postgres://postgres:{}@127.0.0.1:{port}/stores",
        env_var(dir, "PGPASSWORD")
    );
    let (client, connection) = tokio_postgres::connect(&url, NoTls)
        .await
        .expect("TCP login with the stack's password");
    tokio::spawn(connection);
    client
}

fn nothing_left_running(dir: &Path) {
    for node in ["pg0", "pg1"] {
        assert!(
            !dir.join("pg").join(node).join("postmaster.pid").exists(),
            "{node} was not shut down cleanly"
        );
    }
    assert!(!dir.join("up.pid").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_the_stack_keeps_its_data_and_down_and_reset_stop_it() {
    let place = Place::new();
    let (dir, pg) = (place.dir.clone(), place.pg);

    // First run: everything is created.
    let first = Stack::up(&place, &[]);
    let primary = psql(&dir, pg[0]).await;
    let replica = psql(&dir, pg[1]).await;
    assert!(
        !primary
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .unwrap()
            .get::<_, bool>(0)
    );
    assert!(
        replica
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .unwrap()
            .get::<_, bool>(0)
    );
    primary
        .execute(
            "INSERT INTO stores (id, name, status) VALUES (gen_random_uuid(), 'Kept', 'ACTIVE')",
            &[],
        )
        .await
        .unwrap();
    let kv = bao(
        &dir,
        &["kv", "get", "-format=json", "secret/store-service/database"],
    );
    assert_eq!(kv["data"]["data"]["primary_port"], pg[0]);
    let sealed = bao(
        &dir,
        &[
            "write",
            "-format=json",
            "transit/encrypt/store-secrets",
            "plaintext=aGk=",
        ],
    );
    let ciphertext = sealed["data"]["ciphertext"].as_str().unwrap().to_owned();
    let creds = bao(
        &dir,
        &["read", "-format=json", "database/creds/store-service"],
    );
    assert!(
        creds["data"]["username"].is_string(),
        "the database engine issues credentials"
    );
    drop((primary, replica));
    first.stop();
    nothing_left_running(&dir);

    // Second run: same data, same transit key, nothing migrated again.
    let second = Stack::up(&place, &[]);
    let primary = psql(&dir, pg[0]).await;
    let kept: i64 = primary
        .query_one("SELECT count(*) FROM stores WHERE name = 'Kept'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 1);
    let opened = bao(
        &dir,
        &[
            "write",
            "-format=json",
            "transit/decrypt/store-secrets",
            &format!("ciphertext={ciphertext}"),
        ],
    );
    assert_eq!(
        opened["data"]["plaintext"], "aGk=",
        "Transit keys survive a restart"
    );
    drop(primary);

    // `down` from another process stops it cleanly.
    let down = xtask(&["down", "--dir", dir.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(down.success());
    assert!(second.wait().success(), "up ends cleanly after `down`");
    nothing_left_running(&dir);

    let reset = xtask(&["reset", "--dir", dir.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(reset.success());
    assert!(!dir.exists(), "reset deletes the stack's data");
}
