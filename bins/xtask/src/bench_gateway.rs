//! `cargo xtask bench gateway`: the same load on `GET /api/stores/{id}`
//! directly against store-service, through the gateway (JWT verified,
//! breaker, rate limit set high), and through nginx as a plain reverse
//! proxy with upstream keep-alive (installed with apt when missing).
//!
//! One run, on a throw-away stack (PostgreSQL primary + replica, OpenBao
//! with the database engine, Transit and the identity token issuer),
//! release builds of store-service and the gateway.
//!
//! A **concurrency sweep**: `--connections 64,1024,4000` measures every
//! target at every level (the load generator raises its open-file limit to
//! the hard limit). For each target and level: a warm-up, then the load
//! generator ([`crate::load`]) for `--duration` on that many keep-alive
//! connections. Each level prints req/s, p50, p99, errors, the ratios to
//! the direct run, the p99 the proxy adds, the proxy's CPU per request,
//! and the memory of the process serving it (nginx: master and workers):
//! idle, peak while loaded, 5 s after the load, how long until it is back
//! within 1.5× its idle RSS (60 s at most), and memory per connection
//! `(peak − idle) / connections`. The highest level ends with two lines to
//! compare runs by:
//!
//! ```text
//! sweep: connections=N gateway_kb_per_conn=X gateway_rss_mb=A nginx_rss_mb=B gateway_vs_nginx_rps=R gateway_after_load_ratio=Q
//! sweep: connections=N service_kb_per_conn=X service_rss_mb=A nginx_rss_mb=B service_vs_nginx_rps=R service_after_load_ratio=Q
//! ```
//!
//! (`after_load_ratio`: RSS 5 s after the load over idle RSS.) The load
//! average before the run is printed too: a busy machine skews every
//! figure.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use testkit::{OpenBao, PgCluster};

use crate::bench_api::{
    Service, cpu_ticks, parse_duration, parse_number, read_rss, seed, seeded_id, temporary_stack,
};
use crate::load::{self, Report, Rng, Workload};
use crate::stack::{self, APP, DATABASE, GatewayLimits};
use crate::tools;

const USAGE: &str = "usage: cargo xtask bench gateway [--connections 64[,1024,4000]] [--duration 10s] [--rows 1000] [--no-build]";

/// What `bench gateway` was asked for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GatewayOptions {
    /// Keep-alive connections of the load generator, one level each.
    connections: Vec<usize>,
    /// How long each target is measured.
    duration: Duration,
    /// Rows seeded (the ids drawn from).
    rows: u64,
    /// Use the release binaries already built.
    no_build: bool,
    /// Measure the gateway too (`bench api`'s sweep: the store service and
    /// nginx only).
    with_gateway: bool,
}

impl GatewayOptions {
    pub(crate) fn parse(args: &[String]) -> anyhow::Result<GatewayOptions> {
        let mut options = GatewayOptions {
            connections: vec![64],
            duration: Duration::from_secs(10),
            rows: 1000,
            no_build: false,
            with_gateway: true,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            if arg == "--no-build" {
                options.no_build = true;
                continue;
            }
            let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--connections" => {
                    options.connections = value()?
                        .split(',')
                        .map(parse_number)
                        .collect::<anyhow::Result<_>>()?;
                }
                "--duration" => options.duration = parse_duration(value()?)?,
                "--rows" => options.rows = parse_number(value()?)?,
                other => bail!("unexpected argument `{other}`\n\n{USAGE}"),
            }
        }
        if options.connections.is_empty() || options.connections.contains(&0) || options.rows == 0 {
            bail!("--connections and --rows must be at least 1");
        }
        Ok(options)
    }

    /// `bench api --connections A,B,...`: the same sweep on the store
    /// service directly and through nginx, without the gateway.
    pub(crate) fn service_sweep(args: &[String]) -> anyhow::Result<GatewayOptions> {
        let mut options = Self::parse(args)?;
        options.with_gateway = false;
        Ok(options)
    }
}

/// `GET /api/stores/{id}` of a random seeded row, with a bearer token when
/// going through the gateway.
struct ById {
    rng: Rng,
    rows: u64,
    authorization: Arc<str>,
}

