//! `cargo xtask up | down | reset` end to end: the real binary, real
//! PostgreSQL and OpenBao, data kept between two runs.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use tokio_postgres::NoTls;

fn xtask(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(args);
    cmd
}

/// Starts `up` and waits (bounded) for its "stack ready" line.
fn up(dir: &Path, pg: [u16; 2], bao: u16) -> Child {
    let ports = format!("{},{}", pg[0], pg[1]);
    let bao = bao.to_string();
    let dir = dir.to_str().unwrap();
    let mut child = xtask(&[
        "up",
        "--no-services",
        "--dir",
        dir,
        "--pg-ports",
        &ports,
        "--bao-port",
        &bao,
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("xtask runs");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[up] {line}");
            if line.contains("stack ready") {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(Duration::from_secs(120)).is_err() {
        let _ = child.kill();
        panic!("`xtask up` did not report ready within 120 s");
    }
    child
}

fn env_var(dir: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(dir.join("env.sh")).unwrap();
    let line = text
        .lines()
        .flat_map(|l| l.trim_start_matches("export ").split(' '))
        .find(|kv| kv.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in env.sh"));
    line[name.len() + 1..].trim_matches('\'').to_owned()
}

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

fn bao(dir: &Path, args: &[&str]) -> Value {
    let bin = testkit::bao_binary().expect("bao is installed");
    let out = Command::new(bin)
        .args(args)
        .env("BAO_ADDR", env_var(dir, "BAO_ADDR"))
        .env("BAO_TOKEN", env_var(dir, "BAO_TOKEN"))
        .output()
        .expect("bao runs");
    assert!(
        out.status.success(),
        "bao {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("bao prints JSON")
}

fn interrupt(mut child: Child) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "Ctrl-C is a clean stop: {status}");
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
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("stack");
    let pg = [testkit::free_port().unwrap(), testkit::free_port().unwrap()];
    let bao_port = testkit::free_port().unwrap();

    // First run: everything is created.
    let first = up(&dir, pg, bao_port);
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
    interrupt(first);
    nothing_left_running(&dir);

    // Second run: same data, same transit key, nothing migrated again.
    let second = up(&dir, pg, bao_port);
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
    let mut second = second;
    assert!(second.wait().unwrap().success());
    nothing_left_running(&dir);

    let reset = xtask(&["reset", "--dir", dir.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(reset.success());
    assert!(!dir.exists(), "reset deletes the stack's data");
}
