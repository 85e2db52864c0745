//! Rendering: one run as text or as one JSON object, and `summarize` (several runs' JSON → a
//! table with the median of each column).

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use serde_json::{Value, json};

use crate::load::{Outcome, per_second};
use crate::stats::{Latency, median, round3};

pub fn to_json(o: &Outcome) -> Value {
    let delivery = o.webhook.as_ref().map(|w| {
        json!({
            "delivered": w.delivered,
            "missing": w.missing,
            "duplicates": w.duplicates,
            "unknown": w.unknown,
            "delivery_throughput_eps": w.delivery_span.map(|s| round3(per_second(w.delivered, s))),
            "drain_after_send_s": w.drain_after_send.map(|d| round3(d.as_secs_f64())),
            "backlog_after_send": w.backlog_after_send,
            "drain_after_send_eps": w.drain_after_send_rate().map(round3),
            "e2e_latency_ms": w.end_to_end.map(Latency::to_json),
        })
    });
    let failure = o.failure();
    let timeline: Vec<Value> = o
        .samples
        .iter()
        .map(|s| {
            json!({"t_s": round3(s.at.as_secs_f64()), "sent": s.sent, "accepted": s.accepted,
                   "delivered": s.delivered, "backlog": s.backlog()})
        })
        .collect();
    let open_loop = o.args.rate.map(|rate| {
        json!({
            "rate_eps": rate,
            "duration_s": round3(o.args.events as f64 / rate as f64),
            "not_sent_in_flight_full": o.rejected.get("not_sent_in_flight_full").copied().unwrap_or(0),
            "backlog_at_schedule_end": o.backlog_at_schedule_end,
        })
    });
    let isolation = o.slow_accepted.map(|accepted| {
        json!({
            "slow_events_accepted": accepted,
            "slow_delay_s": round3(o.args.slow_delay.as_secs_f64()),
            "same_organisation": o.args.slow_endpoint,
        })
    });
    let recovery = o.recovery.as_ref().map(|r| {
        json!({
            "count": r.count,
            "enqueued_at_end": r.enqueued,
            "done_at_end": r.done,
            "received": r.received,
            "rate_eps": r.rate_eps.map(round3),
            "elapsed_s": r.elapsed.map(|d| round3(d.as_secs_f64())),
        })
    });
    let poison = o.poison.as_ref().map(|p| {
        let kinds: Vec<&str> = o.args.poison_kinds.iter().map(|k| k.name()).collect();
        json!({
            "connections": o.args.poison.unwrap_or_default(),
            "payloads": kinds,
            "sent": p.sent,
            "answers": p.answers,
            "rate_eps": round3(per_second(p.sent, p.wall)),
            "server_errors": p.server_errors(),
        })
    });
    json!({
        "run_id": o.run_id,
        "url": o.args.base_url,
        "events": o.args.events,
        "concurrency": o.args.concurrency,
        "batch_size": o.args.batch_size,
        "orgs": o.args.orgs,
        "endpoints_per_org": o.args.endpoints,
        "deliveries_per_event": o.args.matching,
        "sent": o.sent,
        "accepted": o.accepted,
        "rejected": o.rejected,
        "rejected_total": o.rejected_total(),
        "wall_time_s": round3(o.send_wall.as_secs_f64()),
        "ingest_throughput_eps": round3(o.ingest_throughput()),
        "post_latency_ms": o.post_latency.map(Latency::to_json),
        "delivery": delivery,
        "open_loop": open_loop,
        "isolation": isolation,
        "recovery": recovery,
        "poison": poison,
        // Without webhooks nothing is delivered to us, so there is no backlog to speak of.
        "peak_backlog": o.webhook.as_ref().and(o.samples.iter().map(|s| s.backlog()).max()),
        "timeline_step_s": round3(crate::load::SAMPLE_EVERY.as_secs_f64()),
        "timeline": timeline,
        "hit_time_limit": o.hit_time_limit,
        "ok": failure.is_none(),
        "failure": failure,
    })
}

