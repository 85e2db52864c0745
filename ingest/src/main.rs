//! `triggers-ingest`: the HTTP front door. The command line (serving is the default, plus the
//! operator subcommands) lives in `cli.rs`.

mod cli;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cli::main().await
}
