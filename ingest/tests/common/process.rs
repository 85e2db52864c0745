//! The real `triggers-ingest` binary as a process on a free port, for tests that read its memory
//! from `/proc` or drive it from a browser. Killed when dropped.
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub struct IngestProcess {
    child: Child,
    /// For raw TCP; not every test binary that includes this module uses it.
    #[allow(dead_code)]
    pub addr: SocketAddr,
    pub base: String,
}

impl IngestProcess {
    /// Start it on `db_url` and wait (up to 30 s) until it answers `/health/ready`.
    pub async fn start(db_url: &str) -> Self {
        Self::start_with(db_url, &[]).await
    }

    /// [`IngestProcess::start`] with more environment variables.
    pub async fn start_with(db_url: &str, extra_env: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let child = Command::new(env!("CARGO_BIN_EXE_triggers-ingest"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", db_url)
            .env("TRIGGERS_INGEST_ADDR", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .envs(extra_env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn triggers-ingest");
        let ingest = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            base: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        let started = Instant::now();
        while !client
            .get(format!("{}/health/ready", ingest.base))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "triggers-ingest never became ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ingest
    }

    /// Peak resident memory so far (`VmHWM` of /proc/<pid>/status), in kB.
    pub fn peak_rss_kb(&self) -> u64 {
        let pid = self.child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
        status
            .lines()
            .find_map(|line| {
                line.strip_prefix("VmHWM:")?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("VmHWM missing from /proc/{pid}/status"))
    }
}

impl Drop for IngestProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
