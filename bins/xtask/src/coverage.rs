//! `cargo xtask coverage [PACKAGE...]`: line coverage of each library crate
//! and service binary, measured with cargo-tarpaulin (LLVM engine), one
//! package at a time, against a goal: 85 % for a library, 75 % for a
//! binary. Prints a table and fails when a package is under its goal.
//!
//! Each `cargo tarpaulin -p PACKAGE` runs that package's tests on their
//! own, with its default features, as `cargo test -p PACKAGE` does; its
//! doctests then run with `cargo test -p PACKAGE --doc` (tarpaulin measures
//! doctests only on nightly). So this command is also the "each package
//! alone" test run of CI.
//!
//! Processes the tests start from the package's binary (`CARGO_BIN_EXE_*`)
//! count: tarpaulin gives every test process an `LLVM_PROFILE_FILE` in its
//! profile folder, children inherit it and write their own profile there
//! when they exit (a graceful shutdown, not a SIGKILL), and tarpaulin maps
//! the profiles onto the package's instrumented binaries too.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::Value;

use testkit::workspace_root;

use crate::tools;

/// A library crate's goal, in percent of its coverable lines.
const LIBRARY_GOAL: f64 = 85.0;
/// A service binary's goal (its lib and main, run by its tests).
const BINARY_GOAL: f64 = 75.0;

/// Per-test-binary limit: the failover and rotation tests run for minutes
/// under instrumentation (tarpaulin's default is 60 s).
const TIMEOUT_SECS: &str = "1800";

/// A package measured: where it lives and the goal that applies.
struct Package {
    name: String,
    /// `crates/NAME` or `bins/NAME`.
    dir: PathBuf,
    goal: f64,
}

/// Lines of one package's own sources, covered / coverable.
struct Measured {
    covered: u64,
    coverable: u64,
}

impl Measured {
    fn percent(&self) -> f64 {
        if self.coverable == 0 {
            100.0
        } else {
            100.0 * self.covered as f64 / self.coverable as f64
        }
    }
}

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let root = workspace_root();
    let mut packages = packages(&root)?;
    if !args.is_empty() {
        if let Some(unknown) = args
            .iter()
            .find(|a| !packages.iter().any(|p| &p.name == *a))
        {
            let known: Vec<&str> = packages.iter().map(|p| p.name.as_str()).collect();
            bail!(
                "unknown package `{unknown}`; measured: {}",
                known.join(", ")
            );
        }
        packages.retain(|p| args.contains(&p.name));
    }
    let tools = tools::ensure()?;
    let tarpaulin = tools::ensure_tarpaulin()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = target_dir(&root);
    let mut rows = Vec::new();
    for package in &packages {
        let reports = target.join("tarpaulin").join("reports").join(&package.name);
        std::fs::create_dir_all(&reports)
            .with_context(|| format!("creating {}", reports.display()))?;
        let report = reports.join("tarpaulin-report.json");
        let _ = std::fs::remove_file(&report);
        let mut cmd = Command::new(&tarpaulin);
        cmd.args(["tarpaulin", "--engine", "llvm", "--skip-clean"])
            .args(["-p", &package.name])
            .arg("--target-dir")
            .arg(target.join("tarpaulin"))
            .args(["--timeout", TIMEOUT_SECS, "--out", "Json"])
            .arg("--output-dir")
            .arg(&reports)
            .current_dir(&root)
            .envs(tools.env());
        eprintln!("xtask: cargo tarpaulin -p {}", package.name);
        let status = cmd.status().context("running cargo tarpaulin")?;
        // Tarpaulin points build scripts' profiles at the workspace root.
        let _ = std::fs::remove_file(root.join("build_rs_cov.profraw"));
        if !status.success() {
            bail!("cargo tarpaulin -p {} failed: {status}", package.name);
        }
        let measured = measure(&report, &root.join(&package.dir).join("src"))?;
        let mut doc = Command::new(&cargo);
        doc.args(["test", "-p", &package.name, "--doc"])
            .current_dir(&root)
            .envs(tools.env());
        eprintln!("xtask: cargo test -p {} --doc", package.name);
        let status = doc.status().context("running cargo test --doc")?;
        if !status.success() {
            bail!("cargo test -p {} --doc failed: {status}", package.name);
        }
        rows.push((package, measured));
    }

    println!(
        "{:<16} {:>9} {:>9} {:>8} {:>6}",
        "package", "covered", "lines", "%", "goal"
    );
    let mut under = Vec::new();
    for (package, measured) in &rows {
        let percent = measured.percent();
        let verdict = if percent >= package.goal {
            ""
        } else {
            "  UNDER GOAL"
        };
        println!(
            "{:<16} {:>9} {:>9} {:>7.1}% {:>5.0}%{verdict}",
            package.name, measured.covered, measured.coverable, percent, package.goal
        );
        if percent < package.goal {
            under.push(format!(
                "{} ({percent:.1} % < {:.0} %)",
                package.name, package.goal
            ));
        }
    }
    if !under.is_empty() {
        bail!("coverage under the goal: {}", under.join(", "));
    }
    Ok(())
}

