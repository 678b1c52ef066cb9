//! The stack folder and its own files, below everything that reads them:
//! where the folder is, the pid file of the running `up` and `env.sh`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The stack folder: `--dir DIR` among `args`, else `./.stack` at the
/// workspace root.
pub(crate) fn stack_dir(args: &[String]) -> anyhow::Result<PathBuf> {
    let mut dir = testkit::workspace_root().join(".stack");
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dir" => dir = PathBuf::from(args.next().context("--dir needs a folder")?),
            other => bail!("unexpected argument `{other}` (`cargo xtask help` lists the commands)"),
        }
    }
    Ok(dir)
}

/// The pid of the `up` running from a stack folder.
pub(crate) const PID_FILE: &str = "up.pid";
/// The credentials file (`source` it).
pub(crate) const ENV_FILE: &str = "env.sh";

/// The pid in `pid_file`, if that process is alive (a zombie, exited but
/// not yet reaped by its parent, counts as gone).
pub(crate) fn running_pid(pid_file: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat[stat.rfind(')')? + 1..].split_whitespace().next()?;
    (state != "Z" && state != "X").then_some(pid)
}

/// The value of `export NAME=...` in `.stack/env.sh`.
pub(crate) fn env_value(dir: &Path, name: &str) -> anyhow::Result<String> {
    let path = dir.join(ENV_FILE);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .flat_map(|l| l.trim_start_matches("export ").split(' '))
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .map(|v| v.trim_matches('\'').to_owned())
        .with_context(|| format!("no {name} in {}", path.display()))
}
