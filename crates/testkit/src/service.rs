//! The workspace's own binaries as child processes, for the binaries' tests
//! and the whole-system tests: find the workspace, build a binary once per
//! test process, launch it with its environment, wait until it is ready, and
//! show its log when something fails. Also the one "eventually" poller.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Mutex;
use std::time::Duration;

use rustix::process::Signal;

use crate::error::IoContext;
use crate::process::{ServerProcess, log_tail};
use crate::{Error, Result};

/// How often [`eventually`] and [`Service::wait_ready`] look again.
const POLL: Duration = Duration::from_millis(50);
/// How long [`Service::start`] waits for `GET /ready` to answer 200.
pub const READY_WITHIN: Duration = Duration::from_secs(120);
/// How many log lines an error or a failed test shows.
const TAIL_LINES: usize = 40;

/// The workspace's root folder (the one holding the root `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let testkit = Path::new(env!("CARGO_MANIFEST_DIR"));
    testkit.ancestors().nth(2).unwrap_or(testkit).to_path_buf()
}

/// The text of `relative` (a path from the workspace root), e.g. the
/// production policy `deploy/vault/policies/store-service.hcl`.
pub fn workspace_file(relative: &str) -> Result<String> {
    let path = workspace_root().join(relative);
    std::fs::read_to_string(&path).context(|| format!("reading {}", path.display()))
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `within`;
/// [`Error::Timeout`] naming `what` otherwise. A deadline, not a timed
/// assertion: a slow machine only makes it wait longer. It runs on tokio's
/// clock, so a test with `tokio::time::pause()` does not wait for real.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: what.to_owned(),
                after: within,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The binary `package` of this workspace (`cargo build -p <package> --bin
/// <package>`, with the package's own features, as its Dockerfile builds
/// it), built once per test process, with the profile and target folder
/// of the running test executable or binary (cargo gives a package's tests
/// only that package's binaries). Blocking: call it from `spawn_blocking` in async
/// code.
pub fn build_binary(package: &str) -> Result<PathBuf> {
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    // Held through the build: two tests asking at once build once.
    let mut built = BUILT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(path) = built.get(package) {
        return Ok(path.clone());
    }
    // target/<profile>/deps/<test> (a test) or target/<profile>/<bin> (a
    // binary, such as the chaos run) → target/<profile>
    let exe = std::env::current_exe().context(|| "finding the test executable".into())?;
    let parent = exe.parent();
    let profile_dir = match parent {
        Some(dir) if dir.file_name().is_some_and(|n| n == "deps") => dir.parent(),
        _ => parent,
    }
    .ok_or_else(|| Error::Usage(format!("{} is not in target/<profile>", exe.display())))?
    .to_path_buf();
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| Error::Usage(format!("{} has no target folder", profile_dir.display())))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["build", "--quiet", "-p", package, "--bin", package])
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(workspace_root());
    // target/debug is the `dev` profile; any other folder is named after
    // its profile (release, or a custom one).
    let mut display = format!("cargo build -p {package} --bin {package}");
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some(profile) => {
            command.args(["--profile", profile]);
            display.push_str(&format!(" --profile {profile}"));
        }
    }
    let status = command.status().context(|| format!("running {display}"))?;
    if !status.success() {
        return Err(Error::Command {
            command: display,
            status: status.to_string(),
            output: "(cargo's output is above)".into(),
        });
    }
    let binary = profile_dir.join(package);
    if !binary.is_file() {
        return Err(Error::Usage(format!(
            "{display} succeeded but {} is missing",
            binary.display()
        )));
    }
    built.insert(package.to_owned(), binary.clone());
    Ok(binary)
}

/// How to launch a service: the program, its arguments and its
/// environment. Kept, so that [`Service::restart`] launches the same.
/// `Debug` shows the variables' names only (they carry secrets).
#[derive(Clone)]
pub struct ServiceCommand {
    program: PathBuf,
    args: Vec<OsString>,
    /// `None`: removed from the inherited environment.
    envs: Vec<(OsString, Option<OsString>)>,
    /// Start from an empty environment instead of this process's.
    clear_env: bool,
    current_dir: Option<PathBuf>,
}

impl std::fmt::Debug for ServiceCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.envs.iter().map(|(name, _)| name).collect();
        f.debug_struct("ServiceCommand")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("env", &names)
            .field("clear_env", &self.clear_env)
            .field("current_dir", &self.current_dir)
            .finish()
    }
}

