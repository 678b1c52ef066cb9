//! `chaos` (`cargo xtask chaos [--duration 5m] [--seed N] [--gateways N]
//! [--rate R] [--clients N] [--faults A,B]`): the whole platform under an open-loop load while every
//! component fails in turn, then an audit of every acknowledged write.
//!
//! The stack is its own, on free ports: PostgreSQL (a primary and two
//! streaming replicas, commits synchronous to one), OpenBao, store-service
//! and `--gateways` gateways (default 2) sharing a write queue on a 3-node
//! NATS JetStream cluster. The faults come from a schedule derived from
//! the seed ([`faults`]); the clients are in [`workload`], the checks in
//! [`audit`]. The last line of the report is
//!
//! `chaos: faults=F acknowledged=A queued=Q lost=L duplicated=D unexplained_5xx=E`
//!
//! and the exit status is non-zero unless L, D and E are 0.

mod audit;
mod faults;
mod report;
mod workload;

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use system_tests::{Platform, Queue};
use tokio::time::Instant;

use crate::faults::{Schedule, Window};
use crate::workload::Clients;

/// The clients' scopes.
const SCOPE: &str = "stores:read stores:write stores:secrets";
/// The load before the first fault.
const WARMUP: Duration = Duration::from_secs(5);
/// The pause between one fault's recovery and the next fault.
const GAP: Duration = Duration::from_secs(2);

const USAGE: &str = "usage: chaos [--duration 5m] [--seed N] [--gateways N] [--rate R]

  --duration D   how long the load runs, faults included (s or m suffix; default 5m)
  --seed N       the seed of the fault schedule and of the workload (default 1)
  --gateways N   gateways sharing the NATS JetStream write queue (default 2)
  --rate R       requests started per second by the clients (default 30)
  --clients N    clients sharing that load, each with its own token and subject (default 4)
  --faults A,B   only these faults (default: all of pg-primary-kill, pg-primary-freeze,
                 openbao-restart, openbao-freeze, store-service-freeze, store-service-kill,
                 gateway-kill, nats-node-kill, db-credentials-revoked)
  --logs DIR     copy store-service's and the gateways' logs there at the end
  --plan         print the seed's first faults (kind and hold) and stop";

/// The command line.
#[derive(Debug)]
struct Options {
    duration: Duration,
    seed: u64,
    gateways: usize,
    rate: u32,
    /// Clients (subjects) sharing the load.
    clients: usize,
    /// Only these kinds (all when empty).
    faults: Vec<faults::Kind>,
    /// Where the services' logs are copied at the end.
    logs: Option<std::path::PathBuf>,
    /// Print the schedule and stop.
    plan: bool,
}

impl Options {
    fn parse(args: &[String]) -> anyhow::Result<Options> {
        let mut options = Options {
            duration: Duration::from_secs(300),
            seed: 1,
            gateways: 2,
            rate: 30,
            clients: 4,
            faults: Vec::new(),
            logs: None,
            plan: false,
        };
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            if flag == "--plan" {
                options.plan = true;
                continue;
            }
            let value = args.next();
            let value = || value.with_context(|| format!("{flag} needs a value\n\n{USAGE}"));
            match flag.as_str() {
                "--duration" => options.duration = parse_duration(value()?)?,
                "--seed" => options.seed = value()?.parse().context("--seed: a number")?,
                "--gateways" => {
                    options.gateways = value()?.parse().context("--gateways: a number")?;
                }
                "--rate" => options.rate = value()?.parse().context("--rate: a number")?,
                "--clients" => {
                    options.clients = value()?.parse().context("--clients: a number")?;
                }
                "--logs" => options.logs = Some(value()?.into()),
                "--faults" => {
                    options.faults = value()?
                        .split(',')
                        .map(|name| {
                            faults::Kind::ALL
                                .into_iter()
                                .find(|k| k.name() == name)
                                .with_context(|| format!("--faults: no fault `{name}`\n\n{USAGE}"))
                        })
                        .collect::<anyhow::Result<_>>()?;
                }
                "--help" | "-h" => bail!("{USAGE}"),
                other => bail!("unknown argument `{other}`\n\n{USAGE}"),
            }
        }
        if options.gateways == 0 || options.rate == 0 || options.clients == 0 {
            bail!("--gateways, --rate and --clients must be at least 1");
        }
        if options.duration < WARMUP + faults::SLOT {
            bail!(
                "--duration must leave room for one fault: at least {} s",
                (WARMUP + faults::SLOT).as_secs()
            );
        }
        Ok(options)
    }
}

