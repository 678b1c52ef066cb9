//! Server processes that never outlive their owner.
//!
//! Every server runs as a direct child in a process group of its own, and
//! signals go to the server *and every process it forked* (PostgreSQL's
//! backends call `setsid`, so a process group alone would miss them): a
//! SIGSTOP freezes a postmaster and all its backends, which is what a
//! black-holed node looks like. Beside each server runs a tiny watcher
//! (`sh`) whose standard input is a pipe held by this process: when this
//! process dies, however it dies, the pipe closes and the watcher kills the
//! server and its children. `Drop` kills them too, so a panicking test
//! leaves no orphan behind.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::Duration;

use rustix::process::{Pid, Signal};

use crate::error::IoContext;
use crate::{Error, Result};

/// The unprivileged account that runs the servers when this process is root
/// (`initdb` refuses to run as root).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RunAs {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

impl RunAs {
    /// `None` when this process is not root: servers then run as ourselves.
    /// When root, the `postgres` account (created by Debian's package).
    pub(crate) fn for_servers() -> Result<Option<RunAs>> {
        if !rustix::process::geteuid().is_root() {
            return Ok(None);
        }
        let passwd =
            std::fs::read_to_string("/etc/passwd").context(|| "reading /etc/passwd".into())?;
        passwd
            .lines()
            .find_map(|line| {
                let mut fields = line.split(':');
                if fields.next()? != "postgres" {
                    return None;
                }
                let uid = fields.nth(1)?.parse().ok()?;
                let gid = fields.next()?.parse().ok()?;
                Some(Some(RunAs { uid, gid }))
            })
            .ok_or_else(|| Error::MissingBinary {
                program: "postgres (the system account)",
                looked_in: "running as root and /etc/passwd has no `postgres` user".into(),
                install: crate::binaries::POSTGRES_INSTALL,
            })
    }

    /// Makes `cmd` run as this account.
    pub(crate) fn apply(run_as: Option<RunAs>, cmd: &mut Command) {
        if let Some(user) = run_as {
            cmd.uid(user.uid).gid(user.gid);
            if let Some(home) = passwd_home(user.uid) {
                cmd.env("HOME", home);
            }
        }
    }

    /// Gives `path` (not recursively) to this account.
    pub(crate) fn chown(run_as: Option<RunAs>, path: &Path) -> Result<()> {
        if let Some(user) = run_as {
            std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
                .context(|| format!("chown {}", path.display()))?;
        }
        Ok(())
    }
}

fn passwd_home(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.get(2)?.parse::<u32>().ok()? == uid)
            .then(|| fields.get(5).map(|s| (*s).to_owned()))?
    })
}

/// Creates a folder (and its parents) owned by `run_as`, mode 0700.
pub(crate) fn private_dir(run_as: Option<RunAs>, path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path).context(|| format!("creating {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .context(|| format!("chmod 0700 {}", path.display()))?;
    RunAs::chown(run_as, path)
}

/// A running server: its process group and the watcher that kills that group
/// if this process dies.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    what: String,
    child: Child,
    pgid: Pid,
    log: PathBuf,
    watcher: Option<(Child, ChildStdin)>,
}

