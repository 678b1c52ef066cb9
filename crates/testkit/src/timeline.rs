//! Which node of a kept cluster is the primary, read from the data, not
//! from the node's name.
//!
//! After a promotion a kept cluster has two nodes that were primaries. When
//! it starts again, each node's data directory is read **offline**
//! (nothing is started before the choice): its timeline history files,
//! `pg_controldata`, and its WAL through `pg_waldump`. That gives each
//! node's *path*: the timelines it went through, with the position where
//! each one ended.
//!
//! - The primary is the node on the newest timeline with the furthest WAL
//!   ([`choose`]), unless one is named.
//! - Every other node is compared with it: up to the point where their
//!   paths part ([`common_point`]) they hold the same WAL. A node with no
//!   WAL past that point simply follows the primary as a standby; one with
//!   WAL past it **diverged**: that WAL exists on no other node. Its
//!   records are read, and the commits among them are the transactions a
//!   rewind would discard ([`Divergence`]). Rewinding a node whose
//!   divergent WAL holds commits needs the caller's consent.

use std::fmt;
use std::path::Path;
use std::process::Command;
use std::str::FromStr;

use crate::postgres::NodeId;
use crate::process::RunAs;
use crate::{Error, Result};

/// A WAL position (`0/3000148`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl FromStr for Lsn {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        let bad = || format!("`{text}` is not a WAL position");
        let (hi, lo) = text.trim().split_once('/').ok_or_else(bad)?;
        let hi = u64::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u64::from_str_radix(lo, 16).map_err(|_| bad())?;
        if hi > u64::from(u32::MAX) || lo > u64::from(u32::MAX) {
            return Err(bad());
        }
        Ok(Self(hi << 32 | lo))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// One stretch of a node's history: timeline `timeline` until `end` (the
/// switch point to the next timeline; for the last stretch, the end of the
/// node's last WAL record).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stretch {
    /// The timeline.
    pub timeline: u32,
    /// Where it ended (the switch point to the next timeline), or the end
    /// of the node's last record.
    pub end: Lsn,
}

/// What a node's data directory says, read offline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeWal {
    /// The node.
    pub node: NodeId,
    /// Whether it was a standby (`standby.signal`).
    pub was_standby: bool,
    /// Its history, oldest timeline first; never empty.
    pub path: Vec<Stretch>,
}

impl NodeWal {
    /// The node's newest timeline.
    pub fn timeline(&self) -> u32 {
        self.path.last().map_or(1, |s| s.timeline)
    }

    /// Where its WAL ends (the end of its last record).
    pub fn end(&self) -> Lsn {
        self.path.last().map_or(Lsn(0), |s| s.end)
    }
}

impl fmt::Display for NodeWal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: timeline {} at {}",
            self.node,
            self.timeline(),
            self.end()
        )
    }
}

/// The WAL a node has past the point where it parted from the primary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Divergence {
    /// Where the paths part.
    pub from: Lsn,
    /// WAL records past it.
    pub records: usize,
    /// The commits among them: `xid <n> <commit time>`.
    pub commits: Vec<String>,
}

/// The node to make primary among `nodes`: the newest timeline, then the
/// furthest WAL, then the one that was not a standby, then the lowest id.
pub fn choose(nodes: &[NodeWal]) -> Option<&NodeWal> {
    nodes.iter().max_by(|a, b| {
        (
            a.timeline(),
            a.end(),
            !a.was_standby,
            std::cmp::Reverse(a.node),
        )
            .cmp(&(
                b.timeline(),
                b.end(),
                !b.was_standby,
                std::cmp::Reverse(b.node),
            ))
    })
}

/// The position up to which `a` and `b` hold the same WAL (the same
/// timelines, switched at the same points).
pub fn common_point(a: &[Stretch], b: &[Stretch]) -> Lsn {
    let mut common = Lsn(0);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if x.timeline != y.timeline {
            return common;
        }
        let last = i + 1 == a.len() || i + 1 == b.len();
        if last || x.end != y.end {
            return x.end.min(y.end);
        }
        common = x.end;
    }
    common
}