impl Workload for ById {
    fn request(&mut self) -> Vec<u8> {
        let n = self.rng.between_1_and(self.rows);
        format!(
            "GET /api/stores/{} HTTP/1.1\r\nHost: 127.0.0.1\r\n{}\r\n",
            seeded_id(n),
            self.authorization
        )
        .into_bytes()
    }
}

/// CPU ticks (1/100 s) used so far by `pid` and its direct children (the
/// nginx workers).
fn tree_ticks(pid: u32) -> u64 {
    let mut total = cpu_ticks(&pid.to_string()).unwrap_or(0);
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return total;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(child) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // After the command: state, then ppid.
        let parent = stat
            .rfind(')')
            .and_then(|at| stat[at + 1..].split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if parent == Some(pid) {
            total += cpu_ticks(child).unwrap_or(0);
        }
    }
    total
}

/// nginx as a plain reverse proxy: keep-alive upstream, no access log.
fn nginx_config(dir: &Path, listen: u16, upstream: SocketAddr) -> String {
    format!(
        "worker_processes auto;\n\
         daemon off;\n\
         pid {dir}/nginx.pid;\n\
         error_log {dir}/nginx-error.log warn;\n\
         worker_rlimit_nofile 20000;\n\
         events {{ worker_connections 9000; }}\n\
         http {{\n\
           access_log off;\n\
           client_body_temp_path {dir}/body;\n\
           proxy_temp_path {dir}/proxy;\n\
           fastcgi_temp_path {dir}/fastcgi;\n\
           uwsgi_temp_path {dir}/uwsgi;\n\
           scgi_temp_path {dir}/scgi;\n\
           upstream store {{ server {upstream}; keepalive 128; }}\n\
           server {{\n\
             listen 127.0.0.1:{listen};\n\
             location / {{\n\
               proxy_pass http://store;\n\
               proxy_http_version 1.1;\n\
               proxy_set_header Connection \"\";\n\
               proxy_set_header Host $host;\n\
               proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
             }}\n\
           }}\n\
         }}\n",
        dir = dir.display()
    )
}

/// nginx's binary, installed with apt when missing.
fn ensure_nginx() -> anyhow::Result<std::path::PathBuf> {
    for candidate in ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(candidate).is_file() {
            return Ok(candidate.into());
        }
    }
    eprintln!("xtask: installing nginx (apt-get install nginx-light or nginx)");
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
    };
    let _ = apt(&["update", "-qq"]);
    let installed = apt(&[
        "install",
        "-y",
        "-qq",
        "--no-install-recommends",
        "nginx-light",
    ])
    .map(|s| s.success())
    .unwrap_or(false)
        || apt(&["install", "-y", "-qq", "--no-install-recommends", "nginx"])
            .map(|s| s.success())
            .unwrap_or(false);
    if !installed || !Path::new("/usr/sbin/nginx").is_file() {
        bail!("nginx is not installed and `apt-get install nginx` failed");
    }
    // The package may start a system nginx on port 80: not ours to keep.
    let _ = Command::new("sh")
        .args([
            "-c",
            "command -v service >/dev/null && service nginx stop >/dev/null 2>&1 || true",
        ])
        .status();
    Ok("/usr/sbin/nginx".into())
}

/// The release store-service and gateway binaries: built, or (with
/// `--no-build`) the ones already there.
pub(crate) fn release_binaries(
    no_build: bool,
) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
    let (store_bin, gateway_bin) = if no_build {
        (
            stack::service_binary(APP, true),
            stack::service_binary("gateway", true),
        )
    } else {
        (
            stack::build_service(APP, true)?,
            stack::build_service("gateway", true)?,
        )
    };
    for binary in [&store_bin, &gateway_bin] {
        if !binary.is_file() {
            bail!("{} is missing: run without --no-build", binary.display());
        }
    }
    Ok((store_bin, gateway_bin))
}