fn lat(l: Option<Latency>) -> String {
    match l {
        Some(l) => format!(
            "p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
            l.p50, l.p95, l.p99, l.max
        ),
        None => "-".into(),
    }
}

pub fn to_text(o: &Outcome) -> String {
    let mut s = String::new();
    let a = &o.args;
    let _ = writeln!(
        s,
        "triggers-bench {}: {} events{}, {} connections, {} orgs{} -> {}",
        o.run_id,
        a.events,
        if a.batch_size > 1 {
            format!(" in batches of {}", a.batch_size)
        } else {
            String::new()
        },
        a.concurrency,
        a.orgs,
        match (a.webhook, a.explicit_endpoints()) {
            (false, _) => String::new(),
            (true, false) => ", webhook delivery".to_string(),
            (true, true) => format!(
                ", webhook delivery to {} of {} endpoints per org",
                a.matching, a.endpoints
            ),
        },
        a.base_url
    );
    let rejected = if o.rejected.is_empty() {
        "none".to_string()
    } else {
        o.rejected
            .iter()
            .map(|(k, v)| format!("{k} x{v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        s,
        "  accepted (202)   {} of {} sent ({} requested); rejected: {rejected}",
        o.accepted, o.sent, a.events
    );
    let _ = writeln!(s, "  wall time        {:.2} s", o.send_wall.as_secs_f64());
    let _ = writeln!(s, "  ingest           {:.0} events/s", o.ingest_throughput());
    let _ = writeln!(s, "  POST latency     {}", lat(o.post_latency));
    if let Some(rate) = a.rate {
        let _ = writeln!(
            s,
            "  open loop        {rate} events/s scheduled; backlog at the end of the schedule {}",
            o.backlog_at_schedule_end
                .map_or("-".to_string(), |b| b.to_string())
        );
    }
    if let Some(slow) = o.slow_accepted {
        let _ = writeln!(
            s,
            "  isolation        {slow} events of a slow {} ({:.1} s per delivery) queued first",
            if a.slow_endpoint {
                "endpoint of the first organisation"
            } else {
                "organisation"
            },
            a.slow_delay.as_secs_f64()
        );
    }
    if let Some(r) = &o.recovery {
        let _ = writeln!(
            s,
            "  recovery         {} of {} deliveries received ({}), {} enqueued{}",
            r.received,
            r.count,
            r.rate_eps.map_or("-".to_string(), |e| format!("{e:.0}/s")),
            r.enqueued,
            if r.done { ", done" } else { ", still running" }
        );
    }
    if let Some(p) = &o.poison {
        let kinds: Vec<&str> = a.poison_kinds.iter().map(|k| k.name()).collect();
        let answers: Vec<String> = p.answers.iter().map(|(k, v)| format!("{k} x{v}")).collect();
        let _ = writeln!(
            s,
            "  poison           {} payloads ({}) from {} connections meanwhile, {:.0}/s; answered {}",
            p.sent,
            kinds.join(", "),
            a.poison.unwrap_or_default(),
            per_second(p.sent, p.wall),
            answers.join(", ")
        );
    }
    if let Some(w) = &o.webhook {
        let _ = writeln!(
            s,
            "  delivered        {} deliveries of {} owed ({} accepted x {}); missing {}; duplicates {}; unknown {}",
            w.delivered,
            o.accepted * a.matching as u64,
            o.accepted,
            a.matching,
            w.missing,
            w.duplicates,
            w.unknown
        );
        if let (Some(span), Some(drain)) = (w.delivery_span, w.drain_after_send) {
            let _ = writeln!(
                s,
                "  delivery         {:.0} deliveries/s (last arrival {:.2} s after the last POST)",
                per_second(w.delivered, span),
                drain.as_secs_f64()
            );
        }
        if let Some(rate) = w.drain_after_send_rate() {
            let _ = writeln!(
                s,
                "  after sending    {} deliveries left, drained at {rate:.0}/s",
                w.backlog_after_send
            );
        }
        let _ = writeln!(s, "  end-to-end       {}", lat(w.end_to_end));
    }
    match o.failure() {
        Some(f) => {
            let _ = writeln!(s, "  FAILED: {f}");
        }
        None => {
            let _ = writeln!(s, "  ok");
        }
    }
    s
}

/// The columns of `summarize`: a header, a JSON pointer into a run's output, and decimals.
const COLUMNS: [(&str, &str, usize); 14] = [
    ("ingest ev/s", "/ingest_throughput_eps", 0),
    ("POST p50 ms", "/post_latency_ms/p50", 1),
    ("POST p99 ms", "/post_latency_ms/p99", 1),
    ("deliveries/s", "/delivery/delivery_throughput_eps", 0),
    ("e2e p50 ms", "/delivery/e2e_latency_ms/p50", 1),
    ("e2e p99 ms", "/delivery/e2e_latency_ms/p99", 1),
    ("rejected", "/rejected_total", 0),
    ("missing", "/delivery/missing", 0),
    ("peak backlog", "/peak_backlog", 0),
    ("drain after/s", "/delivery/drain_after_send_eps", 0),
    ("backlog end", "/open_loop/backlog_at_schedule_end", 0),
    ("recovered ev/s", "/recovery/rate_eps", 0),
    ("poison/s", "/poison/rate_eps", 0),
    ("poison 5xx", "/poison/server_errors", 0),
];

/// Read each run's `--json` output and print them with the median of every column. Returns the
/// table and whether every run was ok.
pub fn summarize(files: &[PathBuf]) -> anyhow::Result<(String, bool)> {
    let mut runs = Vec::with_capacity(files.len());
    for f in files {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let v: Value =
            serde_json::from_str(text.trim()).with_context(|| format!("parsing {}", f.display()))?;
        runs.push(v);
    }
    Ok(summary_table(&runs))
}

pub fn summary_table(runs: &[Value]) -> (String, bool) {
    let mut s = String::new();
    let cell = |v: Option<f64>, decimals: usize| v.map_or("-".to_string(), |x| format!("{x:.decimals$}"));
    let _ = write!(s, "{:<8}", "run");
    for (h, _, _) in COLUMNS {
        let _ = write!(s, "{h:>14}");
    }
    let _ = writeln!(s, "  ok");
    let mut all_ok = true;
    for (i, run) in runs.iter().enumerate() {
        let _ = write!(s, "{:<8}", i + 1);
        for (_, ptr, decimals) in COLUMNS {
            let _ = write!(
                s,
                "{:>14}",
                cell(run.pointer(ptr).and_then(Value::as_f64), decimals)
            );
        }
        let ok = run.get("ok").and_then(Value::as_bool).unwrap_or(false);
        all_ok &= ok;
        let _ = writeln!(s, "  {}", if ok { "yes" } else { "NO" });
    }
    let _ = write!(s, "{:<8}", "median");
    for (_, ptr, decimals) in COLUMNS {
        let values: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.pointer(ptr).and_then(Value::as_f64))
            .collect();
        let _ = write!(s, "{:>14}", cell(median(&values), decimals));
    }
    let _ = writeln!(s);
    (s, all_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_prints_each_run_and_the_medians() {
        let run = |eps: f64, p50: f64, ok: bool| {
            json!({"ingest_throughput_eps": eps, "post_latency_ms": {"p50": p50, "p99": 9.0},
                   "rejected_total": 0, "delivery": null, "ok": ok})
        };
        let (table, ok) = summary_table(&[
            run(100.0, 3.0, true),
            run(300.0, 1.0, true),
            run(200.0, 2.0, true),
        ]);
        let median_line = table.lines().last().expect("a median line");
        assert_eq!(
            median_line.split_whitespace().collect::<Vec<_>>(),
            [
                "median", "200", "2.0", "9.0", "-", "-", "-", "0", "-", "-", "-", "-", "-", "-", "-"
            ]
        );
        assert!(ok);
        let (_, ok) = summary_table(&[run(1.0, 1.0, true), run(1.0, 1.0, false)]);
        assert!(!ok);
    }
}