/// The stretches of `path` past `point`, each as (timeline, from, to):
/// `to` is `None` for the last one (to the end of the WAL).
pub fn past(path: &[Stretch], point: Lsn) -> Vec<(u32, Lsn, Option<Lsn>)> {
    let mut start = Lsn(0);
    let mut out = Vec::new();
    for (i, stretch) in path.iter().enumerate() {
        let last = i + 1 == path.len();
        let from = start.max(point);
        if stretch.end > from {
            out.push((stretch.timeline, from, (!last).then_some(stretch.end)));
        }
        start = stretch.end;
    }
    out
}

/// One record of `pg_waldump`'s output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Where it starts.
    pub lsn: Lsn,
    /// Its total length.
    pub len: u64,
    /// Its transaction id (0: none).
    pub xid: u64,
    /// Its resource manager (`Transaction`, `Heap`, `XLOG`, ...).
    pub rmgr: String,
    /// Its description.
    pub desc: String,
}

impl Record {
    /// Where it ends: its start plus its length, aligned to 8 bytes (a
    /// page header inside it makes the true end a little later; this one
    /// is past the start and not past the true end, which is all the
    /// comparisons here need).
    pub fn end(&self) -> Lsn {
        Lsn(self.lsn.0 + ((self.len + 7) & !7))
    }

    /// Whether it commits a transaction.
    pub fn is_commit(&self) -> bool {
        self.rmgr == "Transaction" && self.desc.starts_with("COMMIT")
    }
}

/// The records of `pg_waldump`'s output (its closing error line, which
/// marks the end of the WAL, is not a record).
pub fn parse_waldump(text: &str) -> Vec<Record> {
    text.lines()
        .filter_map(|line| {
            let rmgr = line.strip_prefix("rmgr: ")?.split_whitespace().next()?;
            let field = |name: &str| {
                let at = line.find(name)? + name.len();
                let rest = line[at..].trim_start();
                Some(rest.split(',').next()?.trim().to_owned())
            };
            let len = field("len (rec/tot): ")?
                .split('/')
                .nth(1)?
                .trim()
                .parse()
                .ok()?;
            Some(Record {
                lsn: field("lsn: ")?.parse().ok()?,
                len,
                xid: field("tx: ")?.parse().ok()?,
                rmgr: rmgr.to_owned(),
                desc: line
                    .split_once("desc: ")
                    .map_or("", |(_, d)| d)
                    .trim()
                    .to_owned(),
            })
        })
        .collect()
}

/// The switch points of a timeline history file: (parent timeline, where
/// it ended), oldest first.
pub fn parse_history(text: &str) -> Vec<Stretch> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let timeline = fields.next()?.parse().ok()?;
            let end = fields.next()?.parse().ok()?;
            Some(Stretch { timeline, end })
        })
        .collect()
}

