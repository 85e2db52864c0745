//! The SVG chart of one run: three stacked panels over the run's time (since the first POST):
//! throughput (accepted and delivered events/s), the delivery backlog, and end-to-end latency
//! (p50 and p99 of the events arriving in each step). Written by hand, a few polylines: no
//! plotting crate, no fonts needed to produce it.

use std::fmt::Write as _;

use crate::load::{Outcome, SAMPLE_EVERY};

const WIDTH: f64 = 900.0;
const PANEL: f64 = 200.0;
const GAP: f64 = 40.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;

/// One line of a panel: a colour, a legend, and (seconds, value) points.
struct Series {
    colour: &'static str,
    label: &'static str,
    points: Vec<(f64, f64)>,
}

pub fn svg(o: &Outcome) -> String {
    let step = SAMPLE_EVERY.as_secs_f64();
    let mut accepted_rate = Vec::new();
    let mut delivered_rate = Vec::new();
    let mut backlog = Vec::new();
    let mut previous = (0.0, 0, 0);
    for s in &o.samples {
        let t = s.at.as_secs_f64();
        let dt = (t - previous.0).max(1e-3);
        accepted_rate.push((t, s.accepted.saturating_sub(previous.1) as f64 / dt));
        delivered_rate.push((t, s.delivered.saturating_sub(previous.2) as f64 / dt));
        backlog.push((t, s.backlog() as f64));
        previous = (t, s.accepted, s.delivered);
    }
    let (mut p50, mut p99) = (Vec::new(), Vec::new());
    for (i, l) in o.end_to_end_by_step.iter().enumerate() {
        if let Some(l) = l {
            let t = (i as f64 + 0.5) * step;
            p50.push((t, l.p50));
            p99.push((t, l.p99));
        }
    }
    let end = o
        .samples
        .last()
        .map(|s| s.at.as_secs_f64())
        .unwrap_or(0.0)
        .max(p99.last().map_or(0.0, |p| p.0))
        .max(step);
    let panels = [
        (
            "throughput, events/s",
            vec![
                Series {
                    colour: "#1f77b4",
                    label: "accepted (202)",
                    points: accepted_rate,
                },
                Series {
                    colour: "#2ca02c",
                    label: "delivered",
                    points: delivered_rate,
                },
            ],
        ),
        (
            "backlog (accepted - delivered), events",
            vec![Series {
                colour: "#d62728",
                label: "backlog",
                points: backlog,
            }],
        ),
        (
            "end-to-end latency by arrival, ms",
            vec![
                Series {
                    colour: "#9467bd",
                    label: "p50",
                    points: p50,
                },
                Series {
                    colour: "#ff7f0e",
                    label: "p99",
                    points: p99,
                },
            ],
        ),
    ];
    let height = TOP + panels.len() as f64 * (PANEL + GAP) + 10.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let mode = match (o.args.rate, o.args.drain_start.is_some(), o.args.slow_events) {
        (Some(r), _, _) if o.args.recover_events.is_some() => format!(
            "open loop, {r} events/s, during a recovery of {}",
            o.args.recover_events.unwrap_or_default()
        ),
        (Some(r), _, _) => format!("open loop, {r} events/s"),
        (None, true, _) => "drain".to_string(),
        (None, false, n) if n > 0 => format!("isolation, {n} slow events queued first"),
        _ => format!("closed loop, {} connections", o.args.concurrency),
    };
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="20" font-size="14">triggers-bench {}: {} events, {mode}; time since the first POST, s</text>"#,
        escape(&o.run_id),
        o.args.events
    );
    for (i, (title, series)) in panels.iter().enumerate() {
        let top = TOP + i as f64 * (PANEL + GAP);
        panel(&mut out, top, end, title, series);
    }
    out.push_str("</svg>\n");
    out
}

fn panel(out: &mut String, top: f64, end: f64, title: &str, series: &[Series]) {
    let plot_w = WIDTH - LEFT - RIGHT;
    let max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let x = |t: f64| LEFT + t / end * plot_w;
    let y = |v: f64| top + PANEL - v / max * PANEL;
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{PANEL}" fill="none" stroke="#999"/>"##
    );
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="{}">{}</text>"#,
        top - 6.0,
        escape(title)
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="end">{max:.0}</text>"#,
        LEFT - 6.0,
        top + 10.0
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="end">0</text>"#,
        LEFT - 6.0,
        top + PANEL
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="end">{end:.1} s</text>"#,
        WIDTH - RIGHT,
        top + PANEL + 14.0
    );
    for (k, s) in series.iter().enumerate() {
        let points: Vec<String> = s
            .points
            .iter()
            .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#,
            s.colour,
            points.join(" ")
        );
        let lx = WIDTH - RIGHT - 150.0;
        let ly = top + 16.0 + k as f64 * 16.0;
        let _ = writeln!(
            out,
            r#"<line x1="{lx}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="3"/><text x="{}" y="{ly}">{}</text>"#,
            ly - 4.0,
            lx + 20.0,
            ly - 4.0,
            s.colour,
            lx + 26.0,
            escape(s.label)
        );
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::args::RunArgs;
    use crate::load::Sample;
    use crate::stats::Latency;

    #[test]
    fn the_chart_has_a_line_per_series_scaled_to_its_panel() {
        let sample = |ms, accepted, delivered| Sample {
            at: Duration::from_millis(ms),
            sent: accepted,
            accepted,
            delivered,
            fanout: 1,
        };
        let outcome = Outcome {
            args: RunArgs {
                rate: Some(400),
                events: 400,
                ..RunArgs::default()
            },
            run_id: "r<1>".into(),
            sent: 400,
            accepted: 400,
            rejected: BTreeMap::new(),
            send_wall: Duration::from_secs(1),
            post_latency: None,
            webhook: None,
            hit_time_limit: false,
            samples: vec![sample(250, 100, 0), sample(500, 200, 50), sample(750, 300, 300)],
            end_to_end_by_step: vec![
                None,
                Latency::of(&mut [Duration::from_millis(5), Duration::from_millis(40)]),
            ],
            backlog_at_schedule_end: Some(0),
            slow_accepted: None,
            recovery: None,
            poison: None,
        };
        let svg = svg(&outcome);
        assert!(svg.starts_with("<svg "), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 5);
        // The run id is escaped; the largest backlog (150) and rate (1,000/s) label their axes.
        assert!(svg.contains("r&lt;1&gt;"));
        assert!(svg.contains(">150</text>"), "{svg}");
        assert!(svg.contains(">1000</text>"), "{svg}");
        assert!(svg.contains("open loop, 400 events/s"));
    }
}
