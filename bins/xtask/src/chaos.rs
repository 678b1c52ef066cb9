//! `cargo xtask chaos [ARGS...]`: the whole platform under load while
//! every component fails in turn, then an audit of every acknowledged
//! write. The run is the `chaos` binary of the system tests (next to the
//! `Platform` it starts); this installs what it needs and runs it.

use std::process::Command;

use anyhow::{Context, bail};

use testkit::workspace_root;

use crate::tools;

/// Runs `cargo run -p system-tests --bin chaos -- ARGS` with the tools'
/// environment; fails when the run does (a lost or duplicated write, an
/// unexplained 5xx, or a fault that could not be injected or healed).
pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let tools = tools::ensure()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "run",
            "--quiet",
            "-p",
            "system-tests",
            "--bin",
            "chaos",
            "--",
        ])
        .args(args)
        .current_dir(workspace_root())
        .envs(tools.env())
        .status()
        .context("running the chaos binary")?;
    if !status.success() {
        bail!("the chaos run failed: {status}");
    }
    Ok(())
}
