//! The live web dashboard on the `--http` endpoint: one static page that
//! polls two JSON routes every second and keeps its own history of them.
//!
//! - `GET /`: the page (`page.html`, no external resources: it must work
//!   offline and behind firewalls).
//! - `GET /api/app`: the running app's consumers with their partitions,
//!   records handled and lag, its counts and processing latency.
//! - `GET /api/heaters?ids=a,b`: recent series of the chosen heaters (by
//!   default those the simulator keeps a history of) and, when the
//!   controller sends statistics, each one's latest window (`stats.rs`);
//!   only where a simulator runs in the process, `404` otherwise.
//!
//! Behind a token (`--http-token`), a browser opens the page once as
//! `/?token=<token>`: the endpoint answers with a cookie that stands for the
//! token and the page without it in its address, and the page's fetches,
//! same-origin, carry the cookie. The page says so when they are refused.
//!
//! The routes answer from whatever is attached: the app and the simulator
//! are started after the endpoint (the app advertises the endpoint's
//! address), so both are attached once they exist.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use riffle::log::Log;
use riffle::process::Running;
use riffle::serve::{Request, Response, Routes};
use riffle::{Error, Result};
use riffle_heater::simulator::{Phase, Snapshot, SnapshotReader};
use serde_json::{json, Value};

mod stats;

use stats::Latest;
pub use stats::StatsFeed;

const PAGE: &str = include_str!("page.html");
/// How long the log may take to report offsets for one request.
const LOG_TIMEOUT: Duration = Duration::from_secs(5);
/// Most heaters one request may ask for: each brings its whole history.
const MAX_HEATERS: usize = 64;

/// What the dashboard shows; shared with the endpoint's request threads.
pub struct Dashboard {
    log: Arc<dyn Log>,
    /// The app's consumer group, which labels its latency histogram.
    group: String,
    /// One line about the app, for the page's header.
    title: String,
    /// Held weakly so the app can be taken back and stopped; the lock
    /// keeps it alive for the length of a request only.
    app: Mutex<Option<Weak<Running>>>,
    sim: OnceLock<SnapshotReader>,
    stats: OnceLock<Arc<Latest>>,
}

impl Dashboard {
    pub fn new(log: Arc<dyn Log>, group: &str, title: String) -> Arc<Self> {
        Arc::new(Self {
            log,
            group: group.to_owned(),
            title,
            app: Mutex::new(None),
            sim: OnceLock::new(),
            stats: OnceLock::new(),
        })
    }