pub(crate) async fn run(options: GatewayOptions) -> anyhow::Result<()> {
    let tools = tools::ensure()?;
    let nginx = ensure_nginx()?;
    let (store_bin, gateway_bin) = release_binaries(options.no_build)?;
    let (pg, bao) = temporary_stack(&tools).await?;
    let outcome = measure(
        &options,
        &tools,
        (&store_bin, &gateway_bin, &nginx),
        &pg,
        &bao,
    )
    .await;
    let _ = bao.stop().await;
    let _ = pg.shutdown().await;
    outcome
}

/// Starts `cmd` logging to `<dir>/<name>.log`, killed on drop.
pub(crate) fn spawn_logged(mut cmd: Command, dir: &Path, name: &str) -> anyhow::Result<Service> {
    let log_path = dir.join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    cmd.stdout(log.try_clone().context("log file")?).stderr(log);
    Ok(Service {
        child: cmd.spawn().with_context(|| format!("starting {name}"))?,
    })
}

async fn measure(
    options: &GatewayOptions,
    tools: &tools::Tools,
    (store_bin, gateway_bin, nginx_bin): (&Path, &Path, &Path),
    pg: &PgCluster,
    bao: &OpenBao,
) -> anyhow::Result<()> {
    let dir = pg.dir().join("bench-gateway");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    pg.create_database(DATABASE).await?;
    stack::migrate_with_service(store_bin, pg)?;
    let approle = stack::configure_bao(pg, bao)
        .await
        .context("configuring OpenBao")?;
    seed(pg, 1, options.rows).await?;

    // The store service.
    let store_port = testkit::free_port()?;
    let store_addr: SocketAddr = ([127, 0, 0, 1], store_port).into();
    let mut cmd = stack::service_command(store_bin, store_port, pg, bao, &approle);
    // The sweep's own connections plus the gateway's and nginx's pools to
    // it: above the default limit at 4,000.
    cmd.env("RUST_LOG", "warn")
        .env("MAX_CONNECTIONS", "20000")
        .envs(tools.env());
    let mut store = spawn_logged(cmd, &dir, "store-service")?;
    stack::wait_ready(store_addr, &mut store.child).await?;

    // The gateway: JWT verified, breaker on, rate limit set high.
    let (config, issuer) = stack::configure_gateway(
        &dir,
        bao,
        &GatewayLimits {
            per_second: 10_000_000,
            burst: 10_000_000,
        },
        &format!("http://{store_addr}"),
        &stack::GatewayQueue::Redb(dir.join("gateway-queue.redb")),
    )
    .await?;
    let gateway_port = testkit::free_port()?;
    let gateway_addr: SocketAddr = ([127, 0, 0, 1], gateway_port).into();
    let mut cmd = Command::new(gateway_bin);
    cmd.env("GATEWAY_CONFIG", &config)
        .env("PORT", gateway_port.to_string())
        .env("HOST", "127.0.0.1")
        .env("STORE_SERVICE_URL", format!("http://{store_addr}"))
        .env("RUST_LOG", "warn");
    let mut gateway = spawn_logged(cmd, &dir, "gateway")?;
    stack::wait_ready(gateway_addr, &mut gateway.child).await?;
    let gateway_pid = gateway.child.id();

    // nginx.
    let nginx_port = testkit::free_port()?;
    let nginx_addr: SocketAddr = ([127, 0, 0, 1], nginx_port).into();
    let nginx_conf = dir.join("nginx.conf");
    std::fs::write(&nginx_conf, nginx_config(&dir, nginx_port, store_addr))
        .context("writing nginx.conf")?;
    let mut cmd = Command::new(nginx_bin);
    cmd.arg("-c")
        .arg(&nginx_conf)
        .arg("-p")
        .arg(&dir)
        .stdin(Stdio::null());
    let mut nginx = spawn_logged(cmd, &dir, "nginx")?;
    stack::wait_ready(nginx_addr, &mut nginx.child).await?;

    let token = bao
        .oidc_token(&issuer, "stores:read")
        .await
        .context("a token for the gateway")?;
    let authorization: Arc<str> = format!("Authorization: Bearer {token}\r\n").into();
    let none: Arc<str> = "".into();

    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    eprintln!(
        "xtask: load average before the run: {} ({cores} cores)",
        loadavg.trim()
    );

    raise_open_files();
    let pids = [
        ("direct", store.child.id()),
        ("gateway", gateway_pid),
        ("nginx", nginx.child.id()),
    ];
    let idle: Vec<(&str, u64)> = pids.iter().map(|(n, pid)| (*n, tree_rss(*pid))).collect();
    let targets = [
        ("direct", store_addr, &none, None),
        ("gateway", gateway_addr, &authorization, Some(gateway_pid)),
        ("nginx", nginx_addr, &none, Some(nginx.child.id())),
    ]
    .into_iter()
    .filter(|(name, ..)| options.with_gateway || *name != "gateway")
    .collect::<Vec<_>>();
    let mut last = Vec::new();
    for &connections in &options.connections {
        let mut reports = Vec::new();
        for &(name, addr, auth, proxy_pid) in &targets {
            let pid = pids.iter().find(|(n, _)| *n == name).map_or(0, |(_, p)| *p);
            let idle_kb = idle.iter().find(|(n, _)| *n == name).map_or(0, |(_, k)| *k);
            let workloads = |seed: u64| -> Vec<ById> {
                (0..connections)
                    .map(|i| ById {
                        rng: Rng::new(seed + i as u64),
                        rows: options.rows,
                        authorization: Arc::clone(auth),
                    })
                    .collect()
            };
            eprintln!("xtask: {name}: warm-up on {connections} connections");
            load::run(addr, workloads(1_000), Duration::from_secs(2)).await?;
            eprintln!(
                "xtask: {name}: {} s on {connections} connections",
                options.duration.as_secs_f64()
            );
            let peak = Arc::new(AtomicU64::new(0));
            let sampler = tokio::spawn(sample_tree_rss(pid, Arc::clone(&peak)));
            let before = proxy_pid.map(tree_ticks);
            let report = load::run(addr, workloads(0), options.duration).await?;
            sampler.abort();
            // The proxy's CPU per request, in microseconds (ticks are 10 ms).
            let cpu_us = match (proxy_pid, before) {
                (Some(pid), Some(before)) if report.ok > 0 => Some(
                    tree_ticks(pid).saturating_sub(before) as f64 * 10_000.0 / report.ok as f64,
                ),
                _ => None,
            };
            let memory = after_load(pid, idle_kb, peak.load(Ordering::Relaxed)).await;
            eprintln!(
                "xtask:   {name:<8} {:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {}  RSS idle {:.1} MB peak {:.1} MB after {:.1} MB",
                report.rate(),
                ms(report.quantile(0.50)),
                ms(report.quantile(0.99)),
                report.errors,
                mb(memory.idle_kb),
                mb(memory.peak_kb),
                mb(memory.after_kb),
            );
            reports.push(Measured {
                name,
                report,
                cpu_us,
                memory,
            });
        }
        print_level(connections, options, &reports, loadavg.trim(), cores);
        last = reports;
    }
    if let Some(&connections) = options.connections.last() {
        print_summary(connections, &last);
    }
    drop((nginx, gateway, store));
    Ok(())
}

