//! The short chaos run CI makes (issue 16): `chaos --duration 60s --seed 2`
//! (the `cargo xtask chaos` binary), whose seed puts the PostgreSQL
//! primary's kill and promotion, a gateway's kill, a NATS node's kill, the
//! store service's kill, OpenBao frozen and the primary frozen first. It
//! must end with no acknowledged write lost, none applied twice and no
//! 5xx the contract does not allow, and it must have injected faults of at
//! least four kinds.

use std::process::Command;

#[test]
fn a_short_seeded_chaos_run_loses_nothing_and_answers_only_allowed_errors() {
    let output = Command::new(env!("CARGO_BIN_EXE_chaos"))
        .args(["--duration", "60s", "--seed", "2"])
        .output()
        .expect("the chaos binary runs");
    let report = String::from_utf8_lossy(&output.stdout);
    let log = String::from_utf8_lossy(&output.stderr);
    let last = report.lines().last().unwrap_or_default();
    assert!(
        output.status.success(),
        "chaos failed ({}):\n{report}\n{log}",
        output.status
    );
    let field = |name: &str| -> u64 {
        last.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name}= in the last line `{last}`"))
    };
    assert!(last.starts_with("chaos: faults="), "{last}");
    assert_eq!(
        (field("lost"), field("duplicated"), field("unexplained_5xx")),
        (0, 0, 0),
        "{report}"
    );
    assert!(field("acknowledged") > 0, "{report}");
    let kinds = report
        .lines()
        .find_map(|l| l.split("kinds of fault ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<u32>().ok())
        .expect("the kinds of fault line");
    assert!(kinds >= 4, "only {kinds} kinds of fault:\n{report}\n{log}");
    println!("{report}");
}