impl ServerProcess {
    /// Spawns `cmd` in a new process group, with stdout and stderr appended
    /// to `log`.
    pub(crate) fn spawn(what: impl Into<String>, mut cmd: Command, log: &Path) -> Result<Self> {
        let what = what.into();
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .context(|| format!("opening log {}", log.display()))?;
        let err = out
            .try_clone()
            .context(|| format!("opening log {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd.spawn().context(|| format!("starting {what}"))?;
        let pgid = Pid::from_raw(child.id() as i32)
            .ok_or_else(|| Error::Usage(format!("{what}: spawned with pid 0")))?;
        let mut process = ServerProcess {
            what,
            child,
            pgid,
            log: log.to_owned(),
            watcher: None,
        };
        process.watcher = Some(spawn_watcher(pgid)?);
        Ok(process)
    }

    /// Sends `signal` to the server, its process group and every process
    /// descended from it.
    pub(crate) fn signal(&self, signal: Signal) -> Result<()> {
        // Collect the tree first: once a parent is killed its children are
        // re-parented and can no longer be found.
        let tree = descendants(self.pgid);
        rustix::process::kill_process_group(self.pgid, signal)
            .map_err(std::io::Error::from)
            .context(|| format!("sending {signal:?} to {}", self.what))?;
        for pid in &tree {
            // A child may have exited in the meantime; that is fine.
            let _ = rustix::process::kill_process(*pid, signal);
        }
        if signal == Signal::STOP {
            // kill(2) only queues the stop: a thread running on another
            // core may still finish the answer it is writing. Return once
            // every thread of the tree is stopped, so that "frozen" holds.
            wait_stopped(std::iter::once(self.pgid).chain(tree));
        }
        Ok(())
    }

    /// Sends `signal` to the server process alone (not its children).
    pub(crate) fn signal_leader(&self, signal: Signal) -> Result<()> {
        rustix::process::kill_process(self.pgid, signal)
            .map_err(std::io::Error::from)
            .context(|| format!("sending {signal:?} to {}", self.what))
    }

    /// The exit status, if the server has exited (reaps it).
    pub(crate) fn try_exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// An [`Error::Exited`] describing how the server ended, with its log tail.
    pub(crate) fn exited_error(&mut self) -> Error {
        let status = match self.try_exited() {
            Some(status) => status.to_string(),
            None => "still running".into(),
        };
        Error::Exited {
            what: self.what.clone(),
            status,
            log: self.log.clone(),
            tail: log_tail(&self.log, 30),
        }
    }

    /// Asks the server to stop with `signal` and waits up to `timeout` for it
    /// to exit; kills the group if it does not.
    pub(crate) async fn stop(&mut self, signal: Signal, timeout: Duration) -> Result<()> {
        if self.try_exited().is_none() {
            // A frozen server cannot act on a signal until it is thawed.
            let _ = self.signal(Signal::CONT);
            self.signal_leader(signal)?;
            let deadline = tokio::time::Instant::now() + timeout;
            while self.try_exited().is_none() {
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(what = %self.what, "did not stop in {timeout:?}; killing it");
                    self.kill();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        self.kill();
        Ok(())
    }

    /// Kills the server and everything it forked at once (SIGKILL) and
    /// reaps it.
    pub(crate) fn kill(&mut self) {
        let _ = self.signal(Signal::KILL);
        let _ = self.child.wait();
        if let Some((mut watcher, stdin)) = self.watcher.take() {
            drop(stdin);
            let _ = watcher.wait();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `sh` blocks reading a pipe whose only writer is this process; when the
/// pipe closes (this process exited or dropped the handle) it kills the
/// group and the server's direct children (PostgreSQL's backends). It runs in a group of its own so a terminal's Ctrl-C, which this
/// process handles, does not reach it.
fn spawn_watcher(pgid: Pid) -> Result<(Child, ChildStdin)> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(
            "read _ignored; kids=$(cat /proc/\"$1\"/task/*/children 2>/dev/null); \
             kill -9 -\"$1\" $kids 2>/dev/null; exit 0",
        )
        .arg("testkit-watcher")
        .arg(pgid.as_raw_nonzero().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context(|| "starting the process watcher (sh)".into())?;
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| Error::Usage("watcher has no stdin".into()))?;
    Ok((child, stdin))
}

/// Every live process descended from `root`, found by reading the parent
/// pid of each process in `/proc`.
/// Waits (at most 2 s) until every thread of `pids` is stopped (state `T`
/// or `t` in `/proc/<pid>/task/<tid>/stat`); threads that exited count as
/// stopped.
fn wait_stopped(pids: impl Iterator<Item = Pid>) {
    let pids: Vec<i32> = pids.map(|p| p.as_raw_nonzero().get()).collect();
    let stopped = |pid: i32| {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return true;
        };
        tasks.filter_map(Result::ok).all(|task| {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                return true;
            };
            stat.rfind(')')
                .and_then(|end| stat[end + 1..].split_whitespace().next())
                .is_none_or(|state| matches!(state, "T" | "t" | "Z" | "X"))
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !pids.iter().all(|&pid| stopped(pid)) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn descendants(root: Pid) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: Vec<(i32, i32)> = entries
        .filter_map(|entry| {
            let pid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
            let after = &stat[stat.rfind(')')? + 1..];
            let ppid = after.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut found = vec![root.as_raw_nonzero().get()];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|&&(_, ppid)| ppid == parent)
                .map(|&(pid, _)| pid),
        );
        i += 1;
    }
    found
        .into_iter()
        .skip(1)
        .filter_map(Pid::from_raw)
        .collect()
}

/// The last `lines` lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(16 * 1024);
    let mut buf = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut buf).is_err() {
        return format!("(unreadable log at {})", path.display());
    }
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs a helper command to completion, capturing its output for the error.
/// `display` is the command line shown in errors (without secrets).
pub(crate) async fn run_checked(mut cmd: Command, display: &str) -> Result<String> {
    cmd.stdin(Stdio::null());
    let display = display.to_owned();
    let output = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .map_err(|e| Error::Usage(format!("{display}: {e}")))?
        .context(|| format!("running {display}"))?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    if output.status.success() {
        Ok(text)
    } else {
        let tail: Vec<&str> = text.lines().collect();
        Err(Error::Command {
            command: display,
            status: output.status.to_string(),
            output: tail[tail.len().saturating_sub(30)..].join("\n"),
        })
    }
}