/// One target at one level.
struct Measured {
    /// `direct`, `gateway` or `nginx`.
    name: &'static str,
    /// The load generator's figures.
    report: Report,
    /// The proxy's CPU per request, in µs.
    cpu_us: Option<f64>,
    /// The serving process's memory.
    memory: Memory,
}

/// A process's memory around one load (KiB; nginx: master and workers).
#[derive(Clone, Copy, Debug, Default)]
struct Memory {
    /// Before any load.
    idle_kb: u64,
    /// The highest sampled while loaded.
    peak_kb: u64,
    /// 5 s after the load ended.
    after_kb: u64,
    /// How long after the load it was back within 1.5× idle (60 s at most).
    back_in: Option<Duration>,
}

impl Memory {
    /// `(peak − idle) / connections`, in KiB.
    fn kb_per_connection(&self, connections: usize) -> f64 {
        self.peak_kb.saturating_sub(self.idle_kb) as f64 / connections.max(1) as f64
    }
}

/// The memory of `pid` after a load: 5 s after it, and when it is back
/// within 1.5× `idle_kb` (polled for 60 s at most).
async fn after_load(pid: u32, idle_kb: u64, peak_kb: u64) -> Memory {
    let ended = tokio::time::Instant::now();
    let target = idle_kb + idle_kb / 2;
    let mut back_in = None;
    let mut after_kb = 0;
    loop {
        let now = tree_rss(pid);
        let waited = ended.elapsed();
        if back_in.is_none() && now <= target {
            back_in = Some(waited);
        }
        if waited >= Duration::from_secs(5) && after_kb == 0 {
            after_kb = now;
        }
        if (after_kb > 0 && back_in.is_some()) || waited >= Duration::from_secs(60) {
            if after_kb == 0 {
                after_kb = now;
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Memory {
        idle_kb,
        peak_kb: peak_kb.max(after_kb),
        after_kb,
        back_in,
    }
}

/// `VmRSS` of `pid` and its direct children (nginx's workers), in KiB.
fn tree_rss(pid: u32) -> u64 {
    let own = read_rss(pid).map_or(0, |(_, rss)| rss);
    own + children(pid)
        .into_iter()
        .filter_map(|child| read_rss(child).map(|(_, rss)| rss))
        .sum::<u64>()
}

/// The direct children of `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    stat.rfind(')')
                        .and_then(|at| stat[at + 1..].split_whitespace().nth(1))
                        .and_then(|p| p.parse::<u32>().ok())
                })
                == Some(pid)
        })
        .collect()
}

