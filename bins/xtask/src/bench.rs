//! `cargo xtask bench <name>`: the workspace's named benchmarks, each a
//! `harness = false` or criterion bench target of the crate it measures.
//! Figures go to docs/BENCHMARKS.md with the command that produced them.

use std::process::Command;

use anyhow::{Context, bail};

use crate::{tools, workspace_root};

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

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let Some(name) = args.first() else {
        let list: Vec<String> = BENCHES
            .iter()
            .map(|(name, _, _, what)| format!("  {name:<10} {what}"))
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
