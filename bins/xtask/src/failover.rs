//! `cargo xtask failover`: a controlled promotion on the running stack, the
//! operator's local playbook. The `up` process owns the PostgreSQL nodes,
//! so it does the work: `failover` signals it (SIGUSR1) and prints the
//! steps it writes to `.stack/failover.log`, each with its timing:
//!
//! 1. fence the primary (a clean stop: it acknowledges nothing more) and
//!    promote the replica that replayed the most WAL, once it has replayed
//!    all of the old primary's;
//! 2. point OpenBao at the new primary (the database secrets engine creates
//!    and renews the services' users there; `secret/store-service/database`
//!    names it);
//! 3. wait until the services write to the new primary: a `PUT` of a store
//!    that does not exist is answered 404 only after its `UPDATE` ran on a
//!    writable primary (no data is changed);
//! 4. rejoin the old primary as a streaming standby of the new one.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use testkit::PgCluster;
use tokio::time::Instant;

/// The progress file `up` writes and `failover` reads.
pub(crate) const LOG_FILE: &str = "failover.log";

/// The last line of a failover that worked starts with this.
const DONE: &str = "done";
/// The last line of one that did not.
const FAILED: &str = "failed";

/// `cargo xtask failover`: asks the `up` running from `dir` to fail over,
/// and prints its steps until it is done.
pub(crate) async fn request(dir: &Path) -> anyhow::Result<()> {
    let pid = crate::files::running_pid(&dir.join(crate::files::PID_FILE))
        .with_context(|| format!("no stack running from {} (`cargo xtask up`)", dir.display()))?;
    let log = dir.join(LOG_FILE);
    let _ = std::fs::remove_file(&log);
    let pid = rustix::process::Pid::from_raw(pid).context("bad pid")?;
    rustix::process::kill_process(pid, rustix::process::Signal::USR1)
        .context("signalling `xtask up`")?;
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut printed = 0;
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        for line in &lines[printed.min(lines.len())..] {
            println!("{line}");
        }
        printed = lines.len();
        if let Some(last) = lines.last() {
            if last.starts_with(DONE) {
                return Ok(());
            }
            if last.starts_with(FAILED) {
                bail!("the failover did not complete (see above)");
            }
        }
        if Instant::now() > deadline {
            bail!("no answer from `xtask up` within 180 s ({})", log.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes each step to stderr and to the progress file.
struct Steps {
    file: std::fs::File,
    started: Instant,
}

impl Steps {
    fn say(&mut self, line: &str) {
        eprintln!("xtask: failover: {line}");
        let _ = writeln!(self.file, "{line}");
        let _ = self.file.flush();
    }
}

/// Runs the failover in the `up` process (on SIGUSR1): `repoint` points
/// OpenBao at the new primary (run after the promotion), `store_service` is
/// the port of a running store service, if any. Every step is reported;
/// an error ends it with a `failed` line and leaves the stack running.
pub(crate) async fn run(
    dir: &Path,
    pg: &PgCluster,
    repoint: impl Future<Output = anyhow::Result<()>>,
    store_service: Option<u16>,
) -> anyhow::Result<()> {
    let file = std::fs::File::create(dir.join(LOG_FILE)).context("creating the failover log")?;
    let mut steps = Steps {
        file,
        started: Instant::now(),
    };
    match playbook(&mut steps, pg, repoint, store_service).await {
        Ok(line) => {
            steps.say(&format!(
                "{DONE} in {} ms: {line}",
                steps.started.elapsed().as_millis()
            ));
            Ok(())
        }
        Err(error) => {
            steps.say(&format!("{FAILED}: {error:#}"));
            Err(error)
        }
    }
}

async fn playbook(
    steps: &mut Steps,
    pg: &PgCluster,
    repoint: impl Future<Output = anyhow::Result<()>>,
    store_service: Option<u16>,
) -> anyhow::Result<String> {
    let step = Instant::now();
    let (old, new) = pg
        .fence_and_promote()
        .await
        .context("fencing the primary and promoting a replica")?;
    steps.say(&format!(
        "1/4 {old} fenced (clean stop), {new} replayed all its WAL and was promoted: {} ms",
        step.elapsed().as_millis()
    ));
    let step = Instant::now();
    repoint
        .await
        .with_context(|| format!("pointing OpenBao at {new}"))?;
    steps.say(&format!(
        "2/4 OpenBao's database engine and secret/store-service/database point at {new}: {} ms",
        step.elapsed().as_millis()
    ));
    let step = Instant::now();
    match store_service {
        Some(port) => {
            services_write(port).await?;
            steps.say(&format!(
                "3/4 store-service writes to {new} (a PUT of an absent store reached its UPDATE): {} ms",
                step.elapsed().as_millis()
            ));
        }
        None => steps.say("3/4 no service running: nothing to wait for"),
    }
    let step = Instant::now();
    pg.restart_as_standby(old)
        .await
        .with_context(|| format!("rejoining {old} as a standby of {new}"))?;
    steps.say(&format!(
        "4/4 {old} streams from {new}: {} ms",
        step.elapsed().as_millis()
    ));
    Ok(format!("primary {new}, standby {old}"))
}

/// Waits (60 s at most) until the store service at `port` runs a write on
/// a writable primary: `PUT /api/stores/<absent id>` answers 404 only after
/// its `UPDATE ... WHERE id` ran there (503 while it has none).
async fn services_write(port: u16) -> anyhow::Result<()> {
    let addr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(60);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let absent = format!("00000000-0000-4000-8000-{:012x}", nanos & 0xFFFF_FFFF_FFFF);
    let request = crate::load::with_json(
        "PUT",
        &format!("/api/stores/{absent}"),
        "If-Match: \"1\"\r\n",
        r#"{"status": "ACTIVE"}"#,
    );
    loop {
        let last = match crate::load::once(addr, &request).await {
            Ok(response) if response.status == 404 => return Ok(()),
            Ok(response) => format!("answered {}", response.status),
            Err(error) => format!("{error:#}"),
        };
        if Instant::now() > deadline {
            bail!("store-service did not write within 60 s (last: {last})");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