impl ServiceCommand {
    /// Runs `program` (e.g. from [`build_binary`]).
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            envs: Vec::new(),
            clear_env: false,
            current_dir: None,
        }
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, name: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((name.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    /// Removes a variable this process would pass on (e.g. `VAULT_ADDR`).
    pub fn env_remove(mut self, name: impl AsRef<OsStr>) -> Self {
        self.envs.push((name.as_ref().to_owned(), None));
        self
    }

    /// Passes none of this process's environment, only the variables set
    /// with [`ServiceCommand::env`] (as a container would), and
    /// `LLVM_PROFILE_FILE` when set: under `cargo xtask coverage` the
    /// child writes its coverage profile there.
    pub fn env_clear(mut self) -> Self {
        self.clear_env = true;
        self
    }

    /// Runs the program in `dir`.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// The program's name, for messages.
    fn name(&self) -> String {
        self.program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.program.display().to_string())
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        if self.clear_env {
            cmd.env_clear();
            if let Some(profile) = std::env::var_os("LLVM_PROFILE_FILE") {
                cmd.env("LLVM_PROFILE_FILE", profile);
            }
        }
        for (name, value) in &self.envs {
            match value {
                Some(value) => cmd.env(name, value),
                None => cmd.env_remove(name),
            };
        }
        if let Some(dir) = &self.current_dir {
            cmd.current_dir(dir);
        }
        cmd
    }

    /// Runs the program to completion (a one-shot command such as
    /// `store-service migrate`); its output is in the error when it fails.
    pub async fn run(&self) -> Result<String> {
        let display = format!("{} {:?}", self.name(), self.args);
        crate::process::run_checked(self.command(), &display).await
    }
}

/// A service launched from a [`ServiceCommand`]: a child process in a group
/// of its own, with stdout and stderr in a log file, killed (with what it
/// forked) when dropped or when this process dies. When a test panics
/// while it runs, the last lines of its log are printed.
#[derive(Debug)]
pub struct Service {
    what: String,
    command: ServiceCommand,
    process: Option<ServerProcess>,
    log: PathBuf,
    ready_url: Option<String>,
    /// Holds the log's folder.
    _dir: tempfile::TempDir,
}

impl Service {
    /// Launches `command` and waits until `GET ready_url` answers 200
    /// (at most [`READY_WITHIN`]); fails at once, with the log's tail, if
    /// the process exits first.
    pub async fn start(command: ServiceCommand, ready_url: impl Into<String>) -> Result<Self> {
        let mut service = Self::spawn(command)?;
        service.ready_url = Some(ready_url.into());
        service.wait_ready().await?;
        Ok(service)
    }

    /// Launches `command` without waiting for anything.
    pub fn spawn(command: ServiceCommand) -> Result<Self> {
        let what = command.name();
        let dir = tempfile::Builder::new()
            .prefix(&format!("testkit-{what}-"))
            .tempdir()
            .context(|| format!("creating a folder for {what}'s log"))?;
        let log = dir.path().join(format!("{what}.log"));
        let process = ServerProcess::spawn(&what, command.command(), &log)?;
        Ok(Self {
            what,
            command,
            process: Some(process),
            log,
            ready_url: None,
            _dir: dir,
        })
    }

    /// Polls the readiness URL given to [`Service::start`] until it answers
    /// 200 (at most [`READY_WITHIN`]).
    pub async fn wait_ready(&mut self) -> Result<()> {
        let Some(url) = self.ready_url.clone() else {
            return Err(Error::Usage(format!(
                "{}: no readiness URL (started with `spawn`)",
                self.what
            )));
        };
        let http = crate::http_client()?;
        let deadline = tokio::time::Instant::now() + READY_WITHIN;
        loop {
            if let Some(process) = self.process.as_mut()
                && process.try_exited().is_some()
            {
                return Err(process.exited_error());
            }
            if let Ok(answer) = http.get(&url).send().await
                && answer.status() == 200
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::NotReady {
                    what: self.what.clone(),
                    url,
                    after: READY_WITHIN,
                    log: self.log.clone(),
                    tail: self.log_tail(),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The log file (stdout and stderr, across restarts).
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The last lines of the log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log, TAIL_LINES)
    }

    /// The exit status, if the process has exited (or was stopped).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.process.as_mut().and_then(ServerProcess::try_exited)
    }