/// The library crates (`crates/*` but testkit, which is test-only) and the
/// service binaries (`bins/*` but xtask, which is tooling).
fn packages(root: &Path) -> anyhow::Result<Vec<Package>> {
    let mut out = Vec::new();
    for (folder, skip, goal) in [
        ("crates", "testkit", LIBRARY_GOAL),
        ("bins", "xtask", BINARY_GOAL),
    ] {
        let mut names = Vec::new();
        for entry in
            std::fs::read_dir(root.join(folder)).with_context(|| format!("listing {folder}/"))?
        {
            let entry = entry?;
            if entry.path().join("Cargo.toml").is_file() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        out.extend(names.into_iter().filter(|n| n != skip).map(|name| Package {
            dir: Path::new(folder).join(&name),
            name,
            goal,
        }));
    }
    Ok(out)
}

/// `CARGO_TARGET_DIR`, else the workspace's `target/`: tarpaulin's
/// instrumented build goes in its `tarpaulin/` folder, kept between runs.
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// Sums tarpaulin's JSON report over the files under `src` (the package's
/// own sources: the other crates its tests ran are measured on their own).
fn measure(report: &Path, src: &Path) -> anyhow::Result<Measured> {
    let text =
        std::fs::read_to_string(report).with_context(|| format!("reading {}", report.display()))?;
    let json: Value = serde_json::from_str(&text).context("parsing tarpaulin's JSON report")?;
    let files = json["files"]
        .as_array()
        .context("tarpaulin's report has no `files`")?;
    let mut measured = Measured {
        covered: 0,
        coverable: 0,
    };
    for file in files {
        let path: PathBuf = file["path"]
            .as_array()
            .context("a file without `path` in tarpaulin's report")?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        if path.starts_with(src) {
            measured.covered += file["covered"].as_u64().unwrap_or(0);
            measured.coverable += file["coverable"].as_u64().unwrap_or(0);
        }
    }
    if measured.coverable == 0 {
        bail!(
            "tarpaulin's report has no line of {} (is the path right?)",
            src.display()
        );
    }
    Ok(measured)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measure_counts_only_the_package_sources() {
        let dir = tempfile::tempdir().unwrap();
        let report = dir.path().join("tarpaulin-report.json");
        let file = |path: &[&str], covered: u64, coverable: u64| {
            serde_json::json!({"path": path, "content": "", "traces": [],
                               "covered": covered, "coverable": coverable})
        };
        let json = serde_json::json!({"files": [
            file(&["/", "w", "crates", "a", "src", "lib.rs"], 8, 10),
            file(&["/", "w", "crates", "a", "src", "m", "x.rs"], 1, 10),
            file(&["/", "w", "crates", "ab", "src", "lib.rs"], 0, 100),
            file(&["/", "w", "crates", "testkit", "src", "lib.rs"], 0, 100),
        ], "coverage": 0.0, "covered": 0, "coverable": 0});
        std::fs::write(&report, json.to_string()).unwrap();
        let measured = measure(&report, Path::new("/w/crates/a/src")).unwrap();
        assert_eq!((measured.covered, measured.coverable), (9, 20));
        assert!((measured.percent() - 45.0).abs() < 1e-9);
        assert!(measure(&report, Path::new("/w/crates/zzz/src")).is_err());
    }

    #[test]
    fn packages_are_the_libraries_and_services() {
        let names: Vec<(String, f64)> = packages(&workspace_root())
            .unwrap()
            .into_iter()
            .map(|p| (p.name, p.goal))
            .collect();
        assert!(names.contains(&("sanitize".into(), LIBRARY_GOAL)));
        assert!(names.contains(&("store-service".into(), BINARY_GOAL)));
        assert!(!names.iter().any(|(n, _)| n == "testkit" || n == "xtask"));
    }
}