/// Samples [`tree_rss`] of `pid` every 100 ms into `peak`.
async fn sample_tree_rss(pid: u32, peak: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        peak.fetch_max(tree_rss(pid), Ordering::Relaxed);
    }
}

/// Raises this process's open-file limit to its hard limit, so that the
/// load generator can hold thousands of connections.
fn raise_open_files() {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(error) = rustix::process::setrlimit(rustix::process::Resource::Nofile, raised) {
            eprintln!("xtask: could not raise the open-file limit: {error}");
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn print_level(
    connections: usize,
    options: &GatewayOptions,
    reports: &[Measured],
    loadavg: &str,
    cores: usize,
) {
    let direct = reports
        .iter()
        .find(|m| m.name == "direct")
        .map(|m| &m.report);
    println!();
    println!(
        "GET /api/stores/{{id}}: {connections} connections, {} s per target (load average before: {loadavg}, {cores} cores)",
        options.duration.as_secs_f64()
    );
    println!(
        "| target | req/s | p50 | p99 | errors | req/s vs direct | p99 added over direct | proxy CPU per request | RSS idle | RSS peak | RSS 5 s after | back within 1.5× idle | KB per connection |"
    );
    println!(
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for m in reports {
        let r = &m.report;
        let (ratio, added) = match direct {
            Some(d) if d.rate() > 0.0 => (
                format!("{:.2}", r.rate() / d.rate()),
                format!("{:+.2} ms", ms(r.quantile(0.99)) - ms(d.quantile(0.99))),
            ),
            _ => ("-".into(), "-".into()),
        };
        let cpu = m.cpu_us.map_or("-".to_owned(), |us| format!("{us:.1} µs"));
        let back = m.memory.back_in.map_or("not in 60 s".to_owned(), |d| {
            format!("{:.1} s", d.as_secs_f64())
        });
        println!(
            "| {} | {:.0} | {:.2} ms | {:.2} ms | {} | {ratio} | {added} | {cpu} | {:.1} MB | {:.1} MB | {:.1} MB | {back} | {:.1} |",
            m.name,
            r.rate(),
            ms(r.quantile(0.50)),
            ms(r.quantile(0.99)),
            r.errors,
            mb(m.memory.idle_kb),
            mb(m.memory.peak_kb),
            mb(m.memory.after_kb),
            m.memory.kb_per_connection(connections),
        );
    }
}

/// The two lines that compare runs: the gateway and the store service
/// (`direct`), each against nginx, at the highest level.
fn print_summary(connections: usize, reports: &[Measured]) {
    let find = |name: &str| reports.iter().find(|m| m.name == name);
    let Some(nginx) = find("nginx") else {
        return;
    };
    println!();
    for (target, prefix) in [("gateway", "gateway"), ("direct", "service")] {
        let Some(m) = find(target) else {
            continue;
        };
        println!("{}", summary_line(prefix, connections, m, nginx));
    }
}

/// `sweep: connections=N <prefix>_kb_per_conn=X ...`.
fn summary_line(prefix: &str, connections: usize, m: &Measured, nginx: &Measured) -> String {
    let rps = if nginx.report.rate() > 0.0 {
        m.report.rate() / nginx.report.rate()
    } else {
        0.0
    };
    let after = if m.memory.idle_kb > 0 {
        m.memory.after_kb as f64 / m.memory.idle_kb as f64
    } else {
        0.0
    };
    format!(
        "sweep: connections={connections} {prefix}_kb_per_conn={:.1} {prefix}_rss_mb={:.1} nginx_rss_mb={:.1} {prefix}_vs_nginx_rps={rps:.2} {prefix}_after_load_ratio={after:.2}",
        m.memory.kb_per_connection(connections),
        mb(m.memory.peak_kb),
        mb(nginx.memory.peak_kb),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn options() {
        let o = GatewayOptions::parse(&[]).unwrap();
        assert_eq!(
            (o.connections, o.duration, o.rows, o.no_build),
            (vec![64], Duration::from_secs(10), 1000, false)
        );
        let sweep = GatewayOptions::parse(&args(&["--connections", "64,1024,4_000"])).unwrap();
        assert_eq!(sweep.connections, vec![64, 1024, 4000]);
        assert!(GatewayOptions::parse(&args(&["--connections", "64,,8"])).is_err());
        assert!(GatewayOptions::parse(&args(&["--connections", "64,0"])).is_err());
        let o = GatewayOptions::parse(&args(&[
            "--connections",
            "8",
            "--duration",
            "2s",
            "--no-build",
        ]))
        .unwrap();
        assert_eq!(
            (o.connections, o.duration, o.no_build),
            (vec![8], Duration::from_secs(2), true)
        );
        assert!(GatewayOptions::parse(&args(&["--connections", "0"])).is_err());
        assert!(GatewayOptions::parse(&args(&["--bogus"])).is_err());
    }

    #[test]
    fn the_summary_line_compares_with_nginx() {
        let measured = |name, idle_kb, peak_kb, after_kb| Measured {
            name,
            report: Report::default(),
            cpu_us: None,
            memory: Memory {
                idle_kb,
                peak_kb,
                after_kb,
                back_in: None,
            },
        };
        let gateway = measured("gateway", 10_240, 10_240 + 4_000 * 16, 15_360);
        let nginx = measured("nginx", 5_000, 51_200, 5_000);
        assert_eq!(
            summary_line("gateway", 4_000, &gateway, &nginx),
            "sweep: connections=4000 gateway_kb_per_conn=16.0 gateway_rss_mb=72.5 nginx_rss_mb=50.0 gateway_vs_nginx_rps=0.00 gateway_after_load_ratio=1.50"
        );
    }

    #[test]
    fn requests_carry_the_token_only_for_the_gateway() {
        let mut with = ById {
            rng: Rng::new(1),
            rows: 10,
            authorization: "Authorization: Bearer t\r\n".into(),
        };
        let text = String::from_utf8(with.request()).unwrap();
        assert!(text.starts_with("GET /api/stores/00000000-0000-4000-8000-"));
        assert!(
            text.ends_with("\r\nAuthorization: Bearer t\r\n\r\n"),
            "{text}"
        );
        let mut without = ById {
            rng: Rng::new(1),
            rows: 10,
            authorization: "".into(),
        };
        assert!(
            String::from_utf8(without.request())
                .unwrap()
                .ends_with("Host: 127.0.0.1\r\n\r\n")
        );
    }

    #[test]
    fn nginx_keeps_upstream_connections_alive() {
        let conf = nginx_config(Path::new("/tmp/x"), 8081, ([127, 0, 0, 1], 3000).into());
        assert!(conf.contains("upstream store { server 127.0.0.1:3000; keepalive 128; }"));
        assert!(conf.contains("proxy_http_version 1.1;"));
        assert!(conf.contains("proxy_set_header Connection \"\";"));
        assert!(conf.contains("listen 127.0.0.1:8081;"));
    }
}
