//! `cargo xtask bench gateway`: the same load on `GET /api/stores/{id}`
//! directly against store-service, through the gateway (JWT verified,
//! breaker, rate limit set high), and through nginx as a plain reverse
//! proxy with upstream keep-alive (installed with apt when missing).
//!
//! One run, on a throw-away stack (PostgreSQL primary + replica, OpenBao
//! with the database engine, Transit and the identity token issuer),
//! release builds of store-service and the gateway. For each target: a
//! warm-up, then the load generator ([`crate::load`]) for `--duration` on
//! `--connections` keep-alive connections. Prints req/s, p50, p99, errors,
//! the ratios to the direct run, the p99 the proxy adds, the gateway's RSS
//! (VmHWM and the highest VmRSS sampled) and the load average before the
//! run (a busy machine skews every figure).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use testkit::{OpenBao, PgCluster};

use crate::bench_api::{
    Service, cpu_ticks, parse_duration, parse_number, read_rss, sample_rss, seed, seeded_id,
    temporary_stack,
};
use crate::load::{self, Report, Rng, Workload};
use crate::stack::{self, APP, DATABASE, GatewayLimits};
use crate::tools;

const USAGE: &str = "usage: cargo xtask bench gateway [--connections 64] [--duration 10s] [--rows 1000] [--no-build]";

/// What `bench gateway` was asked for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GatewayOptions {
    /// Keep-alive connections of the load generator.
    connections: usize,
    /// How long each target is measured.
    duration: Duration,
    /// Rows seeded (the ids drawn from).
    rows: u64,
    /// Use the release binaries already built.
    no_build: bool,
}

impl GatewayOptions {
    pub(crate) fn parse(args: &[String]) -> anyhow::Result<GatewayOptions> {
        let mut options = GatewayOptions {
            connections: 64,
            duration: Duration::from_secs(10),
            rows: 1000,
            no_build: false,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            if arg == "--no-build" {
                options.no_build = true;
                continue;
            }
            let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--connections" => options.connections = parse_number(value()?)?,
                "--duration" => options.duration = parse_duration(value()?)?,
                "--rows" => options.rows = parse_number(value()?)?,
                other => bail!("unexpected argument `{other}`\n\n{USAGE}"),
            }
        }
        if options.connections == 0 || options.rows == 0 {
            bail!("--connections and --rows must be at least 1");
        }
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
         events {{ worker_connections 4096; }}\n\
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

pub(crate) async fn run(options: GatewayOptions) -> anyhow::Result<()> {
    let tools = tools::ensure()?;
    let nginx = ensure_nginx()?;
    let (store_bin, gateway_bin) = if options.no_build {
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
fn spawn_logged(mut cmd: Command, dir: &Path, name: &str) -> anyhow::Result<Service> {
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
    cmd.env("RUST_LOG", "warn").envs(tools.env());
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

    let peak_rss = Arc::new(AtomicU64::new(0));
    let sampler = tokio::spawn(sample_rss(gateway_pid, Arc::clone(&peak_rss)));
    let targets = [
        ("direct", store_addr, &none, None),
        ("gateway", gateway_addr, &authorization, Some(gateway_pid)),
        ("nginx", nginx_addr, &none, Some(nginx.child.id())),
    ];
    let mut reports = Vec::new();
    for (name, addr, auth, proxy_pid) in targets {
        let workloads = |seed: u64| -> Vec<ById> {
            (0..options.connections)
                .map(|i| ById {
                    rng: Rng::new(seed + i as u64),
                    rows: options.rows,
                    authorization: Arc::clone(auth),
                })
                .collect()
        };
        eprintln!("xtask: {name}: warm-up");
        load::run(addr, workloads(1_000), Duration::from_secs(2)).await?;
        eprintln!(
            "xtask: {name}: {} s on {} connections",
            options.duration.as_secs_f64(),
            options.connections
        );
        let before = proxy_pid.map(tree_ticks);
        let report = load::run(addr, workloads(0), options.duration).await?;
        // The proxy's CPU per request, in microseconds (ticks are 10 ms).
        let cpu_us = match (proxy_pid, before) {
            (Some(pid), Some(before)) if report.ok > 0 => {
                Some(tree_ticks(pid).saturating_sub(before) as f64 * 10_000.0 / report.ok as f64)
            }
            _ => None,
        };
        eprintln!(
            "xtask:   {name:<8} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}  proxy CPU {}",
            report.rate(),
            ms(report.quantile(0.50)),
            ms(report.quantile(0.99)),
            report.errors,
            cpu_us.map_or("-".to_owned(), |us| format!("{us:.1} µs/request")),
        );
        reports.push((name, report, cpu_us));
    }
    sampler.abort();
    let (hwm, rss) = read_rss(gateway_pid).unwrap_or((0, 0));
    let sampled = peak_rss.load(Ordering::Relaxed).max(rss);
    print_results(options, &reports, hwm, sampled, loadavg.trim(), cores);
    drop((nginx, gateway, store));
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn print_results(
    options: &GatewayOptions,
    reports: &[(&str, Report, Option<f64>)],
    hwm_kb: u64,
    rss_kb: u64,
    loadavg: &str,
    cores: usize,
) {
    let direct = reports
        .iter()
        .find(|(n, ..)| *n == "direct")
        .map(|(_, r, _)| r);
    let rate = |r: &Report| r.rate();
    println!();
    println!(
        "GET /api/stores/{{id}}: {} connections, {} s per target (load average before: {loadavg}, {cores} cores)",
        options.connections,
        options.duration.as_secs_f64()
    );
    println!(
        "| target | req/s | p50 | p99 | errors | req/s vs direct | p99 added over direct | proxy CPU per request |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (name, r, cpu_us) in reports {
        let (ratio, added) = match direct {
            Some(d) if rate(d) > 0.0 => (
                format!("{:.2}", rate(r) / rate(d)),
                format!("{:+.2} ms", ms(r.quantile(0.99)) - ms(d.quantile(0.99))),
            ),
            _ => ("-".into(), "-".into()),
        };
        let cpu = cpu_us.map_or("-".to_owned(), |us| format!("{us:.1} µs"));
        println!(
            "| {name} | {:.0} | {:.2} ms | {:.2} ms | {} | {ratio} | {added} | {cpu} |",
            r.rate(),
            ms(r.quantile(0.50)),
            ms(r.quantile(0.99)),
            r.errors,
        );
    }
    let by = |n: &str| {
        reports
            .iter()
            .find(|(name, ..)| *name == n)
            .map(|(_, r, _)| r.rate())
    };
    if let (Some(gateway), Some(nginx)) = (by("gateway"), by("nginx"))
        && nginx > 0.0
    {
        println!("gateway / nginx throughput: {:.2}", gateway / nginx);
    }
    println!(
        "gateway RSS: peak {:.1} MB (VmHWM), highest sampled {:.1} MB",
        hwm_kb as f64 / 1024.0,
        rss_kb as f64 / 1024.0
    );
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
            (64, Duration::from_secs(10), 1000, false)
        );
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
            (8, Duration::from_secs(2), true)
        );
        assert!(GatewayOptions::parse(&args(&["--connections", "0"])).is_err());
        assert!(GatewayOptions::parse(&args(&["--bogus"])).is_err());
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
