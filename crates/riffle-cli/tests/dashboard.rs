//! The web dashboard of `riffle demo heater --http`, behind a token: its
//! JSON routes answer with the running app and the simulated heaters, and
//! the page, rendered by headless Chromium after signing in with `?token=`
//! once, shows them and keeps updating. The screenshot is kept at
//! `target/test-artifacts/dashboard.png`.
//!
//! Chromium is required (scripts/setup.sh --test installs it): without it
//! the test fails rather than passing unchecked.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use riffle::serve::http::{self, Client};
use riffle::serve::Names;
use serde_json::Value;

/// The partitions of the demo's sensor topic (the default `--partitions`).
const PARTITIONS: usize = 10;
/// The endpoint's token; with characters a URL and a cookie must encode.
const TOKEN: &str = "dash;board+token/=";

/// Kills the demo when the test ends, however it ends.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("dashboard-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get_json(addr: &str, path: &str) -> Option<Value> {
    let client = Client::new(Some(TOKEN.into()), None, Names::default());
    match client.get(addr, path, Duration::from_secs(5)) {
        Ok((200, body)) => serde_json::from_slice(&body).ok(),
        _ => None,
    }
}

/// Polls `path` until `ready` accepts its answer.
fn wait_for(addr: &str, path: &str, ready: impl Fn(&Value) -> bool, log: &Path) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = get_json(addr, path) {
            if ready(&v) {
                return v;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{path} not ready after 30 s; last answer {:?}; demo's stderr:\n{}",
            get_json(addr, path),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn chromium_present() -> bool {
    Command::new("chromium")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Headless Chromium on `url` with `args` (what to produce); gives up after
/// 30 s so a wedged browser fails the test instead of hanging it.
fn chromium(profile: &Path, url: &str, args: &[&str]) -> Output {
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            // Lets the page poll a few times before the DOM is taken.
            "--virtual-time-budget=4000",
            "--window-size=1280,900",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The value of attribute `attr` of the element with id `id`.
fn attr(dom: &str, id: &str, attr: &str) -> Option<String> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let tag_start = dom[..at].rfind('<')?;
    let tag = &dom[tag_start..tag_start + dom[tag_start..].find('>')?];
    let key = format!("{attr}=\"");
    let from = tag.find(&key)? + key.len();
    Some(tag[from..from + tag[from..].find('"')?].to_owned())
}

/// The text right after the element with id `id` opens, up to the next tag.
fn text(dom: &str, id: &str) -> Option<String> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let from = at + dom[at..].find('>')? + 1;
    Some(dom[from..from + dom[from..].find('<')?].to_owned())
}

fn number(dom: &str, id: &str, name: &str) -> f64 {
    let v = attr(dom, id, name).unwrap_or_else(|| panic!("no {name} on #{id} in:\n{dom}"));
    v.parse().unwrap_or_else(|_| panic!("{id} {name}={v:?}"))
}

#[test]
fn the_dashboard_shows_live_heaters_and_consumers() {
    assert!(
        chromium_present(),
        "chromium is not installed: `scripts/setup.sh --test` installs it (Debian package chromium)"
    );
    let dir = scratch("run");
    let stderr = dir.join("stderr.txt");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _demo = Demo(
        Command::new(env!("CARGO_BIN_EXE_riffle"))
            .args(["demo", "heater", "--http", &addr, "--heaters", "20"])
            .args(["--duration", "2h"])
            .env_remove("RIFFLE_BROKERS")
            .env_remove("RIFFLE_INSTANCE")
            .env("RIFFLE_HTTP_TOKEN", TOKEN)
            .env("RIFFLE_DATA_DIR", dir.join("data"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("riffle starts"),
    );

    // The app: its consumers own every partition and have handled records.
    let owned = |v: &Value| -> usize {
        v["consumers"].as_array().map_or(0, |cs| {
            cs.iter()
                .map(|c| c["partitions"].as_array().map_or(0, Vec::len))
                .sum()
        })
    };
    let app = wait_for(
        &addr,
        "/api/app",
        |v| owned(v) == PARTITIONS && v["processed"].as_u64() > Some(0),
        &stderr,
    );
    let consumers = app["consumers"].as_array().unwrap();
    assert_eq!(consumers.len(), 2, "{app}");
    let mut partitions: Vec<i64> = consumers
        .iter()
        .flat_map(|c| c["partitions"].as_array().unwrap())
        .inspect(|p| {
            assert_eq!(p["topic"], "sensor", "{app}");
            assert!(p["lag"].as_i64().is_some_and(|l| l >= 0), "{app}");
        })
        .map(|p| p["partition"].as_i64().unwrap())
        .collect();
    partitions.sort_unstable();
    assert_eq!(partitions, (0..PARTITIONS as i64).collect::<Vec<_>>());
    let names: Vec<&str> = consumers
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for name in &names {
        assert!(name.starts_with("heater-demo-controller@"), "{name}");
    }
    assert!(app["simulator"].as_bool().unwrap(), "{app}");

    // The heaters: series of plausible temperatures, in time order.
    let heaters = wait_for(
        &addr,
        "/api/heaters",
        |v| {
            v["heaters"][0]["series"]["t"]
                .as_array()
                .is_some_and(|t| t.len() >= 3)
        },
        &stderr,
    );
    let with_history = heaters["with_history"].as_array().unwrap();
    assert_eq!(
        heaters["heaters"].as_array().unwrap().len(),
        with_history.len()
    );
    assert!(!with_history.is_empty(), "{heaters}");
    for h in heaters["heaters"].as_array().unwrap() {
        let s = &h["series"];
        let floats = |k: &str| -> Vec<f64> {
            s[k].as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        };
        let (t, temp, low, high) = (
            floats("t"),
            floats("temperature"),
            floats("low"),
            floats("high"),
        );
        assert!(!t.is_empty(), "{h}");
        assert!(t.windows(2).all(|w| w[0] < w[1]), "{h}");
        assert!(temp.iter().all(|c| (30.0..60.0).contains(c)), "{h}");
        assert!(low.iter().zip(&high).all(|(l, h)| l < h), "{h}");
        assert_eq!(s["on"].as_array().unwrap().len(), t.len(), "{h}");
    }
    // The controller's statistics per simulated minute (the demo's
    // default window), by the heaters' own time.
    let heaters = wait_for(
        &addr,
        "/api/heaters",
        |v| v["heaters"][0]["stats"]["mean"].is_f64(),
        &stderr,
    );
    let st = &heaters["heaters"][0]["stats"];
    let f = |k: &str| st[k].as_f64().unwrap();
    assert_eq!(st["heater"], heaters["heaters"][0]["id"], "{st}");
    assert_eq!(f("end") - f("start"), 60_000.0, "{st}");
    assert_eq!(f("start") % 60_000.0, 0.0, "{st}");
    // A measurement every 10 simulated seconds.
    assert!((1.0..=6.0).contains(&f("measurements")), "{st}");
    assert!(f("min") <= f("mean") && f("mean") <= f("max"), "{st}");
    assert!((30.0..60.0).contains(&f("mean")), "{st}");
    assert!((0.0..=1.0).contains(&f("share_on")), "{st}");

    // Nothing without the token but what probes ask.
    let t = Duration::from_secs(5);
    assert_eq!(http::get(&addr, "/api/app", t).unwrap().0, 401);
    assert_eq!(http::get(&addr, "/", t).unwrap().0, 401);
    assert_eq!(http::get(&addr, "/healthz", t).unwrap().0, 200);

    let one = get_json(&addr, "/api/heaters?ids=heater-0012,no-such-heater").unwrap();
    let picked = one["heaters"].as_array().unwrap();
    assert_eq!(picked.len(), 1, "{one}");
    assert_eq!(picked[0]["id"], "heater-0012");

    // The page, rendered: real numbers in it, and newer ones a little later.
    // It is opened with the token once; the endpoint answers with a cookie
    // and the page without the token in its address, and the page's own
    // requests carry the cookie.
    let url = format!("http://{addr}/?token={}", http::encode(TOKEN));
    let profile = dir.join("chromium");
    let dom = |out: Output| String::from_utf8(out.stdout).unwrap();
    let first = dom(chromium(&profile, &url, &["--dump-dom"]));
    assert!(
        number(&first, "updated", "data-polls") >= 2.0,
        "the page polled once only:\n{first}"
    );
    let sim_first = number(&first, "sim-time", "data-seconds");
    assert!(sim_first > 0.0, "{first}");
    assert!(sim_first >= number(&first, "sim-time", "data-first"));
    let drawn: u64 = text(&first, "points-drawn").unwrap().parse().unwrap();
    assert!(drawn >= 3, "{drawn} heater points drawn:\n{first}");
    let temperature = number(&first, "temperature-heater-0000", "data-temperature");
    assert!((30.0..60.0).contains(&temperature), "{temperature}");
    let mean = number(&first, "stats-heater-0000", "data-mean");
    assert!((30.0..60.0).contains(&mean), "{mean}");
    assert_eq!(number(&first, "consumer-count", "data-count"), 2.0);
    for name in &names {
        assert!(
            first.contains(name),
            "{name} missing from the page:\n{first}"
        );
    }
    assert_eq!(text(&first, "error").as_deref(), Some(""), "{first}");
    std::thread::sleep(Duration::from_secs(2));
    let second = dom(chromium(&profile, &url, &["--dump-dom"]));
    let sim_second = number(&second, "sim-time", "data-seconds");
    assert!(
        sim_second > sim_first,
        "simulated time did not move on: {sim_first} then {sim_second}"
    );

    // The screenshot, kept with the build's other outputs.
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let png = artifacts.join("dashboard.png");
    let _ = std::fs::remove_file(&png);
    chromium(
        &profile,
        &url,
        &[&format!("--screenshot={}", png.display())],
    );
    let bytes = std::fs::read(&png).expect("a screenshot");
    assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
    assert!(
        bytes.len() > 20_000,
        "a {} byte screenshot is too small to show charts",
        bytes.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
