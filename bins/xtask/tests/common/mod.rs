//! What the xtask tests share: the real `xtask` binary, a running `up
//! --no-services` on free ports in a temporary folder, and superuser
//! connections to its PostgreSQL nodes.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use tokio_postgres::NoTls;

/// The `xtask` binary with `args`.
pub fn xtask(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(args);
    cmd
}

/// A stack folder and the free ports of its servers.
pub struct Place {
    /// Holds the folder.
    _tmp: tempfile::TempDir,
    /// The stack folder.
    pub dir: PathBuf,
    /// PostgreSQL's ports: pg0, pg1.
    pub pg: [u16; 2],
    /// OpenBao's port.
    pub bao: u16,
}

impl Place {
    pub fn new() -> Place {
        let tmp = tempfile::tempdir().unwrap();
        Place {
            dir: tmp.path().join("stack"),
            _tmp: tmp,
            pg: [testkit::free_port().unwrap(), testkit::free_port().unwrap()],
            bao: testkit::free_port().unwrap(),
        }
    }

    /// `up --no-services` with `extra` arguments.
    pub fn up_command(&self, extra: &[&str]) -> Command {
        let ports = format!("{},{}", self.pg[0], self.pg[1]);
        let bao = self.bao.to_string();
        let mut args = vec![
            "up",
            "--no-services",
            "--dir",
            self.dir.to_str().unwrap(),
            "--pg-ports",
            &ports,
            "--bao-port",
            &bao,
        ];
        args.extend(extra);
        xtask(&args)
    }

    /// `up` with its services (built by `up` when needed) and `extra`
    /// arguments.
    pub fn up_services_command(&self, extra: &[&str]) -> Command {
        let ports = format!("{},{}", self.pg[0], self.pg[1]);
        let bao = self.bao.to_string();
        let mut args = vec![
            "up",
            "--dir",
            self.dir.to_str().unwrap(),
            "--pg-ports",
            &ports,
            "--bao-port",
            &bao,
        ];
        args.extend(extra);
        xtask(&args)
    }

    /// `xtask <command> --dir DIR` with `args`; its output.
    pub fn run(&self, command: &str, args: &[&str]) -> std::process::Output {
        let mut all = vec![command];
        all.extend(args);
        all.extend(["--dir", self.dir.to_str().unwrap()]);
        xtask(&all).output().expect("xtask runs")
    }

    /// A superuser connection to the node on `port`.
    pub async fn psql(&self, port: u16) -> tokio_postgres::Client {
        let url = format!(
            "postgres://postgres:{}@127.0.0.1:{port}/postgres",
            env_var(&self.dir, "PGPASSWORD")
        );
        let (client, connection) = tokio_postgres::connect(&url, NoTls)
            .await
            .expect("TCP login with the stack's password");
        tokio::spawn(connection);
        client
    }

    /// The postmaster's pid of node `node` (`pg0`, `pg1`), if it runs.
    pub fn postmaster(&self, node: &str) -> Option<i32> {
        let text =
            std::fs::read_to_string(self.dir.join("pg").join(node).join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }
}

/// A running `up --no-services`, stopped with Ctrl-C when dropped (also
/// when an assertion fails, so that no server outlives the test).
pub struct Stack {
    child: Option<Child>,
    /// Every line `up` wrote to stderr so far.
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Stack {
    /// Starts `up` (with `extra` arguments) and waits (bounded) for its
    /// "stack ready" line.
    pub fn up(place: &Place, extra: &[&str]) -> Stack {
        Self::start(place.up_command(extra), Duration::from_secs(120))
    }

    /// Starts `up` with its services (and `extra` arguments) and waits
    /// (bounded, building them included) for its "stack ready" line.
    pub fn up_services(place: &Place, extra: &[&str]) -> Stack {
        Self::start(place.up_services_command(extra), Duration::from_secs(900))
    }

    fn start(mut command: Command, timeout: Duration) -> Stack {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("xtask runs");
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let seen = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[up] {line}");
                let ready = line.contains("stack ready");
                seen.lock().unwrap().push(line);
                if ready {
                    let _ = tx.send(());
                }
            }
        });
        let stack = Stack {
            child: Some(child),
            lines,
        };
        if rx.recv_timeout(timeout).is_err() {
            panic!("`xtask up` did not report ready within {timeout:?}");
        }
        stack
    }

    /// The lines `up` wrote that contain `text`.
    pub fn said(&self, text: &str) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(text))
            .cloned()
            .collect()
    }

    /// Waits until `up` ends on its own (after `cargo xtask down`, say).
    pub fn wait(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("up was running");
        child.wait().expect("waiting for up")
    }

    /// Ctrl-C, as a user stops `up`: a clean stop.
    pub fn stop(mut self) {
        let status = self.interrupt().expect("up was running");
        assert!(status.success(), "Ctrl-C is a clean stop: {status}");
    }

    fn interrupt(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        child.wait().ok()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.interrupt();
    }
}

/// `NAME`'s value in the stack's `env.sh`.
pub fn env_var(dir: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(dir.join("env.sh")).unwrap();
    let line = text
        .lines()
        .flat_map(|l| l.trim_start_matches("export ").split(' '))
        .find(|kv| kv.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in env.sh"));
    line[name.len() + 1..].trim_matches('\'').to_owned()
}

/// `bao ARGS` against the OpenBao of the stack in `dir`, as JSON.
pub fn bao(dir: &Path, args: &[&str]) -> serde_json::Value {
    let bin = testkit::bao_binary().expect("bao is installed");
    let out = Command::new(bin)
        .args(args)
        .env("BAO_ADDR", env_var(dir, "BAO_ADDR"))
        .env("BAO_TOKEN", env_var(dir, "BAO_TOKEN"))
        .output()
        .expect("bao runs");
    assert!(
        out.status.success(),
        "bao {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("bao prints JSON")
}
