//! `cargo xtask test`: every test of the workspace, with the real services
//! the integration tests start installed first.

use std::process::Command;

use anyhow::{Context, bail};

use testkit::workspace_root;

use crate::tools;

/// Runs `cargo test --workspace --all-targets` and then the doctests
/// (`--all-targets` leaves them out). `args` go to both runs.
pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let tools = tools::ensure()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let runs: [&[&str]; 2] = [
        &["test", "--workspace", "--all-targets", "--all-features"],
        &["test", "--workspace", "--doc", "--all-features"],
    ];
    for base in runs {
        let mut cmd = Command::new(&cargo);
        cmd.args(base)
            .args(args)
            .current_dir(workspace_root())
            .envs(tools.env());
        eprintln!("xtask: cargo {}", base.join(" "));
        let status = cmd.status().context("running cargo test")?;
        if !status.success() {
            bail!("cargo {} failed: {status}", base.join(" "));
        }
    }
    Ok(())
}
