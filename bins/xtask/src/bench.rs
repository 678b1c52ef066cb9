//! `cargo xtask bench <name>`: the workspace's named benchmarks, each a
//! `harness = false` or criterion bench target of the crate it measures.
//! `api`, `gateway` and `queue` are the exceptions: xtask commands of their
//! own (`bench_api.rs`, `bench_gateway.rs`, `bench_queue.rs`) that run the
//! services on a temporary stack.
//! Figures go to docs/BENCHMARKS.md with the command that produced them.

use std::process::Command;

use anyhow::{Context, bail};

use testkit::workspace_root;

use crate::tools;

/// `cargo xtask bench api`: not a bench target but an xtask command
/// (`bench_api.rs`), since it needs the whole stack.
const API: &str = "store-service under load vs pgbench on the same SQL \
                   [--connections 32] [--duration 10s] [--rows 1000] [--big-rows 1000000] [--no-build]; \
                   --connections 64,1024,4000: the concurrency sweep of store-service and nginx";

/// name → (package, bench target, what it measures).
const BENCHES: &[(&str, &str, &str, &str)] = &[
    (
        "sanitize",
        "sanitize",
        "throughput",
        "clean_text / clean_json throughput",
    ),
    (
        "breaker",
        "breaker",
        "closed_path",
        "breaker vs recloser vs failsafe",
    ),
    (
        "failover",
        "db-failover",
        "failover",
        "PostgreSQL failover: promotion to first acknowledged write",
    ),
];

/// `cargo xtask bench gateway`: an xtask command too (`bench_gateway.rs`).
const GATEWAY: &str = "GET by id: direct vs gateway vs nginx [--connections 64[,1024,4000]: a concurrency sweep] [--duration 10s] [--rows 1000] [--no-build]";

/// `cargo xtask bench queue`: an xtask command too (`bench_queue.rs`).
const QUEUE: &str = "the gateway's write queue during an outage: redb vs JetStream R1 vs R3 (202 latency, accepted/s, replay/s) [--writes 2000] [--connections 16] [--no-build]";

/// Whether `--connections` lists several levels (`64,1024,4000`).
fn is_sweep(args: &[String]) -> bool {
    args.windows(2)
        .any(|pair| pair[0] == "--connections" && pair[1].contains(','))
}

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    if args.first().map(String::as_str) == Some("gateway") {
        let options = crate::bench_gateway::GatewayOptions::parse(&args[1..])?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the tokio runtime")?;
        return runtime.block_on(crate::bench_gateway::run(options));
    }
    if args.first().map(String::as_str) == Some("queue") {
        let options = crate::bench_queue::QueueOptions::parse(&args[1..])?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the tokio runtime")?;
        return runtime.block_on(crate::bench_queue::run(options));
    }
    if args.first().map(String::as_str) == Some("api") && is_sweep(&args[1..]) {
        // Several levels: the concurrency sweep of the store service (and
        // nginx in front of it), as `bench gateway` runs it.
        let options = crate::bench_gateway::GatewayOptions::service_sweep(&args[1..])?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the tokio runtime")?;
        return runtime.block_on(crate::bench_gateway::run(options));
    }
    if args.first().map(String::as_str) == Some("api") {
        let options = crate::bench_api::ApiOptions::parse(&args[1..])?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the tokio runtime")?;
        return runtime.block_on(crate::bench_api::run(options));
    }
    let Some(name) = args.first() else {
        let list: Vec<String> = BENCHES
            .iter()
            .map(|(name, _, _, what)| format!("  {name:<10} {what}"))
            .chain(std::iter::once(format!("  {:<10} {API}", "api")))
            .chain(std::iter::once(format!("  {:<10} {GATEWAY}", "gateway")))
            .chain(std::iter::once(format!("  {:<10} {QUEUE}", "queue")))
            .collect();
        bail!(
            "usage: cargo xtask bench <name> [ARGS...]\n\nbenchmarks:\n{}",
            list.join("\n")
        );
    };
    let Some((_, package, target, _)) = BENCHES.iter().find(|(n, ..)| n == name) else {
        bail!("unknown benchmark `{name}`; `cargo xtask bench` lists them");
    };
    if !workspace_root()
        .join("crates")
        .join(package)
        .join("Cargo.toml")
        .is_file()
    {
        bail!(
            "benchmark `{name}` belongs to crate `{package}`, which is not in this workspace yet"
        );
    }
    let tools = tools::ensure()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["bench", "-p", package, "--bench", target, "--"])
        .args(&args[1..])
        .current_dir(workspace_root())
        .envs(tools.env())
        .status()
        .context("running cargo bench")?;
    if !status.success() {
        bail!("cargo bench -p {package} --bench {target} failed: {status}");
    }
    Ok(())
}
