//! `cargo xtask bench api`: store-service under load against `pgbench`
//! doing the same SQL at the same concurrency on the same database.
//!
//! One run, on a throw-away stack with free ports (PostgreSQL primary +
//! streaming replica with fsync on, OpenBao, store-service built in release
//! mode and configured as `cargo xtask up` does):
//!
//! 1. seed `--rows` stores (generate_series, as the superuser);
//! 2. for each case (list page, GET by id, PUT, POST): the load generator
//!    ([`crate::load`]) for `--duration` on `--connections` keep-alive
//!    connections, then `pgbench` with the matching script of
//!    `bins/xtask/pgbench/` on as many clients; print both and the ratio;
//! 3. grow the table to `--big-rows` and measure the list page again;
//! 4. print the service's peak RSS (VmHWM, and the highest VmRSS sampled).
//!
//! The load generator and pgbench both run on one thread (`-j 1`), so
//! neither client gets more CPU than the other.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use testkit::{OpenBao, PgCluster};

use crate::load::{self, Report, Response, Rng, Workload};
use crate::stack::{self, APP, DATABASE};
use testkit::workspace_root;

use crate::tools;

const USAGE: &str = "usage: cargo xtask bench api [--connections N] [--duration 10s] [--rows N] [--big-rows N] [--no-build]";

/// What `bench api` was asked for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiOptions {
    /// Keep-alive connections of the load generator, and pgbench clients.
    connections: usize,
    /// How long each case runs, for each of the two clients.
    duration: Duration,
    /// Rows seeded before the first cases.
    rows: u64,
    /// Rows the table is grown to for the second list-page measurement.
    big_rows: u64,
    /// Use the release binary already in the target folder instead of
    /// running `cargo build --release -p store-service`.
    no_build: bool,
}

impl ApiOptions {
    pub(crate) fn parse(args: &[String]) -> anyhow::Result<ApiOptions> {
        let mut options = ApiOptions {
            connections: 32,
            duration: Duration::from_secs(10),
            rows: 1000,
            big_rows: 1_000_000,
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
                "--big-rows" => options.big_rows = parse_number(value()?)?,
                other => bail!("unexpected argument `{other}`\n\n{USAGE}"),
            }
        }
        if options.connections == 0 {
            bail!("--connections must be at least 1");
        }
        if options.rows < 2 * options.connections as u64 {
            bail!(
                "--rows must be at least twice --connections (each PUT connection and each \
                 pgbench client owns a row)"
            );
        }
        if options.big_rows < options.rows {
            bail!("--big-rows must be at least --rows");
        }
        if options.duration < Duration::from_secs(1) {
            bail!("--duration must be at least 1s (pgbench counts whole seconds)");
        }
        Ok(options)
    }
}

pub(crate) fn parse_number<T: std::str::FromStr>(text: &str) -> anyhow::Result<T> {
    let digits: String = text.chars().filter(|c| *c != '_').collect();
    digits
        .parse()
        .map_err(|_| anyhow::anyhow!("`{text}` is not a number"))
}

/// `10s`, `500ms`, `2m` or a bare number of seconds.
pub(crate) fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .with_context(|| format!("bad duration `{text}`"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => bail!("bad duration `{text}`: use 10s, 500ms or 2m"),
    }
}

/// The id of seeded row `n` (pgbench scripts compute the same).
pub(crate) fn seeded_id(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

/// The store-service child, killed on drop whatever happens.
pub(crate) struct Service {
    /// The child process.
    pub(crate) child: Child,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = rustix::process::kill_process(
            stack::pid_of(&self.child),
            rustix::process::Signal::TERM,
        );
        let _ = self.child.wait();
    }
}

pub(crate) async fn run(options: ApiOptions) -> anyhow::Result<()> {
    let tools = tools::ensure()?;
    let binary = if options.no_build {
        stack::service_binary(APP, true)
    } else {
        stack::build_service(APP, true)?
    };
    if !binary.is_file() {
        bail!("{} is missing: run without --no-build", binary.display());
    }

    let (pg, bao) = temporary_stack(&tools).await?;
    let outcome = measure(&options, &tools, &binary, &pg, &bao).await;
    let _ = bao.stop().await;
    let _ = pg.shutdown().await;
    outcome
}