    /// The routes to hand to the endpoint.
    pub fn routes(self: &Arc<Self>) -> Routes {
        let d = self.clone();
        Arc::new(move |req: &Request| match req.path.as_str() {
            "/" | "/index.html" => Response::new(200, "text/html; charset=utf-8", PAGE),
            "/api/app" => Response::json(200, d.app_json().to_string()),
            "/api/heaters" => match d.sim.get() {
                Some(sim) => {
                    let ids = req.param("ids").unwrap_or("");
                    let stats = d.stats.get().map(|s| &**s);
                    let json = sim.with_snapshot(|s| heaters_json(s, ids, stats));
                    Response::json(200, json.to_string())
                }
                None => Response::json(404, r#"{"error":"no simulator in this process"}"#),
            },
            _ => Response::not_found(),
        })
    }

    /// Shows `app` from now on.
    pub fn attach_app(&self, app: &Arc<Running>) {
        *self.app.lock().unwrap() = Some(Arc::downgrade(app));
    }

    /// Shows the simulator's heaters from now on.
    pub fn attach_sim(&self, sim: SnapshotReader) {
        let _ = self.sim.set(sim);
    }

    /// Shows each heater's latest statistics from now on.
    pub fn attach_stats(&self, feed: &StatsFeed) {
        let _ = self.stats.set(feed.latest());
    }

    /// Stops showing `app` and hands it back, to be stopped.
    pub fn detach_app(&self, app: Arc<Running>) -> Result<Running> {
        // Once the slot is empty no request can upgrade it again, and none
        // still holds it: requests upgrade only under the lock.
        *self.app.lock().unwrap() = None;
        Arc::try_unwrap(app).map_err(|_| Error::InvalidInput("the app is still shared".into()))
    }

    fn app_json(&self) -> Value {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let running = {
            let slot = self.app.lock().unwrap();
            slot.as_ref().and_then(Weak::upgrade).map(|app| {
                let s = app.stats();
                let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
                (
                    app.members(),
                    [load(&s.processed), load(&s.sent), load(&s.dead_letters)],
                )
            })
        };
        let Some((consumers, [processed, sent, dead_letters])) = running else {
            return json!({"title": self.title, "running": false, "time_ms": now_ms});
        };
        // Offsets are asked for outside the lock: the log may be remote.
        let mut lags: BTreeMap<(&str, &str), BTreeMap<i32, i64>> = BTreeMap::new();
        let mut lag_error = None;
        let pairs: BTreeSet<(&str, &str)> = consumers
            .iter()
            .flat_map(|(name, parts, _)| {
                parts
                    .iter()
                    .map(move |p| (group_of(name), p.topic.as_str()))
            })
            .collect();
        for (group, topic) in pairs {
            match riffle::process::group_lag(&*self.log, group, &[topic], LOG_TIMEOUT) {
                Ok(l) => {
                    let per_partition = l.iter().map(|p| (p.partition.partition, p.lag));
                    lags.insert((group, topic), per_partition.collect());
                }
                Err(e) => lag_error = Some(e.to_string()),
            }
        }
        let mut total_lag = 0;
        let consumers: Vec<Value> = consumers
            .iter()
            .map(|(name, parts, records)| {
                let group = group_of(name);
                let parts: Vec<Value> = parts
                    .iter()
                    .map(|p| {
                        let lag = lags
                            .get(&(group, p.topic.as_str()))
                            .and_then(|l| l.get(&p.partition))
                            .copied();
                        total_lag += lag.unwrap_or(0);
                        json!({"topic": p.topic, "partition": p.partition, "lag": lag})
                    })
                    .collect();
                json!({"name": name, "group": group, "records": records, "partitions": parts})
            })
            .collect();
        let latency = riffle::metrics::global()
            .find_histogram(
                "riffle_processing_latency_seconds",
                &vec![("group", self.group.clone())],
            )
            .map(|h| {
                // Above the largest bucket is reported as null: JSON has no
                // infinity.
                let q = |q| h.quantile(q).filter(|v| v.is_finite());
                json!({"count": h.count(), "p50": q(0.5), "p99": q(0.99)})
            });
        json!({
            "title": self.title,
            "running": true,
            "time_ms": now_ms,
            "log": self.log.describe(),
            "group": self.group,
            "processed": processed,
            "sent": sent,
            "dead_letters": dead_letters,
            "consumers": consumers,
            "lag": total_lag,
            "lag_error": lag_error,
            "latency": latency,
            "simulator": self.sim.get().is_some(),
        })
    }
}

/// The consumer group a consumer belongs to, from its name
/// (`group@endpoint-N`, or `group-N` when nothing is advertised).
fn group_of(consumer: &str) -> &str {
    match consumer.rsplit_once('@') {
        Some((group, _)) => group,
        None => consumer.rsplit_once('-').map_or(consumer, |(g, _)| g),
    }
}

/// The heaters named in `ids` (comma-separated; by default those with a
/// history): current values, and the recent series where there is one.
fn heaters_json(s: &Snapshot, ids: &str, stats: Option<&Latest>) -> Value {
    let spacing = s.history_spacing.as_secs_f64();
    let history: BTreeMap<usize, _> = s.history.iter().map(|h| (h.index, &h.samples)).collect();
    let with_history: Vec<&str> = history
        .keys()
        .filter_map(|&i| s.heaters.get(i).map(|h| h.id.as_str()))
        .collect();
    let wanted: Vec<&str> = if ids.trim().is_empty() {
        with_history.clone()
    } else {
        ids.split(',')
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .take(MAX_HEATERS)
            .collect()
    };
    let sim_time = s.sim_time.as_secs_f64();
    // A sample is taken every `spacing` from time 0: the newest is the last
    // multiple of it not after the snapshot's time.
    let newest = (sim_time / spacing).floor() * spacing;
    let heaters: Vec<Value> = wanted
        .iter()
        .filter_map(|id| s.heaters.iter().position(|h| h.id == *id))
        .map(|i| {
            let h = &s.heaters[i];
            let samples = history.get(&i).map(|v| v.iter().collect::<Vec<_>>());
            let samples = samples.unwrap_or_default();
            let n = samples.len();
            let t: Vec<f64> = (0..n)
                .map(|k| newest - (n - 1 - k) as f64 * spacing)
                .collect();
            json!({
                "id": h.id,
                "temperature": h.temperature,
                "desired": h.setting.temperature,
                "low": h.setting.temperature - h.setting.down_delta,
                "high": h.setting.temperature + h.setting.up_delta,
                "on": h.on,
                "in_band": h.in_band,
                "settled": h.settled,
                "violations": h.violations,
                "series": {
                    "t": t,
                    "temperature": samples.iter().map(|p| p.temperature).collect::<Vec<_>>(),
                    "low": samples.iter().map(|p| p.setting.temperature - p.setting.down_delta).collect::<Vec<_>>(),
                    "high": samples.iter().map(|p| p.setting.temperature + p.setting.up_delta).collect::<Vec<_>>(),
                    "on": samples.iter().map(|p| p.on).collect::<Vec<_>>(),
                },
                "stats": stats.and_then(|l| l.get(&h.id)),
            })
        })
        .collect();
    json!({
        "phase": match &s.phase {
            Phase::Joining => "joining".to_owned(),
            Phase::Running => "running".to_owned(),
            Phase::Finished => "finished".to_owned(),
            Phase::Failed(e) => format!("failed: {e}"),
        },
        "sim_time": sim_time,
        "speedup": s.effective_speedup(),
        "history_spacing": spacing,
        "heaters_total": s.heaters.len(),
        "in_band": s.in_band,
        "settling": s.settling,
        "violations": s.violations,
        "with_history": with_history,
        "heaters": heaters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_names_give_their_group() {
        assert_eq!(
            group_of("heater-demo-controller@127.0.0.1:9464-1"),
            "heater-demo-controller"
        );
        assert_eq!(group_of("g-repartition@h:1-0"), "g-repartition");
        assert_eq!(group_of("plain-3"), "plain");
    }
}
