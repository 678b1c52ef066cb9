//! The README's walkthrough, run as it is written against the real
//! platform (the gateway and store-service binaries, PostgreSQL, OpenBao,
//! a token from its issuer): its `export` lines become this platform's URL
//! and token, every other line runs in `bash -euo pipefail` with this
//! `storectl` first on `PATH`.

use std::{path::Path, process::Command};

use clap::Parser as _;
use store_client::ClientError;
use storectl::cli::Cli;
use system_tests::Platform;

/// The lines of the README's walkthrough block.
fn walkthrough() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let section = readme
        .split("## Walkthrough")
        .nth(1)
        .expect("a Walkthrough section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a sh block");
    block.lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_runs() {
    let lines = walkthrough();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("export STORECTL_TOKEN="))
    );
    let platform = Platform::start(0).await;
    let token = platform
        .token("stores:read stores:write stores:secrets")
        .await;
    let script: Vec<&str> = lines
        .iter()
        .map(String::as_str)
        .filter(|l| !l.starts_with("export STORECTL_"))
        .collect();
    let bin = Path::new(env!("CARGO_BIN_EXE_storectl"));
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script.join("\n")])
        .env("PATH", path)
        .env("STORECTL_URL", platform.gateway_url(""))
        .env("STORECTL_TOKEN", &token)
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{}\n{stdout}\n{stderr}",
        output.status
    );
    for shown in [
        "Corner Shop",
        "ACTIVE",
        "CREATED",
        "UPDATED",
        "WIFI_PASSWORD",
        "hunter2",
    ] {
        assert!(stdout.contains(shown), "{shown} missing from:\n{stdout}");
    }
    assert!(!stderr.contains(&token), "the token is never printed");

    // The same commands in this process, with `--json`: what each prints.
    let url = platform.gateway_url("");
    let run = |args: Vec<String>| {
        let (url, token) = (url.clone(), token.clone());
        async move {
            let mut argv = vec![
                "storectl".to_owned(),
                "--url".into(),
                url,
                "--token".into(),
                token,
            ];
            argv.extend(args);
            let mut out = Vec::new();
            let result = storectl::run(Cli::parse_from(argv), &mut out).await;
            (result, String::from_utf8(out).unwrap())
        }
    };
    let args = |text: &str| text.split(' ').map(str::to_owned).collect::<Vec<_>>();
    let (created, out) = run(args("--json create JSON_Shop --key walkthrough-json")).await;
    created.unwrap();
    let store: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = store["store"]["id"].as_str().unwrap().to_owned();
    for command in [
        format!("--json show {id}"),
        format!("--json activate {id}"),
        format!("--json history {id} --limit 1"),
        format!("--json secrets {id}"),
        "--json list --limit 2".to_owned(),
        format!("history {id}"),
        "list --limit 1".to_owned(),
    ] {
        let (result, out) = run(args(&command)).await;
        result.unwrap_or_else(|e| panic!("{command}: {e:#}"));
        assert!(!out.is_empty(), "{command}");
    }
    // Back to ACTIVE once decommissioned: the API's 409, typed.
    run(args(&format!("decommission {id}"))).await.0.unwrap();
    let (refused, _) = run(args(&format!("activate {id}"))).await;
    let refused = refused.unwrap_err();
    let problem = refused
        .downcast_ref::<ClientError>()
        .expect("the API's refusal");
    assert_eq!(
        problem.code(),
        Some("INVALID_STATUS_TRANSITION"),
        "{problem}"
    );
    assert!(storectl::output::problem_line(problem).starts_with("409 INVALID_STATUS_TRANSITION"));
    // Bad input never reaches the API.
    for bad in [
        "create Bad --config [1]",
        "create Bad --config nope",
        "list --status LOST",
    ] {
        assert!(run(args(bad)).await.0.is_err(), "{bad}");
    }
}

#[test]
fn a_refusal_exits_1_with_the_problem_and_bad_usage_exits_2() {
    let bin = env!("CARGO_BIN_EXE_storectl");
    let usage = Command::new(bin)
        .arg("show")
        .arg("not-a-uuid")
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));
    // Nothing listens on port 9: the error says so, exit 1.
    let refused = Command::new(bin)
        .args(["--url", "http://127.0.0.1:9", "--token", "t", "list"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.starts_with("error: "), "{stderr}");
}
