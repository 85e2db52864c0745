//! A real browser for the console's tests: Debian's headless `chromium`, driven through
//! `chromedriver` (WebDriver) by fantoccini, with the flags this machine's closed network needs.
//! `deploy/local/test.sh` installs both packages when they are missing.
//!
//! Without them, a test using [`Browser::start`] is skipped with a message, unless
//! `TRIGGERS_BROWSER_TESTS=required` (what `test.sh` sets), which makes it fail instead.

use std::{
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator, elements::Element, key::Key};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

/// How long a step may wait for the page to show what it expects.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// A headless chromium session; [`Browser::quit`] it at the end of the test.
pub struct Browser {
    driver: Client,
    chromedriver: Child,
    profile: PathBuf,
    shots: PathBuf,
}

fn executable(variable: &str, default: &str) -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var(variable).unwrap_or_else(|_| default.to_owned()));
    path.exists().then_some(path)
}

impl Browser {
    /// Start chromedriver and a chromium session, or `None` (the test is skipped) when they are
    /// not installed and `TRIGGERS_BROWSER_TESTS` is not `required`.
    pub async fn start() -> Option<Self> {
        let (Some(driver_bin), Some(chromium)) = (
            executable("CHROMEDRIVER", "/usr/bin/chromedriver"),
            executable("CHROMIUM", "/usr/bin/chromium"),
        ) else {
            let required = std::env::var("TRIGGERS_BROWSER_TESTS").is_ok_and(|v| v == "required");
            assert!(
                !required,
                "chromium and chromedriver are required (apt-get install chromium chromium-driver, as deploy/local/test.sh does)"
            );
            eprintln!(
                "SKIPPED: no /usr/bin/chromium or /usr/bin/chromedriver (deploy/local/test.sh installs them)"
            );
            return None;
        };
        let port = triggers_testkit::free_port();
        let chromedriver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            // Its own process group, so the browser it starts goes down with it (Drop).
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let profile =
            std::env::temp_dir().join(format!("triggers-console-browser-{}-{port}", std::process::id()));
        // The machine's closed network: no background connections, no updates, no sync.
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
            "--lang=en-US",
            &format!("--user-data-dir={}", profile.display()),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_owned(),
            json!({ "binary": chromium, "args": args }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        let driver = loop {
            let connected = ClientBuilder::new(HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await;
            match connected {
                Ok(driver) => break driver,
                Err(e) => {
                    assert!(
                        started.elapsed() < Duration::from_secs(30),
                        "no WebDriver session: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        // This run's screenshots only.
        let shots = screenshot_dir();
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).expect("screenshot folder");
        Some(Self {
            driver,
            chromedriver,
            profile,
            shots,
        })
    }

    /// End the session (the browser exits with it).
    pub async fn quit(self) {
        let _ = self.driver.clone().close().await;
    }

    pub fn driver(&self) -> &Client {
        &self.driver
    }

    pub async fn goto(&self, url: &str) {
        self.driver().goto(url).await.expect("navigate");
    }

    /// Write the page as `target/console-screenshots/<name>.png`, after checking that it shows
    /// no value the page failed to format (`[object …]`, `undefined`, `NaN`).
    pub async fn screenshot(&self, name: &str) {
        let text = self.visible_text().await;
        for broken in ["[object ", "undefined", "NaN"] {
            assert!(
                !text.contains(broken),
                "{name}: the page shows {broken:?}:\n{text}"
            );
        }
        self.capture(name).await;
    }

    /// Write the page as `target/console-screenshots/<name>.png`, as it is.
    async fn capture(&self, name: &str) {
        let path = self.shots.join(format!("{name}.png"));
        let png = self.driver().screenshot().await.expect("screenshot");
        std::fs::write(&path, png).expect("write the screenshot");
    }

    /// The page's visible text.
    pub async fn visible_text(&self) -> String {
        self.script("return document.body.innerText", Vec::new())
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Run `script` in the page (a returned promise is awaited): its JSON result.
    pub async fn script(&self, script: &str, args: Vec<Value>) -> Value {
        self.driver().execute(script, args).await.expect("script")
    }

    /// The texts of the elements matching `css` once `ready` holds for them (polled up to
    /// [`PATIENCE`]). The texts are one consistent reading of the page: if the page re-renders
    /// while they are read (an element goes stale), they are read again. Otherwise a
    /// screenshot `failed-<what>` and a panic naming `what` with the page's text.
    pub async fn until(&self, what: &str, css: &str, ready: impl Fn(&[String]) -> bool) -> Vec<String> {
        self.until_elements(what, css, ready).await.1
    }

    /// [`Browser::until`], with the elements read (which a later re-render may make stale).
    async fn until_elements(
        &self,
        what: &str,
        css: &str,
        ready: impl Fn(&[String]) -> bool,
    ) -> (Vec<Element>, Vec<String>) {
        let started = Instant::now();
        loop {
            let found = self
                .driver()
                .find_all(Locator::Css(css))
                .await
                .unwrap_or_default();
            let mut texts = Vec::with_capacity(found.len());
            for element in &found {
                match element.text().await {
                    Ok(text) => texts.push(text),
                    Err(_) => break,
                }
            }
            if texts.len() == found.len() && ready(&texts) {
                return (found, texts);
            }
            if started.elapsed() > PATIENCE {
                let slug: String = what
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                    .collect();
                self.capture(&format!("failed-{slug}")).await;
                panic!(
                    "{what}: `{css}` never got ready (texts {texts:?}); the page says:\n{}",
                    self.visible_text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The one element matching `css` whose text contains `text`, once it shows.
    pub async fn text(&self, what: &str, css: &str, text: &str) -> Element {
        let (found, texts) = self
            .until_elements(what, css, |texts| texts.iter().any(|t| t.contains(text)))
            .await;
        let at = texts.iter().position(|t| t.contains(text));
        match at {
            Some(at) => found.into_iter().nth(at).expect("one element per text"),
            None => panic!("{what}: `{css}` with {text:?} vanished"),
        }
    }

    /// The first element matching `css`, once one shows.
    pub async fn one(&self, what: &str, css: &str) -> Element {
        let (mut found, _) = self.until_elements(what, css, |texts| !texts.is_empty()).await;
        found.swap_remove(0)
    }

    /// Click the element matching `css` that shows `text`.
    pub async fn click(&self, what: &str, css: &str, text: &str) {
        self.text(what, css, text).await.click().await.expect("click");
    }

    /// Press a key in the focused element.
    pub async fn press(&self, key: Key) {
        let focused = self.driver().active_element().await.expect("a focused element");
        focused.send_keys(&key).await.expect("key press");
    }

    /// The `id` (or, without one, the text) of the focused element.
    pub async fn focused(&self) -> String {
        self.script(
            "const e = document.activeElement; return e.id || e.textContent.trim()",
            Vec::new(),
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver and every browser process it started.
        triggers_testkit::process::kill_group(self.chromedriver.id());
        let _ = self.chromedriver.kill();
        let _ = self.chromedriver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// `target/console-screenshots`, under the target folder cargo builds into.
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("console-screenshots")
}

/// A process killed when dropped (the example receiver of a browser test).
pub struct Spawned(pub Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