    /// Asks the service to stop (SIGTERM), waits up to `timeout`, then
    /// kills it. Its port refuses connections until [`Service::restart`].
    pub async fn stop(&mut self, timeout: Duration) -> Result<()> {
        if let Some(mut process) = self.process.take() {
            process.stop(Signal::TERM, timeout).await?;
        }
        Ok(())
    }

    /// Sends SIGTERM (what an orchestrator sends first) and waits up to
    /// `within` for the service to exit on its own; returns its exit
    /// status. [`Error::Timeout`] if it is still running then (it is
    /// killed).
    pub async fn terminate(&mut self, within: Duration) -> Result<ExitStatus> {
        let Some(mut process) = self.process.take() else {
            return Err(Error::Usage(format!("{} is not running", self.what)));
        };
        process.signal_leader(Signal::TERM)?;
        let what = format!("{} to exit after SIGTERM", self.what);
        let exited = eventually(&what, within, || {
            let status = process.try_exited();
            async move { status }
        })
        .await;
        // Reaps the watcher; also kills what the service left behind.
        process.kill();
        exited
    }

    /// Kills the service at once (SIGKILL), as a crash or `kill -9` would.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Freezes the service (SIGSTOP): its port accepts connections that are
    /// never answered, as a hung process.
    pub fn freeze(&self) -> Result<()> {
        self.running()?.signal(Signal::STOP)
    }

    /// Thaws a frozen service (SIGCONT).
    pub fn thaw(&self) -> Result<()> {
        self.running()?.signal(Signal::CONT)
    }

    fn running(&self) -> Result<&ServerProcess> {
        self.process
            .as_ref()
            .ok_or_else(|| Error::Usage(format!("{} is not running", self.what)))
    }

    /// Launches the same command again (after [`Service::stop`] or
    /// [`Service::kill`]; a running one is killed first), appending to the
    /// same log, and waits until ready when it was started with a readiness
    /// URL.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill();
        self.process = Some(ServerProcess::spawn(
            &self.what,
            self.command.command(),
            &self.log,
        )?);
        if self.ready_url.is_some() {
            self.wait_ready().await?;
        }
        Ok(())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- last lines of {} ({}) ---\n{}\n---",
                self.what,
                self.log.display(),
                self.log_tail()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_root_holds_the_workspace_manifest() {
        let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"), "{manifest}");
        assert!(workspace_file("no/such/file").is_err());
    }

    #[test]
    fn debug_shows_variable_names_not_values() {
        let command = ServiceCommand::new("/bin/true")
            .env("BAO_SECRET_ID", "s3cret-value")
            .env_remove("VAULT_ADDR");
        let text = format!("{command:?}");
        assert!(
            text.contains("BAO_SECRET_ID") && text.contains("VAULT_ADDR"),
            "{text}"
        );
        assert!(!text.contains("s3cret-value"), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn eventually_returns_the_first_value_or_times_out() {
        let mut calls = 0;
        let third = eventually("the third call", Duration::from_secs(5), || {
            calls += 1;
            let value = (calls == 3).then_some(calls);
            async move { value }
        })
        .await
        .unwrap();
        assert_eq!(third, 3);
        let err = eventually("never", Duration::from_secs(1), || async { None::<()> })
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("never"), "{err}");
    }

    #[tokio::test]
    async fn a_service_that_exits_fails_with_its_log() {
        let command = ServiceCommand::new("/bin/sh")
            .arg("-c")
            .arg("echo \"starting on $WHERE\"; exit 3")
            .env("WHERE", "port 1");
        let err = Service::start(command, "http://127.0.0.1:1/ready")
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("starting on port 1"), "{text}");
        assert!(text.contains('3'), "{text}");
    }

    #[tokio::test]
    async fn terminate_returns_how_the_service_exited() {
        let command = ServiceCommand::new("/bin/sh")
            .arg("-c")
            .arg("trap 'echo bye; exit 7' TERM; echo up; while :; do sleep 0.05; done");
        let mut service = Service::spawn(command).unwrap();
        let log = service.log().to_owned();
        eventually("the trap to be set", Duration::from_secs(30), || {
            let up = log_tail(&log, 5).contains("up");
            async move { up.then_some(()) }
        })
        .await
        .unwrap();
        let status = service.terminate(Duration::from_secs(30)).await.unwrap();
        assert_eq!(status.code(), Some(7));
        assert!(service.log_tail().contains("bye"));
        assert!(service.exited().is_none(), "no longer tracked");
    }
}
