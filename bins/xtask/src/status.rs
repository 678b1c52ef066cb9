//! `cargo xtask status`: the running stack's topology, read from the
//! outside (it changes nothing): each PostgreSQL node's role, timeline,
//! WAL position and replication lag, OpenBao's seal state, each NATS
//! node's health (with `up --gateways N`), each service's readiness and each
//! gateway's queue depth and write queue. `--json` prints the same as one
//! JSON object.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

/// What `up` records of the stack for `status` (no secrets).
pub(crate) const TOPOLOGY_FILE: &str = "topology.json";

/// Writes the topology file: the PostgreSQL nodes and their ports, the
/// current primary, OpenBao's address, the NATS nodes (client and
/// monitoring URLs) when the stack runs them, and the services' ports.
pub(crate) fn write_topology(
    dir: &Path,
    pg: &testkit::PgCluster,
    bao: &str,
    services: &[(&str, u16)],
    nats: Option<&testkit::NatsCluster>,
) -> anyhow::Result<()> {
    let nodes: Vec<Value> = pg
        .nodes()
        .iter()
        .map(|n| json!({"node": n.id().to_string(), "port": n.port()}))
        .collect();
    let services: Vec<Value> = services
        .iter()
        .map(|(name, port)| json!({"name": name, "port": port}))
        .collect();
    let nats: Vec<Value> = nats
        .map(|nats| {
            (0..nats.len())
                .map(|i| {
                    json!({
                        "node": nats.server_name(i),
                        "url": nats.url(i),
                        "monitor": nats.monitor_url(i),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let text = serde_json::to_string_pretty(&json!({
        "postgres": nodes,
        "primary": pg.primary().to_string(),
        "openbao": bao,
        "nats": nats,
        "services": services,
    }))?;
    let path = dir.join(TOPOLOGY_FILE);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

/// `cargo xtask status [--json]` for the stack in `dir`.
pub(crate) async fn run(dir: &Path, as_json: bool) -> anyhow::Result<()> {
    let path = dir.join(TOPOLOGY_FILE);
    let topology: Value = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .with_context(|| format!("reading {} (has `cargo xtask up` run?)", path.display()))?,
    )
    .with_context(|| format!("parsing {}", path.display()))?;
    let password = crate::files::env_value(dir, "PGPASSWORD")?;
    let mut nodes = Vec::new();
    for node in topology["postgres"].as_array().into_iter().flatten() {
        let name = node["node"].as_str().unwrap_or("?").to_owned();
        let port = node["port"].as_u64().unwrap_or(0) as u16;
        nodes.push(postgres_node(&name, port, &password).await);
    }
    // The primary's view of its standbys: state and lag.
    for primary in nodes.clone().iter().filter(|n| n["role"] == "primary") {
        let port = primary["port"].as_u64().unwrap_or(0) as u16;
        if let Ok(client) = connect(port, &password).await {
            let rows = client
                .query(
                    "SELECT application_name, state, \
                     pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint, \
                     coalesce(replay_lag::text, '') FROM pg_stat_replication",
                    &[],
                )
                .await
                .unwrap_or_default();
            for row in rows {
                let name: String = row.get(0);
                if let Some(node) = nodes.iter_mut().find(|n| n["node"] == name.as_str()) {
                    node["replication"] = json!({
                        "from": primary["node"],
                        "state": row.get::<_, String>(1),
                        "lagBytes": row.get::<_, Option<i64>>(2),
                        "replayLag": row.get::<_, String>(3),
                    });
                }
            }
        }
    }
    // testkit's client: it installs the rustls provider that a workspace
    // build of reqwest (`rustls-no-provider`, unified in) needs.
    let http = testkit::http_client()?;
    let bao = topology["openbao"].as_str().unwrap_or_default().to_owned();
    let seal = match http
        .get(format!("{bao}/v1/sys/seal-status"))
        .timeout(Duration::from_secs(3))
        .send()
        .await
    {
        Ok(r) => match r.json::<Value>().await {
            Ok(v) if v["sealed"] == false => "unsealed",
            Ok(_) => "sealed",
            Err(_) => "unreadable",
        },
        Err(_) => "down",
    };
    let mut nats = Vec::new();
    for node in topology["nats"].as_array().into_iter().flatten() {
        let monitor = node["monitor"].as_str().unwrap_or_default();
        let health = match http
            .get(format!("{monitor}/healthz?js-enabled-only=true"))
            .timeout(Duration::from_secs(3))
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => "healthy",
            Ok(_) => "unhealthy",
            Err(_) => "down",
        };
        nats.push(json!({
            "node": node["node"],
            "url": node["url"],
            "health": health,
        }));
    }
    let mut services = Vec::new();
    for service in topology["services"].as_array().into_iter().flatten() {
        let name = service["name"].as_str().unwrap_or("?");
        let port = service["port"].as_u64().unwrap_or(0);
        let base = format!("http://127.0.0.1:{port}");
        let (ready, body) = match http
            .get(format!("{base}/ready"))
            .timeout(Duration::from_secs(3))
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => ("ready", r.json::<Value>().await.ok()),
            Ok(r) => ("not ready", r.json::<Value>().await.ok()),
            Err(_) => ("down", None),
        };
        let mut entry = json!({"name": name, "url": base, "ready": ready});
        let gateway = name.starts_with("gateway");
        if gateway && let Some(queue) = body.as_ref().and_then(|b| b["writeQueue"].as_bool()) {
            entry["writeQueue"] = json!(queue);
        }
        if gateway
            && let Ok(r) = http
                .get(format!("{base}/metrics"))
                .timeout(Duration::from_secs(3))
                .send()
                .await
            && let Ok(text) = r.text().await
        {
            entry["queueDepth"] = json!(
                text.lines()
                    .find_map(|l| l.strip_prefix("gateway_queue_depth "))
                    .and_then(|v| v.trim().parse::<f64>().ok())
            );
        }
        services.push(entry);
    }
    let status = json!({
        "postgres": nodes,
        "openbao": {"addr": bao, "seal": seal},
        "nats": nats,
        "services": services,
    });
    if as_json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print_text(&status);
    }
    Ok(())
}

/// One node: role, timeline and WAL position, or `down`.
async fn postgres_node(name: &str, port: u16, password: &str) -> Value {
    let mut node = json!({"node": name, "port": port});
    let Ok(client) = connect(port, password).await else {
        node["role"] = json!("down");
        return node;
    };
    let Ok(row) = client.query_one("SELECT pg_is_in_recovery()", &[]).await else {
        node["role"] = json!("down");
        return node;
    };
    let standby: bool = row.get(0);
    let query = if standby {
        "SELECT coalesce((SELECT received_tli FROM pg_stat_wal_receiver), \
         (SELECT timeline_id FROM pg_control_checkpoint()))::bigint, \
         coalesce(pg_last_wal_replay_lsn()::text, '')"
    } else {
        "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint, \
         pg_current_wal_lsn()::text"
    };
    if let Ok(row) = client.query_one(query, &[]).await {
        node["timeline"] = json!(row.get::<_, Option<i64>>(0));
        node["wal"] = json!(row.get::<_, String>(1));
    }
    node["role"] = json!(if standby { "standby" } else { "primary" });
    node
}

async fn connect(port: u16, password: &str) -> anyhow::Result<tokio_postgres::Client> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user("postgres")
        .password(password)
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(2));
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

fn print_text(status: &Value) {
    println!("PostgreSQL");
    for node in status["postgres"].as_array().into_iter().flatten() {
        let mut line = format!(
            "  {:<4} 127.0.0.1:{:<5}  {:<7}",
            node["node"].as_str().unwrap_or("?"),
            node["port"],
            node["role"].as_str().unwrap_or("?")
        );
        if let Some(timeline) = node["timeline"].as_i64() {
            line.push_str(&format!("  timeline {timeline}"));
        }
        if let Some(wal) = node["wal"].as_str() {
            line.push_str(&format!("  WAL {wal}"));
        }
        let replication = &node["replication"];
        if replication.is_object() {
            line.push_str(&format!(
                "  {} from {}, lag {} bytes{}",
                replication["state"].as_str().unwrap_or("?"),
                replication["from"].as_str().unwrap_or("?"),
                replication["lagBytes"],
                match replication["replayLag"].as_str() {
                    Some(lag) if !lag.is_empty() => format!(" ({lag})"),
                    _ => String::new(),
                }
            ));
        } else if node["role"] == "standby" {
            line.push_str("  not streaming");
        }
        println!("{line}");
    }
    println!(
        "OpenBao  {}  {}",
        status["openbao"]["addr"].as_str().unwrap_or("?"),
        status["openbao"]["seal"].as_str().unwrap_or("?")
    );
    for node in status["nats"].as_array().into_iter().flatten() {
        println!(
            "NATS {:<4} {}  {}",
            node["node"].as_str().unwrap_or("?"),
            node["url"].as_str().unwrap_or("?"),
            node["health"].as_str().unwrap_or("?")
        );
    }
    for service in status["services"].as_array().into_iter().flatten() {
        let mut line = format!(
            "{:<14} {}  {}",
            service["name"].as_str().unwrap_or("?"),
            service["url"].as_str().unwrap_or("?"),
            service["ready"].as_str().unwrap_or("?")
        );
        if let Some(depth) = service["queueDepth"].as_f64() {
            line.push_str(&format!("  queue depth {depth}"));
        }
        if service["writeQueue"] == false {
            line.push_str("  write queue unreachable");
        }
        println!("{line}");
    }
}