/// `90`, `90s` or `5m`.
fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let (number, unit) = match text.strip_suffix('m') {
        Some(minutes) => (minutes, 60),
        None => (text.strip_suffix('s').unwrap_or(text), 1),
    };
    let number: u64 = number
        .parse()
        .with_context(|| format!("--duration: `{text}` is not like 90s or 5m"))?;
    Ok(Duration::from_secs(number * unit))
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = Options::parse(&args).and_then(|options| {
        if options.plan {
            let mut schedule = Schedule::new(options.seed, &options.faults);
            for _ in 0..faults::Kind::ALL.len() {
                let (kind, hold, _) = schedule.next();
                // A closed pipe (`| head`) ends the listing, not a panic.
                if writeln!(std::io::stdout(), "{kind} {:.1} s", hold.as_secs_f64()).is_err() {
                    break;
                }
            }
            return Ok(true);
        }
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the tokio runtime")?
            .block_on(run(options))
    });
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("chaos: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The run; `Ok(false)` when the audit found a lost or duplicated write or
/// an unexplained 5xx.
async fn run(options: Options) -> anyhow::Result<bool> {
    eprintln!("chaos: starting the stack ({options:?})");
    let mut platform = Platform::start_with(
        2,
        Queue::JetStream {
            gateways: options.gateways,
        },
    )
    .await;
    let primary = platform.pg.primary();
    for replica in platform.pg.replicas() {
        platform.pg.wait_streaming(replica).await?;
    }
    platform.pg.set_synchronous_standbys(primary, 1).await?;
    // Each client its own subject: the queue's per-subject bound and the
    // idempotency keys' scope are per client, as with real consumers.
    let issuer = testkit::OidcClient::new(platform.bao.addr(), platform.bao.root_token())?;
    let mut tokens = Vec::new();
    for client in 0..options.clients {
        tokens.push(
            issuer
                .subject_token(&platform.issuer, &format!("chaos-{client}"), SCOPE)
                .await
                .context("a client's token")?,
        );
    }
    let token = tokens[0].clone();

    let started = Instant::now();
    let clients = Arc::new(Clients::new(
        platform.gateway_bases.clone(),
        tokens,
        options.seed,
        started,
    ));
    let workload = tokio::spawn(workload::drive(
        Arc::clone(&clients),
        options.rate,
        started + options.duration,
    ));

    tokio::time::sleep(WARMUP).await;
    let mut schedule = Schedule::new(options.seed, &options.faults);
    let mut windows: Vec<Window> = Vec::new();
    while started.elapsed() + faults::SLOT <= options.duration {
        let (kind, hold, pick) = schedule.next();
        eprintln!(
            "chaos: {:>6.1} s: {kind} for {:.1} s",
            started.elapsed().as_secs_f64(),
            hold.as_secs_f64()
        );
        let window = faults::inject(&mut platform, kind, hold, pick, started)
            .await
            .with_context(|| format!("injecting {kind}"))?;
        eprintln!(
            "chaos: {:>6.1} s: {kind} ({}) healed at {:.1} s, everything ready",
            window.recovered.as_secs_f64(),
            window.target,
            window.healed.as_secs_f64(),
        );
        windows.push(window);
        tokio::time::sleep(GAP).await;
    }
    eprintln!("chaos: faults done; waiting for the clients' requests and queued writes");
    workload.await.context("the workload task")?;
    faults::ready(&platform).await?;

    let ledger = std::mem::take(&mut *clients.ledger.lock().expect("ledger"));
    let findings = audit::audit(&platform, &token, &ledger, &windows).await?;
    print!("{}", report::render(&ledger, &windows, &findings));
    if let Some(dir) = &options.logs {
        copy_logs(&platform, dir)?;
    }
    Ok(findings.lost.is_empty()
        && findings.duplicated.is_empty()
        && findings.unexplained.is_empty())
}

/// Copies the services' logs into `dir`.
fn copy_logs(platform: &Platform, dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut logs = vec![("store-service.log".to_owned(), platform.store.log())];
    for (i, gateway) in platform.gateways.iter().enumerate() {
        logs.push((format!("gateway-{i}.log"), gateway.log()));
    }
    for (name, log) in logs {
        std::fs::copy(log, dir.join(&name))
            .with_context(|| format!("copying {}", log.display()))?;
    }
    Ok(())
}
