//! `triggers-bench`: a bounded load generator for a Triggers ingest (and worker) on this machine.
//! See `triggers-bench --help` (`args.rs`) and the README's "Benchmark" section.

mod args;
mod chart;
mod load;
mod poison;
mod receiver;
mod recovery;
mod report;
mod stats;
mod timeline;

use std::process::ExitCode;

use args::Command;

/// The same allocator as the services, so the client costs the shared cores as little as it can.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let command = match args::parse(std::env::args().skip(1)) {
        Ok(c) => c,
        // Usage errors exit 2 with the usage; `--help` prints on stdout and exits 0.
        Err(e) => e.exit(),
    };
    match command {
        Command::Summarize(files) => match report::summarize(&files) {
            Ok((table, all_ok)) => {
                print!("{table}");
                if all_ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("triggers-bench: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Run(run) => {
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("triggers-bench: starting the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let admin_token = std::env::var("TRIGGERS_ADMIN_TOKEN")
                .ok()
                .filter(|t| !t.is_empty());
            let json = run.json;
            let chart = run.chart.clone();
            match runtime.block_on(load::run(*run, admin_token)) {
                Ok(outcome) => {
                    if let Some(path) = chart
                        && let Err(e) = std::fs::write(&path, chart::svg(&outcome))
                    {
                        eprintln!("triggers-bench: writing the chart {}: {e}", path.display());
                        return ExitCode::FAILURE;
                    }
                    if json {
                        println!("{}", report::to_json(&outcome));
                    } else {
                        print!("{}", report::to_text(&outcome));
                    }
                    if let Some(f) = outcome.failure() {
                        eprintln!("triggers-bench: {f}");
                        return ExitCode::FAILURE;
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("triggers-bench: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
