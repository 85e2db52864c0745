#!/usr/bin/env bash
# `Payload::parse` before and after: the payload checks of a base revision (default `main`) and
# of the working tree, compiled into one release binary and timed on the same inputs in the same
# process (rounds interleaved; the fastest of 61 rounds, so other load on the machine counts
# least). Inputs: the bench's ~300-byte order event, and ~256 KiB of pretty-printed records, of
# minified records, of one long string, and of non-ASCII text with escapes.
#
#   deploy/local/bench-parse.sh [BASE]
#
# Builds a throwaway crate in target/bench-parse (offline: serde, serde_json and memchr from
# the local registry) from `git show BASE:shared/src/models/values.rs` (and its `values/`
# submodules, if any) and the working tree's.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
base=${1:-main}
dir="$root/target/bench-parse"
rm -rf "$dir/src"
mkdir -p "$dir/src/old" "$dir/src/new"

# One copy of the payload module per side; its submodules (`mod x;`) are found beside it.
place() { # side, then how to read a file of shared/src/models/ (a command taking the path)
  local side=$1 sub
  shift
  "$@" shared/src/models/values.rs >"$dir/src/$side.rs"
  for sub in $(sed -n 's/^mod \([a-z_]*\);$/\1/p' "$dir/src/$side.rs"); do
    "$@" "shared/src/models/values/$sub.rs" >"$dir/src/$side/$sub.rs"
    sed -i "s|^mod $sub;\$|#[path = \"$side/$sub.rs\"]\\nmod $sub;|" "$dir/src/$side.rs"
  done
}
from_base() { git show "$base:$1"; }
place old from_base
place new cat

cat >"$dir/Cargo.toml" <<'EOF'
[package]
name = "bench-parse"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
serde = { version = "1", features = ["derive"] }
serde_json = { version = "1", features = ["raw_value"] }
memchr = "2.7"

[workspace]
EOF

cat >"$dir/src/main.rs" <<'EOF'
#![allow(dead_code, unused_imports)]
mod new;
mod old;

use std::hint::black_box;
use std::time::Instant;

use serde_json::value::RawValue;

/// The bench's event payload (bench/src/load.rs `event_body`).
fn order(seq: u64) -> String {
    format!(
        r#"{{"bench_run":"r1","seq":{seq},"order_id":"ord_{seq:010}","amount_cents":{},"currency":"EUR","customer":{{"id":"cus_{:06}","email":"user{}@example.com"}},"items":[{{"sku":"SKU-1001","quantity":1,"unit_price_cents":1999}},{{"sku":"SKU-2002","quantity":{},"unit_price_cents":500}}],"placed_at":"2026-11-27T04:00:00Z"}}"#,
        1999 + (seq % 500) * 100,
        seq % 100_000,
        seq % 100_000,
        1 + seq % 3
    )
}

fn records(pretty: bool) -> String {
    let (nl, sp) = if pretty { ("\n  ", " ") } else { ("", "") };
    let mut items = Vec::new();
    for i in 0u64.. {
        items.push(format!(
            "{{{nl}\"id\":{sp}{i},{sp}\"name\":{sp}\"item number {i}\",{sp}\"price\":{sp}{}.{:02},{sp}\"tags\":{sp}[\"a\",{sp}\"b\\u00e9\"],{sp}\"ok\":{sp}true,{sp}\"ratio\":{sp}-1.25e-3,{sp}\"nested\":{sp}{{\"x\":{sp}null,{sp}\"y\":{sp}[1,{sp}2,{sp}3]}}{nl}}}",
            i * 7 % 1000,
            i % 100
        ));
        if items.iter().map(String::len).sum::<usize>() > 250 * 1024 {
            break;
        }
    }
    format!("{{\"items\":{sp}[{}]}}", items.join(if pretty { ",\n" } else { "," }))
}

fn one_string() -> String {
    let text = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. ";
    format!("{{\"doc\": \"{}\", \"n\": 1}}", text.repeat(255 * 1024 / text.len()))
}

fn unicode() -> String {
    let chunk = "héllo wörld 😀 \\ud83d\\ude00 \\n\\t\\\" 日本語のテキスト ";
    format!("{{\"s\": \"{}\"}}", chunk.repeat(255 * 1024 / chunk.len()))
}

/// Nanoseconds per call, the fastest of 61 rounds, before and after (rounds interleaved).
fn measure(name: &str, inputs: &[Box<RawValue>], calls: usize) {
    let mut best = [f64::MAX; 2];
    for _ in 0..61 {
        for (side, best) in best.iter_mut().enumerate() {
            let batch: Vec<Box<RawValue>> = (0..calls).map(|k| inputs[k % inputs.len()].clone()).collect();
            let start = Instant::now();
            for raw in batch {
                let ok = if side == 0 {
                    old::Payload::parse(black_box(raw)).is_ok()
                } else {
                    new::Payload::parse(black_box(raw)).is_ok()
                };
                assert!(black_box(ok), "{name} must be accepted");
            }
            *best = best.min(start.elapsed().as_secs_f64() * 1e9 / calls as f64);
        }
    }
    let bytes = inputs[0].get().len();
    println!(
        "{name:<26} {bytes:>7} B   before {:>9.0} ns   after {:>9.0} ns   after/before {:.2}",
        best[0],
        best[1],
        best[1] / best[0]
    );
}

fn main() {
    let raw = |text: String| RawValue::from_string(text).expect("valid JSON");
    let orders: Vec<Box<RawValue>> = (0..64).map(|i| raw(order(i))).collect();
    measure("order event", &orders, 20_000);
    measure("records, pretty-printed", &[raw(records(true))], 40);
    measure("records, minified", &[raw(records(false))], 40);
    measure("one long string", &[raw(one_string())], 40);
    measure("non-ASCII and escapes", &[raw(unicode())], 40);
}
EOF

echo "bench-parse.sh: Payload::parse of $base ($(git rev-parse --short "$base")) vs the working tree; load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
CARGO_TARGET_DIR="$dir/target" cargo build --release --offline --quiet --manifest-path "$dir/Cargo.toml"
"$dir/target/release/bench-parse"
