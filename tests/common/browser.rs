//! A real browser for tests of the node's web page: headless Chromium driven by chromedriver
//! over W3C WebDriver (plain HTTP + JSON, so no client library beyond ureq).
//!
//! Actions go through WebDriver's element commands (click, send keys), so they fire the same
//! events a user's would and fail on a hidden or disabled control; reads of page state go
//! through small scripts.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The key under which WebDriver names an element (W3C WebDriver, "Elements").
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The browser and its driver, found on the PATH.
pub struct Tools {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
}

fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// Finds Chromium and chromedriver; says why not otherwise.
pub fn tools() -> Result<Tools, String> {
    let chromium = on_path(&["chromium", "chromium-browser", "google-chrome"])
        .ok_or("no Chromium on the PATH (Debian: apt-get install chromium chromium-driver)")?;
    let chromedriver = on_path(&["chromedriver"])
        .ok_or("no chromedriver on the PATH (Debian: apt-get install chromium-driver)")?;
    Ok(Tools {
        chromium,
        chromedriver,
    })
}

/// A WebDriver element id.
#[derive(Clone, Debug)]
pub struct Element(String);

/// One browser session; the driver (and with it the browser) is stopped on drop.
pub struct Browser {
    driver: Child,
    session: String,
    base: String,
    agent: ureq::Agent,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a headless session whose
    /// downloads land in `downloads` without asking.
    pub fn start(tools: &Tools, downloads: &Path) -> Browser {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(&tools.chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let profile = tempfile::tempdir().unwrap();
        let mut b = Browser {
            driver,
            session: String::new(),
            base: format!("http://127.0.0.1:{port}"),
            agent,
            _profile: profile,
        };
        let start = Instant::now();
        while b.call("GET", "/status", None).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "chromedriver did not answer"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": tools.chromium,
                "args": [
                    "--headless=new",
                    // Tests may run as root, where Chromium's sandbox cannot start.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", b._profile.path().display()),
                ],
                "prefs": {
                    "download.default_directory": downloads,
                    "download.prompt_for_download": false,
                },
            },
        }}});
        let v = b
            .call("POST", "/session", Some(caps))
            .unwrap_or_else(|e| panic!("could not open a browser session: {e}"));
        b.session = v["sessionId"].as_str().expect("a session id").to_string();
        b
    }

    /// One WebDriver command; its `value`, or the driver's error as text.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let res = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            (_, body) => self.agent.post(&url).send_json(body.unwrap_or(json!({}))),
        };
        let mut res = res.map_err(|e| format!("{method} {path}: {e}"))?;
        let ok = res.status().is_success();
        let text = res
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("{path}: {e}: {text}"))?;
        let value = v.get("value").cloned().unwrap_or(Value::Null);
        if ok {
            Ok(value)
        } else {
            Err(format!(
                "{method} {path}: {}: {}",
                value["error"].as_str().unwrap_or("?"),
                value["message"].as_str().unwrap_or(&text)
            ))
        }
    }

    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    pub fn goto(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({ "url": url })))
            .unwrap();
    }

    /// The first element matching a CSS selector, if any.
    pub fn find(&self, css: &str) -> Option<Element> {
        let v = self
            .session_call(
                "POST",
                "/elements",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .unwrap();
        v.as_array()?
            .first()
            .and_then(|e| e[ELEMENT].as_str())
            .map(|id| Element(id.to_string()))
    }

    /// Waits for an element matching `css` that is displayed.
    pub fn wait_for(&self, css: &str, timeout: Duration) -> Element {
        let start = Instant::now();
        loop {
            if let Some(e) = self.find(css).filter(|e| self.displayed(e)) {
                return e;
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for {css} to be shown; the page at {} \
                     reads:\n{}\nits alerts, shown or not: {}",
                    self.script("return location.href"),
                    self.text("body"),
                    self.script(
                        "return [...document.querySelectorAll('[role=alert]')]\
                         .map((e) => e.textContent).join(' | ')"
                    )
                );
            }
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    pub fn displayed(&self, e: &Element) -> bool {
        self.session_call("GET", &format!("/element/{}/displayed", e.0), None)
            .map(|v| v == Value::Bool(true))
            .unwrap_or(false)
    }

    /// Waits for an element matching `css` and clicks it as a user would (WebDriver refuses
    /// one that is hidden or covered). The page redraws its lists (rooms, contacts) whenever
    /// they may have changed, so an element found a moment ago can be gone: then the new one
    /// is found and clicked.
    pub fn click_on(&self, css: &str, timeout: Duration) {
        let start = Instant::now();
        loop {
            let e = self.wait_for(css, timeout);
            match self.session_call("POST", &format!("/element/{}/click", e.0), None) {
                Ok(_) => return,
                Err(err) if err.contains("stale element") && start.elapsed() < timeout => {}
                Err(err) => panic!("click on {css}: {err}"),
            }
        }
    }

    /// Types into the element; for a file input, `text` is the file's path.
    pub fn send_keys(&self, e: &Element, text: &str) {
        self.session_call(
            "POST",
            &format!("/element/{}/value", e.0),
            Some(json!({ "text": text })),
        )
        .unwrap_or_else(|err| panic!("send keys: {err}"));
    }

    /// Runs a script in the page and returns what it returns.
    pub fn script(&self, js: &str) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": js, "args": [] })),
        )
        .unwrap_or_else(|err| panic!("script {js:?}: {err}"))
    }

    /// The visible text of the first element matching `css` ("" if none).
    pub fn text(&self, css: &str) -> String {
        let js = format!(
            "const e = document.querySelector({}); return e ? e.innerText : '';",
            Value::String(css.into())
        );
        self.script(&js).as_str().unwrap_or_default().to_string()
    }

    /// Accepts the open `confirm()` dialog.
    pub fn accept_alert(&self) {
        super::wait_until("a dialog", Duration::from_secs(10), || {
            self.session_call("POST", "/alert/accept", None).is_ok()
        });
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.session_call("DELETE", "", None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
