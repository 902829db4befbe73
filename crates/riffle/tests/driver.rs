//! Time in apps under the test driver: a clock that stands still until
//! the test moves it, so timers are checked at their exact time; crashes
//! and rebalances between any two records; state and timers read from the
//! changelog. Both styles, both guarantees.

mod watch;

use std::time::Duration;

use riffle::process::{App, Guarantee, Style, Time};
use riffle::testing::{Output, TestDriver};
use riffle::Result;
use watch::Watch;

const MINUTE: Duration = Duration::from_secs(60);

fn driver(style: Style, guarantee: Guarantee) -> Result<TestDriver<Watch>> {
    TestDriver::start(3, &["in", "out", "dlq"], move || {
        let w = Watch {
            out: "out".into(),
            watchdog: MINUTE,
            remind_after: 1000,
        };
        App::new("watch", &["in"], w)
            .style(style)
            .guarantee(guarantee)
            .dead_letter("dlq")
    })
}

/// What was said about `key`, in order.
fn said(outputs: &[Output], key: &str) -> Vec<String> {
    outputs
        .iter()
        .filter(|o| o.key.as_deref() == Some(key))
        .map(|o| String::from_utf8_lossy(&o.value).into_owned())
        .collect()
}

fn timers_fire_at_their_time(style: Style, guarantee: Guarantee) -> Result<()> {
    let mut d = driver(style, guarantee)?;
    let t0 = d.clock().now_ms();
    d.send("in", "a", format!("see {t0}").as_bytes())?;
    let mut timers: Vec<(String, Time)> = d
        .timers("a")?
        .into_iter()
        .map(|t| (t.name.to_string(), t.at))
        .collect();
    timers.sort();
    assert_eq!(
        timers,
        [
            ("remind".to_owned(), Time::Event(t0 + 1000)),
            ("watchdog".to_owned(), Time::Processing(t0 + 60_000)),
        ],
        "stored with the state"
    );
    assert_eq!(
        d.state("a")?.map(|(_, s)| s["count"].as_u64()),
        Some(Some(1))
    );
    // Idle for over 30 s (the default idle timeout), the partition's
    // watermark follows the clock: the reminder fires, the watchdog not yet.
    d.advance(MINUTE - Duration::from_millis(1))?;
    assert_eq!(said(&d.read("out")?, "a").len(), 2, "the reminder only");
    // Moved by a second record: due a minute after it.
    let t1 = d.clock().now_ms();
    d.send("in", "a", format!("see {t1}").as_bytes())?;
    d.advance(Duration::from_millis(1))?;
    assert_eq!(said(&d.read("out")?, "a").len(), 3, "moved, not due yet");
    d.advance(MINUTE)?;
    assert_eq!(
        said(&d.read("out")?, "a"),
        [
            format!("see@{t0} count=1"),
            format!("remind@{} count=1", t0 + 1000),
            format!("see@{t1} count=2"),
            format!("watchdog@{} count=2", t1 + 60_000),
            format!("remind@{} count=2", t1 + 1000),
        ]
    );
    assert!(d.timers("a")?.is_empty(), "both fired and are gone");
    d.stop()
}
fn crashes_and_rebalances_keep_timers(style: Style, guarantee: Guarantee) -> Result<()> {
    let mut d = driver(style, guarantee)?;
    let t0 = d.clock().now_ms();
    for k in ["a", "b", "c", "d"] {
        d.send("in", k, format!("see {t0}").as_bytes())?;
    }
    d.send("in", "b", format!("quiet {t0}").as_bytes())?;
    d.crash()?;
    d.send("in", "c", format!("forget {t0}").as_bytes())?;
    d.rebalance()?;
    d.advance(Duration::from_secs(30))?;
    d.crash()?;
    d.advance(Duration::from_secs(30))?;
    let out = d.read("out")?;
    let watchdog = format!("watchdog@{}", t0 + 60_000);
    for (key, fired) in [("a", true), ("b", false), ("c", false), ("d", true)] {
        let n = said(&out, key)
            .iter()
            .filter(|s| s.starts_with(&watchdog))
            .count();
        assert_eq!(n, usize::from(fired), "{key}: {:?}", said(&out, key));
    }
    // Nothing was said twice: every step was committed before the crash.
    let all: Vec<String> = out
        .iter()
        .map(|o| format!("{:?}{:?}", o.key, o.value))
        .collect();
    let mut unique = all.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), all.len(), "{all:?}");
    assert_eq!(d.state("c")?, None, "deleted");
    assert!(d.timers("c")?.is_empty());
    d.stop()
}

fn ttl_follows_the_clock(style: Style) -> Result<()> {
    let mut d = TestDriver::start(2, &["in", "out"], move || {
        let w = Watch {
            out: "out".into(),
            watchdog: MINUTE,
            remind_after: 1000,
        };
        App::new("ttl", &["in"], w)
            .style(style)
            .state_ttl(Duration::from_secs(3600))
    })?;
    for k in 0..20 {
        d.send("in", &format!("k{k}"), b"count 0")?;
    }
    d.advance(Duration::from_secs(1800))?;
    d.send("in", "k0", b"count 1")?;
    assert!(d.state("k5")?.is_some());
    d.advance(Duration::from_secs(2000))?;
    // Swept a few times per time to live: give it a quarter more.
    d.advance(Duration::from_secs(900))?;
    assert_eq!(d.state("k5")?, None, "expired");
    assert_eq!(
        d.state("k0")?.map(|(_, s)| s["count"].as_u64()),
        Some(Some(2)),
        "touched since"
    );
    d.stop()
}

const ACTORS: Style = Style::Actors { workers: 2 };

#[test]
fn keyed_timers_fire_at_their_time() -> Result<()> {
    timers_fire_at_their_time(Style::Keyed, Guarantee::ExactlyOnce)?;
    timers_fire_at_their_time(Style::Keyed, Guarantee::AtLeastOnce)
}

#[test]
fn actors_timers_fire_at_their_time() -> Result<()> {
    timers_fire_at_their_time(ACTORS, Guarantee::ExactlyOnce)?;
    timers_fire_at_their_time(ACTORS, Guarantee::AtLeastOnce)
}

#[test]
fn keyed_crashes_and_rebalances_keep_timers() -> Result<()> {
    crashes_and_rebalances_keep_timers(Style::Keyed, Guarantee::ExactlyOnce)?;
    crashes_and_rebalances_keep_timers(Style::Keyed, Guarantee::AtLeastOnce)
}

#[test]
fn actors_crashes_and_rebalances_keep_timers() -> Result<()> {
    crashes_and_rebalances_keep_timers(ACTORS, Guarantee::ExactlyOnce)?;
    crashes_and_rebalances_keep_timers(ACTORS, Guarantee::AtLeastOnce)
}

#[test]
fn state_expires_by_the_clock() -> Result<()> {
    ttl_follows_the_clock(Style::Keyed)?;
    ttl_follows_the_clock(ACTORS)
}

#[test]
fn undecodable_records_are_dead_lettered_under_the_driver() -> Result<()> {
    let mut d = driver(Style::Keyed, Guarantee::ExactlyOnce)?;
    d.send("in", "a", b"nonsense")?;
    assert_eq!(d.read("dlq")?.len(), 1, "undecodable: dead-lettered");
    d.stop()
}
