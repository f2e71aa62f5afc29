//! What a topology run leaves for machines and for the history: every figure as JSON, the
//! command and the commit measured.

use std::process::Command;

use super::{Outcome, TopologyBench};
use crate::broker::machine;

/// The command that ran this benchmark, as typed.
pub(super) fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("./habitat bench {}", args.join(" "))
        .trim_end()
        .to_owned()
}

/// The checked-out commit (short hash), or `unknown` outside a git work tree.
pub(super) fn commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Every figure of every run, for machines.
pub(super) fn figures(args: &TopologyBench, outcomes: &[Outcome]) -> serde_json::Value {
    let runs: Vec<serde_json::Value> = outcomes
        .iter()
        .map(|o| {
            let cpu: f64 = o.costs.iter().map(|c| c.cpu_seconds).sum();
            serde_json::json!({
                "run": o.scenario.label,
                "exactly_once": o.scenario.exactly_once,
                "instances": o.scenario.instances,
                "data": o.scenario.scale,
                "rate": o.scenario.rate,
                "events_posted": o.posted,
                "rows": o.rows,
                "seconds": o.seconds,
                "events_per_second": o.events_per_second(),
                "repetitions_events_per_second": o.repetitions,
                "year_events_per_second": o.year_events as f64 / o.year_seconds,
                "p50_ms": o.latency_ms[0],
                "p95_ms": o.latency_ms[1],
                "p99_ms": o.latency_ms[2],
                "cpu_seconds_per_1000_events": cpu * 1000.0 / o.posted as f64,
                "late_changes": o.late_changes,
                "processes": o.costs.iter().map(|c| serde_json::json!({
                    "name": c.name,
                    "cpu_seconds": c.cpu_seconds,
                    "cpu_seconds_per_1000_events": c.cpu_seconds * 1000.0 / o.posted as f64,
                    "peak_memory_mib": c.peak_mib,
                })).collect::<Vec<_>>(),
                "latency_by_type": o.latency_by_type.iter().map(|(t, rows, p50, p99)| serde_json::json!({
                    "record_type": t, "rows": rows, "p50_ms": p50, "p99_ms": p99,
                })).collect::<Vec<_>>(),
                "years": o.years.iter().map(|y| serde_json::json!({
                    "year": y.year,
                    "events": y.events,
                    "seconds": y.seconds,
                    "cpu_seconds": y.cpu_seconds.iter()
                        .map(|(name, s)| (name.clone(), serde_json::json!(s)))
                        .collect::<serde_json::Map<_, _>>(),
                    "resident_memory_mib": y.resident_mib.iter()
                        .map(|(name, mib)| (name.clone(), serde_json::json!(mib)))
                        .collect::<serde_json::Map<_, _>>(),
                    "books_check": y.books.as_ref().map(|b| serde_json::json!({
                        "seconds": b.seconds, "cpu_seconds": b.cpu_seconds, "breaks": b.breaks,
                    })),
                })).collect::<Vec<_>>(),
                "broker_ceiling_records_per_second": o.ceiling.map(|(p, c)| serde_json::json!({
                    "produce": p, "consume": c,
                })),
            })
        })
        .collect();
    serde_json::json!({
        "commit": commit(),
        "command": command_line(),
        "machine": machine(),
        "shape": {
            "tenants": args.tenants,
            "members": args.members,
            "contributions": args.contributions,
            "partitions": args.partitions,
            "years": args.years,
            "via_proxy": args.via_proxy,
        },
        "runs": runs,
    })
}