/// A throw-away PostgreSQL (primary + replica, fsync on) and OpenBao on
/// free ports.
pub(crate) async fn temporary_stack(tools: &tools::Tools) -> anyhow::Result<(PgCluster, OpenBao)> {
    eprintln!("xtask: starting a temporary stack (PostgreSQL primary + replica, OpenBao)");
    let pg = PgCluster::builder()
        .bindir(&tools.pg_bindir)
        .durable(true)
        .start()
        .await
        .context("starting PostgreSQL")?;
    let bao = OpenBao::builder()
        .binary(&tools.bao)
        .start()
        .await
        .context("starting OpenBao")?;
    Ok((pg, bao))
}

async fn measure(
    options: &ApiOptions,
    tools: &tools::Tools,
    binary: &Path,
    pg: &PgCluster,
    bao: &OpenBao,
) -> anyhow::Result<()> {
    pg.create_database(DATABASE).await?;
    stack::migrate_with_service(binary, pg)?;
    let approle = stack::configure_bao(pg, bao)
        .await
        .context("configuring OpenBao")?;
    seed(pg, 1, options.rows).await?;

    let port = testkit::free_port()?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let log_path = pg.dir().join("store-service.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let mut cmd = stack::service_command(binary, port, pg, bao, &approle);
    cmd.env("RUST_LOG", "warn")
        .envs(tools.env())
        .stdout(log.try_clone().context("log file")?)
        .stderr(log);
    let mut service = Service {
        child: cmd.spawn().context("starting store-service")?,
    };
    let pid = service.child.id();
    stack::wait_ready(addr, &mut service.child)
        .await
        .with_context(|| format!("its log:\n{}", testkit::log_tail(&log_path, 30)))?;
    eprintln!("xtask: store-service (release) ready on {addr}, pid {pid}");

    let peak_rss = Arc::new(AtomicU64::new(0));
    let sampler = tokio::spawn(sample_rss(pid, Arc::clone(&peak_rss)));
    let url = pg.superuser_url(pg.primary(), DATABASE);
    let scripts = workspace_root().join("bins").join("xtask").join("pgbench");
    let pgbench = Pgbench {
        bin: tools.pg_bindir.join("pgbench"),
        url: url.clone(),
        scripts,
        logs: pg.dir().join("pgbench-logs"),
        clients: options.connections,
        duration: options.duration,
    };
    std::fs::create_dir_all(&pgbench.logs).context("creating the pgbench log folder")?;

    let n = options.connections;
    let mut results = Vec::new();
    let rows_now = count_rows(pg).await?;
    let list = |rows| Case {
        name: format!("list page (limit 50), {rows} rows"),
        script: "list_page.sql",
        rows,
    };
    results.push(
        compare(
            &pgbench,
            (addr, pid),
            options,
            list(rows_now),
            (0..n).map(|_| ListPages { next: None }).collect(),
        )
        .await?,
    );
    results.push(
        compare(
            &pgbench,
            (addr, pid),
            options,
            Case {
                name: "GET by id".into(),
                script: "select_by_id.sql",
                rows: options.rows,
            },
            (0..n)
                .map(|i| ById {
                    rng: Rng::new(i as u64),
                    rows: options.rows,
                })
                .collect(),
        )
        .await?,
    );
    let versions = versions(pg, n).await?;
    results.push(
        compare(
            &pgbench,
            (addr, pid),
            options,
            Case {
                name: "PUT (If-Match)".into(),
                script: "update.sql",
                rows: options.rows,
            },
            versions
                .into_iter()
                .enumerate()
                .map(|(i, version)| Rename {
                    id: seeded_id(i as u64 + 1),
                    version,
                    flip: false,
                })
                .collect(),
        )
        .await?,
    );
    results.push(
        compare(
            &pgbench,
            (addr, pid),
            options,
            Case {
                name: "POST".into(),
                script: "insert.sql",
                rows: options.rows,
            },
            (0..n).map(|i| Create { conn: i, n: 0 }).collect(),
        )
        .await?,
    );

    eprintln!(
        "xtask: growing the table to {} seeded rows (generate_series)",
        options.big_rows
    );
    let grow_started = std::time::Instant::now();
    seed(pg, options.rows + 1, options.big_rows).await?;
    eprintln!(
        "xtask: seeded in {:.1} s",
        grow_started.elapsed().as_secs_f64()
    );
    let big_rows = count_rows(pg).await?;
    let mut big = compare(
        &pgbench,
        (addr, pid),
        options,
        list(big_rows),
        (0..n).map(|_| ListPages { next: None }).collect(),
    )
    .await?;
    big.pgbench_rows = options.big_rows;
    results.push(big);

    sampler.abort();
    let (hwm, rss) = read_rss(pid).unwrap_or((0, 0));
    let sampled = peak_rss.load(Ordering::Relaxed).max(rss);

    print_results(options, &results, hwm, sampled);
    drop(service);
    Ok(())
}

/// One case: its name, the pgbench script and its `rows` variable.
struct Case {
    name: String,
    script: &'static str,
    rows: u64,
}

/// Service and pgbench figures of one case.
struct Compared {
    name: String,
    service: Report,
    pgbench: PgbenchReport,
    /// The `rows` variable pgbench drew from.
    pgbench_rows: u64,
    /// CPU cores used during the service's run: (service, load generator).
    cpu: (f64, f64),
}

async fn compare<W: Workload>(
    pgbench: &Pgbench,
    (addr, pid): (SocketAddr, u32),
    options: &ApiOptions,
    case: Case,
    workloads: Vec<W>,
) -> anyhow::Result<Compared> {
    eprintln!("xtask: {}: store-service", case.name);
    let before = (cpu_ticks("self"), cpu_ticks(&pid.to_string()));
    let service = load::run(addr, workloads, options.duration).await?;
    let after = (cpu_ticks("self"), cpu_ticks(&pid.to_string()));
    let cores = |a: Option<u64>, b: Option<u64>| match (a, b) {
        // /proc reports in USER_HZ, 100 on Linux.
        (Some(a), Some(b)) => b.saturating_sub(a) as f64 / 100.0 / service.elapsed.as_secs_f64(),
        _ => 0.0,
    };
    let cpu = (cores(before.1, after.1), cores(before.0, after.0));
    print_line("store-service", &service_figures(&service));
    eprintln!(
        "xtask:   CPU: store-service {:.2} cores, load generator {:.2} cores",
        cpu.0, cpu.1
    );
    eprintln!("xtask: {}: pgbench", case.name);
    let pg = pgbench.run(case.script, case.rows).await?;
    print_line("pgbench", &pg.figures());
    Ok(Compared {
        name: case.name,
        service,
        pgbench: pg,
        pgbench_rows: case.rows,
        cpu,
    })
}

fn service_figures(r: &Report) -> Figures {
    Figures {
        rate: r.rate(),
        p50: r.quantile(0.50),
        p99: r.quantile(0.99),
        errors: r.errors,
        first_error: r.first_error.clone(),
    }
}

/// The figures printed for one client.
struct Figures {
    rate: f64,
    p50: Duration,
    p99: Duration,
    errors: u64,
    first_error: Option<String>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn print_line(who: &str, f: &Figures) {
    let errors = match &f.first_error {
        Some(first) => format!("{} (first: {first})", f.errors),
        None => f.errors.to_string(),
    };
    eprintln!(
        "xtask:   {who:<14} {:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {errors}",
        f.rate,
        ms(f.p50),
        ms(f.p99)
    );
}

fn print_results(options: &ApiOptions, results: &[Compared], hwm_kb: u64, rss_kb: u64) {
    println!();
    println!(
        "store-service vs pgbench: {} connections/clients, {} s per case and client",
        options.connections,
        options.duration.as_secs_f64()
    );
    println!(
        "| case | service req/s | service p50 | service p99 | service errors | pgbench tx/s | pgbench p50 | pgbench p99 | pgbench failed | service/pgbench | CPU service / load gen |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in results {
        let s = service_figures(&r.service);
        let p = r.pgbench.figures();
        let ratio = if p.rate > 0.0 { s.rate / p.rate } else { 0.0 };
        println!(
            "| {} | {:.0} | {:.2} ms | {:.2} ms | {} | {:.0} | {:.2} ms | {:.2} ms | {} | {:.2} | {:.2} / {:.2} |",
            r.name,
            s.rate,
            ms(s.p50),
            ms(s.p99),
            s.errors,
            p.rate,
            ms(p.p50),
            ms(p.p99),
            p.errors,
            ratio,
            r.cpu.0,
            r.cpu.1
        );
    }
    let lists: Vec<&Compared> = results
        .iter()
        .filter(|r| r.name.starts_with("list"))
        .collect();
    if let [small, big] = lists.as_slice() {
        let small_p99 = ms(small.service.quantile(0.99));
        let big_p99 = ms(big.service.quantile(0.99));
        println!();
        println!(
            "list page p99 (service): {small_p99:.2} ms ({}) -> {big_p99:.2} ms ({}): x{:.2}; pgbench p99 x{:.2} (rows {} -> {})",
            small.name,
            big.name,
            if small_p99 > 0.0 {
                big_p99 / small_p99
            } else {
                0.0
            },
            {
                let a = ms(small.pgbench.quantile(0.99));
                let b = ms(big.pgbench.quantile(0.99));
                if a > 0.0 { b / a } else { 0.0 }
            },
            small.pgbench_rows,
            big.pgbench_rows,
        );
    }
    println!(
        "store-service memory: VmHWM (peak RSS) {:.1} MiB, highest VmRSS sampled under load {:.1} MiB",
        hwm_kb as f64 / 1024.0,
        rss_kb as f64 / 1024.0
    );
}

/// Seeds rows `from..=to`: id [`seeded_id`]`(n)`, created_at 2026-01-01 +
/// n ms, status ACTIVE, in batches of 100 000; then `VACUUM ANALYZE` and a
/// wait for the replica to have them.
pub(crate) async fn seed(pg: &PgCluster, from: u64, to: u64) -> anyhow::Result<()> {
    let db = pg.admin_db(pg.primary(), DATABASE).await?;
    let mut start = from;
    while start <= to {
        let end = (start + 99_999).min(to);
        db.execute(
            "INSERT INTO stores (id, name, status, config, version, created_at, updated_at) \
             SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(n), 12, '0'))::uuid, \
                    'Seed store ' || n, 'ACTIVE', '{\"seed\": true}'::jsonb, 1, \
                    timestamptz '2026-01-01 00:00:00+00' + n * interval '1 millisecond', now() \
             FROM generate_series($1::bigint, $2::bigint) AS n",
            &[&(start as i64), &(end as i64)],
        )
        .await
        .context("seeding stores")?;
        start = end + 1;
    }
    db.batch_execute("VACUUM ANALYZE stores")
        .await
        .context("VACUUM ANALYZE stores")?;
    // The service reads from the replica: wait until it has the last row.
    let replica = pg
        .replicas()
        .into_iter()
        .next()
        .context("the stack has no replica")?;
    let replica = pg.admin_db(replica, DATABASE).await?;
    let last = seeded_id(to);
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        let row = replica
            .query_opt("SELECT 1 FROM stores WHERE id = $1::text::uuid", &[&last])
            .await
            .context("polling the replica")?;
        if row.is_some() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("the replica did not replay the seed within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn count_rows(pg: &PgCluster) -> anyhow::Result<u64> {
    let db = pg.admin_db(pg.primary(), DATABASE).await?;
    let count: i64 = db
        .query_one("SELECT count(*) FROM stores", &[])
        .await?
        .try_get(0)?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// The current versions of seeded rows 1..=n, for the PUT connections.
async fn versions(pg: &PgCluster, n: usize) -> anyhow::Result<Vec<i32>> {
    let db = pg.admin_db(pg.primary(), DATABASE).await?;
    let mut out = Vec::with_capacity(n);
    for i in 1..=n as u64 {
        let version: i32 = db
            .query_one(
                "SELECT version FROM stores WHERE id = $1::text::uuid",
                &[&seeded_id(i)],
            )
            .await?
            .try_get(0)?;
        out.push(version);
    }
    Ok(out)
}

/// User + system CPU time of `/proc/<pid>` (`self` for this process), in
/// clock ticks.
pub(crate) fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    // After the command: state is field 3, utime 14, stime 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Reads `VmHWM` and `VmRSS` of `pid`, in KiB.
pub(crate) fn read_rss(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

pub(crate) async fn sample_rss(pid: u32, peak: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        if let Some((_, rss)) = read_rss(pid) {
            peak.fetch_max(rss, Ordering::Relaxed);
        }
    }
}

/// `GET /api/stores/{id}` of a random seeded row.
struct ById {
    rng: Rng,
    rows: u64,
}

impl Workload for ById {
    fn request(&mut self) -> Vec<u8> {
        let n = self.rng.between_1_and(self.rows);
        load::get(&format!("/api/stores/{}", seeded_id(n)))
    }
}

/// `GET /api/stores?limit=50`, then the `Link: rel="next"` page, from the
/// first page again after the last one.
struct ListPages {
    next: Option<String>,
}

impl Workload for ListPages {
    fn request(&mut self) -> Vec<u8> {
        load::get(self.next.as_deref().unwrap_or("/api/stores?limit=50"))
    }

    fn response(&mut self, response: &Response) -> bool {
        self.next = response.link.as_deref().and_then(next_link);
        response.status == 200
    }
}

/// The target of `<target>; rel="next"`.
fn next_link(link: &str) -> Option<String> {
    if !link.contains("rel=\"next\"") {
        return None;
    }
    let start = link.find('<')? + 1;
    let end = link[start..].find('>')? + start;
    Some(link[start..end].to_owned())
}

/// `PUT /api/stores/{id}` on this connection's own row, renaming it back
/// and forth with `If-Match` on the version the last response returned.
struct Rename {
    id: String,
    version: i32,
    flip: bool,
}

impl Workload for Rename {
    fn request(&mut self) -> Vec<u8> {
        self.flip = !self.flip;
        let name = if self.flip {
            "Renamed store A"
        } else {
            "Renamed store B"
        };
        load::with_json(
            "PUT",
            &format!("/api/stores/{}", self.id),
            &format!("If-Match: \"{}\"\r\n", self.version),
            &format!("{{\"name\":\"{name}\"}}"),
        )
    }

    fn response(&mut self, response: &Response) -> bool {
        if let Some(version) = response
            .etag
            .as_deref()
            .and_then(|e| e.trim_matches('"').parse().ok())
        {
            self.version = version;
        }
        response.status == 200
    }
}

/// `POST /api/stores` with a name and a small config.
struct Create {
    conn: usize,
    n: u64,
}

impl Workload for Create {
    fn request(&mut self) -> Vec<u8> {
        self.n += 1;
        load::with_json(
            "POST",
            "/api/stores",
            "",
            &format!(
                "{{\"name\":\"Bench store {}-{}\",\"config\":{{\"tier\":\"bench\"}}}}",
                self.conn, self.n
            ),
        )
    }
}

/// pgbench with the scripts of `bins/xtask/pgbench/`.
struct Pgbench {
    bin: PathBuf,
    url: String,
    scripts: PathBuf,
    logs: PathBuf,
    clients: usize,
    duration: Duration,
}

/// What pgbench reported, and the latencies from its transaction log.
struct PgbenchReport {
    tps: f64,
    failed: u64,
    latencies_us: Vec<u32>,
}

impl PgbenchReport {
    fn quantile(&self, q: f64) -> Duration {
        Duration::from_micros(load::quantile_us(&self.latencies_us, q).into())
    }

    fn figures(&self) -> Figures {
        Figures {
            rate: self.tps,
            p50: self.quantile(0.50),
            p99: self.quantile(0.99),
            errors: self.failed,
            first_error: None,
        }
    }
}

impl Pgbench {
    async fn run(&self, script: &str, rows: u64) -> anyhow::Result<PgbenchReport> {
        let prefix = self.logs.join(script.trim_end_matches(".sql"));
        for entry in std::fs::read_dir(&self.logs).context("reading the pgbench log folder")? {
            let path = entry?.path();
            let _ = std::fs::remove_file(path);
        }
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.args(["-n", "-M", "prepared", "-j", "1"])
            .arg("-c")
            .arg(self.clients.to_string())
            .arg("-T")
            .arg(self.duration.as_secs().max(1).to_string())
            .arg("-D")
            .arg(format!("rows={rows}"))
            // update.sql: the version before a client's first update.
            .args(["-D", "p_version=0"])
            .arg("-f")
            .arg(self.scripts.join(script))
            .arg("-l")
            .arg(format!("--log-prefix={}", prefix.display()))
            .arg(&self.url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let output = cmd.output().await.context("running pgbench")?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!(
                "pgbench -f {script} failed ({}):\n{stdout}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let tps =
            parse_tps(&stdout).with_context(|| format!("no tps in pgbench's output:\n{stdout}"))?;
        let failed = stdout
            .lines()
            .find_map(|l| l.strip_prefix("number of failed transactions: "))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let mut latencies_us = Vec::new();
        for entry in std::fs::read_dir(&self.logs).context("reading the pgbench logs")? {
            let text = std::fs::read_to_string(entry?.path()).context("reading a pgbench log")?;
            latencies_us.extend(text.lines().filter_map(|line| {
                // client_id transaction_no time script_no time_epoch time_us
                line.split_whitespace().nth(2)?.parse::<u32>().ok()
            }));
        }
        latencies_us.sort_unstable();
        Ok(PgbenchReport {
            tps,
            failed,
            latencies_us,
        })
    }
}

fn parse_tps(stdout: &str) -> Option<f64> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_have_the_issue_defaults() {
        let o = ApiOptions::parse(&[]).unwrap();
        assert_eq!(o.connections, 32);
        assert_eq!(o.duration, Duration::from_secs(10));
        assert_eq!(o.rows, 1000);
        assert_eq!(o.big_rows, 1_000_000);
        assert!(!o.no_build);
    }

    #[test]
    fn options_parse_and_check() {
        let o = ApiOptions::parse(&args(&[
            "--connections",
            "8",
            "--duration",
            "1500ms",
            "--rows",
            "1_000",
            "--big-rows",
            "100000",
            "--no-build",
        ]))
        .unwrap();
        assert!(o.no_build);
        assert_eq!(o.connections, 8);
        assert_eq!(o.duration, Duration::from_millis(1500));
        assert_eq!(o.big_rows, 100_000);
        assert!(ApiOptions::parse(&args(&["--rows", "10"])).is_err());
        assert!(ApiOptions::parse(&args(&["--duration", "10h"])).is_err());
        assert!(ApiOptions::parse(&args(&["--duration", "500ms"])).is_err());
        assert!(ApiOptions::parse(&args(&["--connections"])).is_err());
        assert!(ApiOptions::parse(&args(&["--bogus"])).is_err());
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
    }

    #[test]
    fn seeded_ids_match_the_pgbench_scripts() {
        assert_eq!(seeded_id(1), "00000000-0000-4000-8000-000000000001");
        assert_eq!(seeded_id(1_000_000), "00000000-0000-4000-8000-0000000f4240");
        let script =
            std::fs::read_to_string(workspace_root().join("bins/xtask/pgbench/select_by_id.sql"))
                .unwrap();
        assert!(script.contains("'00000000-0000-4000-8000-' || lpad(to_hex(:n::bigint), 12, '0')"));
    }

    #[test]
    fn next_links_are_followed() {
        assert_eq!(
            next_link("</api/stores?limit=50&cursor=abc>; rel=\"next\"").as_deref(),
            Some("/api/stores?limit=50&cursor=abc")
        );
        assert_eq!(next_link("</x>; rel=\"prev\""), None);
        assert_eq!(next_link("garbage rel=\"next\""), None);
    }

    #[test]
    fn renames_follow_the_etag() {
        let mut w = Rename {
            id: seeded_id(3),
            version: 1,
            flip: false,
        };
        let first = String::from_utf8(w.request()).unwrap();
        assert!(first.contains("If-Match: \"1\"\r\n"));
        assert!(w.response(&Response {
            status: 200,
            etag: Some("\"2\"".into()),
            link: None,
            body_len: 10,
        }));
        let second = String::from_utf8(w.request()).unwrap();
        assert!(second.contains("If-Match: \"2\"\r\n"));
        assert_ne!(first.contains("store A"), second.contains("store A"));
    }

    #[test]
    fn cpu_time_is_read_from_proc() {
        assert!(cpu_ticks("self").is_some());
        assert_eq!(cpu_ticks("0"), None);
    }

    #[test]
    fn pgbench_output_parses() {
        let out = "number of failed transactions: 3 (0.010%)\nlatency average = 1.5 ms\ntps = 20412.345678 (without initial connection time)\n";
        assert_eq!(parse_tps(out), Some(20412.345678));
        assert_eq!(parse_tps("nothing"), None);
    }
}
