//! `triggers-ingest`: the HTTP front door. The command line (serving is the default, plus the
//! operator subcommands) lives in `cli.rs`.

mod cli;

/// mimalloc instead of glibc's malloc: under load glibc's allocator took a tenth of the
/// machine's CPU (perf) and kept freed memory (per-thread arenas, argon2's 19 MiB blocks) resident.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cli::main().await
}
