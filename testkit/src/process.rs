//! The service binaries as real processes: started on a free port with a clean environment,
//! awaited until `/health/ready` answers, stopped with a real SIGTERM (no shelling out to
//! `kill`), killed when dropped.

use std::{
    fs::File,
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use nix::{sys::signal, unistd::Pid};

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A binary of the workspace (`triggers-ingest`, `triggers-worker`, `example-receiver`), built
/// beside the running test binary (`target/<profile>/deps/..`). The test command builds every
/// binary first; a test crate's own binary is also at `env!("CARGO_BIN_EXE_<name>")`.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test binary>");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo build --bins`, as deploy/local/test.sh does)",
        path.display()
    );
    path
}

/// Where a process's output goes.
enum Output {
    /// stdout dropped, stderr to the test's stderr.
    Quiet,
    /// stdout collected line by line (see [`ServiceProcess::log_text`]), stderr to the test's.
    Collect,
    /// stdout and stderr both to this file.
    File(PathBuf),
}

/// How to start a service: its binary, its environment (nothing inherited but `PATH`).
pub struct Builder {
    command: Command,
    port: Option<u16>,
    output: Output,
}

impl Builder {
    /// Add an environment variable (a later one of the same name wins).
    pub fn env(mut self, name: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.command.env(name, value);
        self
    }

    /// Add environment variables.
    pub fn envs<'a>(mut self, vars: impl IntoIterator<Item = &'a (&'a str, &'a str)>) -> Self {
        for (name, value) in vars {
            self.command.env(name, value);
        }
        self
    }

    /// Collect stdout (the log) to read it back with [`ServiceProcess::log_text`].
    pub fn collect_log(mut self) -> Self {
        self.output = Output::Collect;
        self
    }

    /// Send stdout and stderr to `path`.
    pub fn log_to(mut self, path: &Path) -> Self {
        self.output = Output::File(path.to_owned());
        self
    }

    /// Start the process without waiting for it.
    pub fn spawn(mut self) -> ServiceProcess {
        let log = Arc::new(Mutex::new(Vec::new()));
        match &self.output {
            Output::Quiet => {
                self.command.stdout(Stdio::null()).stderr(Stdio::inherit());
            }
            Output::Collect => {
                self.command.stdout(Stdio::piped()).stderr(Stdio::inherit());
            }
            Output::File(path) => {
                let out = File::create(path).expect("log file");
                let err = out.try_clone().expect("log file");
                self.command.stdout(out).stderr(err);
            }
        }
        let mut child = self
            .command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", self.command.get_program()));
        if let Some(stdout) = child.stdout.take() {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    log.lock().expect("log lock").push(line);
                }
            });
        }
        let port = self.port.unwrap_or(0);
        ServiceProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    /// Start the process and wait (up to 60 s) until `/health/ready` answers 200.
    pub async fn start(self) -> ServiceProcess {
        let process = self.spawn();
        process.wait_ready().await;
        process
    }
}

/// A running service binary; killed (SIGKILL) when dropped if still running.
pub struct ServiceProcess {
    child: Child,
    /// The address it listens on (ingest: the API; worker: its admin port); port 0 when the
    /// worker was started without one.
    pub addr: SocketAddr,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl ServiceProcess {
    /// `triggers-ingest` at `binary` on `db_url`, on a free loopback port, logging warnings.
    pub fn ingest(binary: impl AsRef<Path>, db_url: &str) -> Builder {
        let port = free_port();
        Self::builder(binary.as_ref(), db_url, Some(port))
            .env("TRIGGERS_INGEST_ADDR", format!("127.0.0.1:{port}"))
    }

    /// `triggers-worker` at `binary` on `db_url`, its admin port on a free loopback port, with
    /// the test settings of the in-process worker (private webhooks allowed, 1 s heartbeat and
    /// retries).
    pub fn worker(binary: impl AsRef<Path>, db_url: &str) -> Builder {
        let port = free_port();
        Self::builder(binary.as_ref(), db_url, Some(port))
            .env("TRIGGERS_WORKER_ADDR", format!("127.0.0.1:{port}"))
            .env("TRIGGERS_ALLOW_PRIVATE_WEBHOOKS", "true")
            .env("TRIGGERS_WORKER_HEARTBEAT_SECS", "1")
            .env("TRIGGERS_RETRY_SCHEDULE", "1s")
            .env("TRIGGERS_DB_POOL_SIZE", "10")
            .env("RUST_LOG", "warn,triggers_worker=info")
    }

    fn builder(binary: &Path, db_url: &str, port: Option<u16>) -> Builder {
        let mut command = Command::new(binary);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", db_url)
            .env("RUST_LOG", "warn");
        Builder {
            command,
            port,
            output: Output::Quiet,
        }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Wait (up to 60 s) until `/health/ready` answers 200; panics if the process exits first.
    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let url = self.url("/health/ready");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if client.get(&url).send().await.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{url} never answered 200:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the process wrote to stdout so far (with [`Builder::collect_log`]).
    pub fn log_text(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }

    /// Wait (up to 60 s) until the collected log contains `needle`.
    pub async fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.log_text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no `{needle}` in the log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Send SIGTERM (the signal a container runtime sends) without waiting.
    pub fn sigterm(&self) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("a pid"));
        signal::kill(pid, signal::Signal::SIGTERM).expect("send SIGTERM");
    }

    /// SIGKILL and reap it (a crash: nothing is drained).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait up to `bound` for the exit: its status and how long it took.
    pub async fn terminate(&mut self, bound: Duration) -> (ExitStatus, Duration) {
        let start = Instant::now();
        self.sigterm();
        (self.wait_exit(bound).await, start.elapsed())
    }

    /// Wait up to `bound` for the process to exit by itself.
    pub async fn wait_exit(&mut self, bound: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                start.elapsed() < bound,
                "the process did not exit within {bound:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

/// SIGKILL every process of the group `pgid` (a process started with `process_group(0)` and all
/// it started, such as chromedriver and its browser).
pub fn kill_group(pgid: u32) {
    if let Ok(pgid) = i32::try_from(pgid) {
        let _ = signal::killpg(Pid::from_raw(pgid), signal::Signal::SIGKILL);
    }
}
