//! `cargo xtask`: the workspace's automation, in Rust.
//!
//! - `cargo xtask up [--dir DIR] [--no-services] [--gateways N]`: the whole
//!   platform locally; with `--gateways N`, N gateways sharing a write queue
//!   on a 3-node NATS JetStream cluster.
//! - `cargo xtask down [--dir DIR]`: stops a stack left running.
//! - `cargo xtask failover [--dir DIR]`: a controlled promotion on the
//!   running stack; `cargo xtask status [--json] [--dir DIR]`: its topology.
//! - `cargo xtask token [--scope "..."] [--subject NAME] [--dir DIR]`: a JWT
//!   for the gateway from the running stack's OpenBao token issuer (for the
//!   client NAME: its own, stable `sub`).
//! - `cargo xtask reset [--dir DIR]`: stops it and wipes its data.
//! - `cargo xtask test [ARGS...]`: every test of the workspace.
//! - `cargo xtask bench [NAME]`: a named benchmark (`failover`, `breaker`, ...);
//!   `cargo xtask bench api` loads store-service against pgbench;
//!   `cargo xtask bench queue` compares the gateway's write-queue backends.
//! - `cargo xtask chaos [--duration 5m] [--seed N] [--gateways N]`: the
//!   platform under load while every component fails, then an audit of
//!   every acknowledged write.
//! - `cargo xtask coverage [PACKAGE...]`: line coverage per library crate and
//!   service binary (cargo-tarpaulin), against their goals.
//! - `cargo xtask tools`: installs what is missing, prints `export` lines.

mod bench;
mod bench_api;
mod bench_gateway;
mod bench_queue;
mod chaos;
mod coverage;
mod failover;
mod files;
mod load;
mod stack;
mod status;
mod test;
mod tools;

use anyhow::{Context, bail};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  up [--dir DIR] [--no-services] [--pg-ports P,R] [--bao-port B] [--primary pgN] [--discard-diverged]
                                   run PostgreSQL (primary + replica), OpenBao and the services; Ctrl-C stops them.
                                   A kept stack restarts on the node with the newest timeline and furthest WAL;
                                   --primary: that node instead; --discard-diverged: rewind a node even when its
                                   divergent WAL holds commits (refused otherwise, nothing started)
  up --gateways N [--gateway-port P] [--nats-ports A,B,C] [--store-port S]
                                   a fleet: a 3-node NATS JetStream cluster (client ports 4222,4223,4224, data in
                                   DIR/nats) and N gateways on 8080, 8081, ... sharing one write queue on it (key in
                                   DIR/gateway-queue.key, mode 0600); without --gateways: one gateway on redb
  down [--dir DIR]                 stop a stack left running
  failover [--dir DIR]             on the running stack: fence the primary, promote the replica, wait for the
                                   services to write to it, rejoin the old primary as a standby
  status [--json] [--dir DIR]      the running stack: each node's role, timeline, WAL and lag, OpenBao's seal,
                                   the NATS nodes' health, the services' readiness,
                                   each gateway's queue depth
  token [--scope \"S ...\"] [--subject NAME] [--dir DIR]
                                   print a fresh JWT for the gateway (default scope \"stores:read stores:write\");
                                   --subject: for the client NAME (its own `sub`, the same on every call)
  reset [--dir DIR]                stop the stack and delete its data (./.stack)
  test [ARGS...]                   install what is missing, then run every test (ARGS go to cargo test)
  bench [NAME [ARGS...]]           run a named benchmark (no NAME: list them)
  bench api [--connections N] [--duration 10s] [--rows N] [--big-rows N] [--no-build]
                                   store-service under load vs pgbench (same SQL, same database)
  bench gateway [--connections N] [--duration 10s] [--rows N] [--no-build]
                                   GET by id: direct vs through the gateway vs through nginx
  bench queue [--writes 2000] [--connections 16] [--no-build]
                                   the gateway's write queue with the store service frozen, then thawed: redb vs
                                   JetStream R1 vs R3 (202 latency p50/p99, accepted/s, replay/s)
  chaos [--duration 5m] [--seed N] [--gateways N] [--rate R] [--clients N] [--faults A,B] [--logs DIR] [--plan]
                                   a stack of its own (PG primary + 2 sync replicas, OpenBao, store-service, N gateways
                                   on 3-node NATS JetStream) under an open-loop load while faults from the seed's
                                   schedule hit every component; audits every acknowledged write; last line
                                   `chaos: faults=F acknowledged=A queued=Q lost=L duplicated=D unexplained_5xx=E`,
                                   non-zero exit unless L, D and E are 0
  coverage [PACKAGE...]            line coverage of each library crate (goal 85 %) and service binary (75 %) with
                                   cargo-tarpaulin (installed on first use), each package's tests alone, then its
                                   doctests; prints a table, fails under a goal
  tools                            install what is missing; print `export` lines for PG_BINDIR, BAO_BIN, NATS_SERVER_BIN, ST_BIN";

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the context chain on one line, without a backtrace.
            eprintln!("xtask: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    match command.as_str() {
        "up" => {
            let options = stack::UpOptions::parse(&rest)?;
            runtime.block_on(stack::up(options))
        }
        "down" => runtime.block_on(stack::down(&files::stack_dir(&rest)?)),
        "failover" => runtime.block_on(failover::request(&files::stack_dir(&rest)?)),
        "status" => {
            let as_json = rest.iter().any(|a| a == "--json");
            let rest: Vec<String> = rest.into_iter().filter(|a| a != "--json").collect();
            runtime.block_on(status::run(&files::stack_dir(&rest)?, as_json))
        }
        "token" => runtime.block_on(stack::token(&rest)),
        "reset" => runtime.block_on(stack::reset(&files::stack_dir(&rest)?)),
        "test" => test::run(&rest),
        "bench" => bench::run(&rest),
        "coverage" => coverage::run(&rest),
        "chaos" => chaos::run(&rest),
        "tools" => {
            // For scripts: `eval "$(cargo xtask tools)"`.
            for (key, value) in tools::ensure()?.env() {
                println!("export {key}='{}'", value.display());
            }
            Ok(())
        }
        "" | "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command `{other}`\n\n{USAGE}"),
    }
}