/// Reads `node`'s history from its data directory `data` with the tools
/// in `bindir` (run as `run_as`).
pub(crate) async fn read_node(
    bindir: &Path,
    run_as: Option<RunAs>,
    node: NodeId,
    data: &Path,
) -> Result<NodeWal> {
    let wal = data.join("pg_wal");
    // The newest timeline the node knows: its newest history file, or 1.
    let mut newest = 1_u32;
    let entries = std::fs::read_dir(&wal).map_err(|e| Error::Io {
        context: format!("reading {}", wal.display()),
        source: e,
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(hex) = name.strip_suffix(".history")
            && let Ok(timeline) = u32::from_str_radix(hex, 16)
        {
            newest = newest.max(timeline);
        }
    }
    let control = output(controldata(bindir, run_as, data)).await?;
    let value = |key: &str| {
        control
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_owned())
    };
    let control_timeline: u32 = value("Latest checkpoint's TimeLineID:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let redo: Lsn = value("Latest checkpoint's REDO location:")
        .and_then(|v| v.parse().ok())
        .unwrap_or_default();
    let newest = newest.max(control_timeline);
    let mut path = if newest > 1 {
        let file = wal.join(format!("{newest:08X}.history"));
        parse_history(&std::fs::read_to_string(&file).map_err(|e| Error::Io {
            context: format!("reading {}", file.display()),
            source: e,
        })?)
    } else {
        Vec::new()
    };
    // Read the newest timeline from its last checkpoint (when pg_control
    // knows it) or from where it began.
    let start = if control_timeline == newest {
        redo
    } else {
        path.last().map_or(redo, |s| s.end)
    };
    let records = waldump(bindir, run_as, &wal, newest, start, None).await?;
    let end = records.last().map_or(start, Record::end);
    path.push(Stretch {
        timeline: newest,
        end,
    });
    Ok(NodeWal {
        node,
        was_standby: data.join("standby.signal").exists(),
        path,
    })
}

/// What `node` (its data directory `data`) holds past `point` on `path`.
pub(crate) async fn divergence(
    bindir: &Path,
    run_as: Option<RunAs>,
    data: &Path,
    path: &[Stretch],
    point: Lsn,
) -> Result<Divergence> {
    let wal = data.join("pg_wal");
    let mut found = Divergence {
        from: point,
        ..Divergence::default()
    };
    for (timeline, from, to) in past(path, point) {
        for record in waldump(bindir, run_as, &wal, timeline, from, to).await? {
            if to.is_some_and(|to| record.lsn >= to) {
                break;
            }
            found.records += 1;
            if record.is_commit() {
                let time = record.desc.trim_start_matches("COMMIT").trim();
                let time = time.split(';').next().unwrap_or(time).trim();
                found.commits.push(format!("xid {} at {time}", record.xid));
            }
        }
    }
    Ok(found)
}

/// The value of `key` (e.g. `Latest checkpoint location:`) in
/// `pg_controldata`'s output for `data`.
pub(crate) async fn control_value(
    bindir: &Path,
    run_as: Option<RunAs>,
    data: &Path,
    key: &str,
) -> Result<String> {
    let text = output(controldata(bindir, run_as, data)).await?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim().to_owned())
        .ok_or_else(|| {
            Error::Usage(format!(
                "pg_controldata of {} has no `{key}`",
                data.display()
            ))
        })
}

fn controldata(bindir: &Path, run_as: Option<RunAs>, data: &Path) -> Command {
    let mut cmd = Command::new(bindir.join("pg_controldata"));
    cmd.arg("-D").arg(data).env("LC_ALL", "C");
    RunAs::apply(run_as, &mut cmd);
    cmd
}

/// The records of timeline `timeline` in `wal` from `from` (to `to`).
/// `pg_waldump` ends with an error at the end of the WAL: its output is
/// read whatever its status.
async fn waldump(
    bindir: &Path,
    run_as: Option<RunAs>,
    wal: &Path,
    timeline: u32,
    from: Lsn,
    to: Option<Lsn>,
) -> Result<Vec<Record>> {
    let mut cmd = Command::new(bindir.join("pg_waldump"));
    cmd.arg("--path")
        .arg(wal)
        .arg(format!("--timeline={timeline}"))
        .arg(format!("--start={from}"))
        .env("LC_ALL", "C");
    if let Some(to) = to {
        cmd.arg(format!("--end={to}"));
    }
    RunAs::apply(run_as, &mut cmd);
    let display = format!(
        "pg_waldump {} timeline {timeline} from {from}",
        wal.display()
    );
    let text = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .map_err(|e| Error::Usage(format!("{display}: {e}")))?
        .map_err(|e| Error::Io {
            context: format!("running {display}"),
            source: e,
        })
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())?;
    Ok(parse_waldump(&text))
}

/// A command's standard output, or an error with its output.
async fn output(mut cmd: Command) -> Result<String> {
    let display = format!("{:?}", cmd.get_program());
    cmd.stdin(std::process::Stdio::null());
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .map_err(|e| Error::Usage(format!("{display}: {e}")))?
        .map_err(|e| Error::Io {
            context: format!("running {display}"),
            source: e,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command {
            command: display,
            status: out.status.to_string(),
            output: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lsn(text: &str) -> Lsn {
        text.parse().unwrap()
    }

    fn stretch(timeline: u32, end: &str) -> Stretch {
        Stretch {
            timeline,
            end: lsn(end),
        }
    }

    #[test]
    fn positions() {
        assert_eq!(lsn("0/3000148"), Lsn(0x0300_0148));
        assert_eq!(lsn("1/A"), Lsn((1 << 32) | 10));
        assert_eq!(Lsn((1 << 32) | 10).to_string(), "1/A");
        assert!("3000148".parse::<Lsn>().is_err());
        assert!("0/1FFFFFFFF".parse::<Lsn>().is_err());
    }

    #[test]
    fn history_and_waldump_output() {
        let history = "1\t0/3000148\tno recovery target specified\n\n2\t0/5000000\tno recovery target specified\n";
        assert_eq!(
            parse_history(history),
            vec![stretch(1, "0/3000148"), stretch(2, "0/5000000")]
        );
        let dump = "rmgr: Heap        len (rec/tot):     54/   154, tx:        744, lsn: 0/03000148, prev 0/03000110, desc: INSERT off 2 flags 0x00, blkref #0: rel 1663/16384/16385 blk 0 FPW
rmgr: Transaction len (rec/tot):     34/    34, tx:        744, lsn: 0/030001E8, prev 0/03000148, desc: COMMIT 2026-12-04 17:00:00.123456 UTC
pg_waldump: error: error in WAL record at 0/30001E8: invalid record length at 0/3000210: wanted 24, got 0";
        let records = parse_waldump(dump);
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].lsn, lsn("0/30001E8"));
        assert_eq!(records[1].end(), lsn("0/3000210"));
        assert_eq!(records[0].end(), lsn("0/30001E8"));
        assert_eq!(records[1].xid, 744);
        assert!(records[1].is_commit());
        assert!(!records[0].is_commit());
    }

    #[test]
    fn the_newest_timeline_then_the_furthest_wal_is_the_primary() {
        let node = |id, standby, path: Vec<Stretch>| NodeWal {
            node: NodeId(id),
            was_standby: standby,
            path,
        };
        // pg0 was killed on timeline 1; pg1 was promoted to timeline 2.
        let old = node(0, false, vec![stretch(1, "0/3000180")]);
        let promoted = node(
            1,
            true,
            vec![stretch(1, "0/3000148"), stretch(2, "0/3000200")],
        );
        let nodes = [old.clone(), promoted.clone()];
        assert_eq!(choose(&nodes).unwrap().node, NodeId(1));
        // They share timeline 1 up to the switch point; pg0 has WAL past it.
        let point = common_point(&old.path, &promoted.path);
        assert_eq!(point, lsn("0/3000148"));
        assert_eq!(past(&old.path, point), vec![(1, point, None)]);
        assert_eq!(past(&promoted.path, point), vec![(2, point, None)]);
        // An old primary whose WAL ends at the switch point follows.
        let caught_up = node(0, false, vec![stretch(1, "0/3000148")]);
        let point = common_point(&caught_up.path, &promoted.path);
        assert_eq!(point, lsn("0/3000148"));
        assert!(past(&caught_up.path, point).is_empty());
        // Same timeline: the furthest WAL, then the former primary.
        let a = node(0, true, vec![stretch(1, "0/5000000")]);
        let b = node(1, false, vec![stretch(1, "0/5000000")]);
        assert_eq!(choose(&[a.clone(), b]).unwrap().node, NodeId(1));
        let c = node(1, false, vec![stretch(1, "0/4000000")]);
        assert_eq!(choose(&[a, c]).unwrap().node, NodeId(0));
        // A standby that followed the promotion shares its whole path.
        let follower = node(
            0,
            true,
            vec![stretch(1, "0/3000148"), stretch(2, "0/3000190")],
        );
        let point = common_point(&follower.path, &promoted.path);
        assert_eq!(point, lsn("0/3000190"));
        assert!(past(&follower.path, point).is_empty());
        // The primary's own timeline 1 beyond a node forced to be primary
        // on timeline 1: the promoted node's whole timeline 2 is past it.
        let forced = node(0, false, vec![stretch(1, "0/3000100")]);
        let point = common_point(&promoted.path, &forced.path);
        assert_eq!(point, lsn("0/3000100"));
        assert_eq!(
            past(&promoted.path, point),
            vec![
                (1, point, Some(lsn("0/3000148"))),
                (2, lsn("0/3000148"), None)
            ]
        );
    }
}
