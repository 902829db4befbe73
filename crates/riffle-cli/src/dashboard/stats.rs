//! The controller's per-heater statistics, as the dashboard shows them: a
//! consumer of the statistics topic keeps each heater's latest window.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use riffle::log::{ConsumerConfig, Log, RecordRef};
use riffle::stream::Consumer;
use riffle::Result;
use serde_json::Value;

/// Each heater's latest window, by its start: windows may arrive out of
/// order after a rebalance, and the topic is read from its beginning.
#[derive(Debug, Default)]
pub struct Latest(Mutex<HashMap<String, Value>>);

impl Latest {
    /// The latest window of `heater`, if one was seen.
    pub fn get(&self, heater: &str) -> Option<Value> {
        self.0.lock().unwrap().get(heater).cloned()
    }

    /// Keeps `window` if it is a heater's statistics, newer than the one
    /// held; anything else is ignored (the page shows what it can).
    fn offer(&self, window: Value) {
        let (Some(heater), Some(start)) = (window["heater"].as_str(), window["start"].as_i64())
        else {
            return;
        };
        let mut held = self.0.lock().unwrap();
        match held.get(heater).and_then(|w| w["start"].as_i64()) {
            Some(s) if s >= start => {}
            _ => {
                held.insert(heater.to_owned(), window);
            }
        }
    }
}

/// Follows the statistics topic until stopped.
pub struct StatsFeed {
    latest: Arc<Latest>,
    consumer: Consumer,
}

impl StatsFeed {
    /// Reads `topic` from its beginning, committed records only (the
    /// controller may write them in transactions), in a group of its own.
    pub fn start(log: Arc<dyn Log>, topic: &str) -> Result<Self> {
        let latest = Arc::new(Latest::default());
        let group = format!(
            "dashboard-stats-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        );
        let mut config = ConsumerConfig::new(group, &[topic]);
        config.read_committed = true;
        let l = latest.clone();
        let consumer = Consumer::spawn(log, config, move || {
            let l = l.clone();
            move |r: RecordRef<'_>| -> Result<()> {
                if let Ok(v) = serde_json::from_slice(r.value) {
                    l.offer(v);
                }
                Ok(())
            }
        })?;
        Ok(Self { latest, consumer })
    }

    /// What the dashboard reads.
    pub fn latest(&self) -> Arc<Latest> {
        self.latest.clone()
    }

    pub fn stop(self) -> Result<()> {
        self.consumer.stop();
        self.consumer.join()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_heater_keeps_its_latest_window() {
        let l = Latest::default();
        l.offer(json!({"heater": "h", "start": 60_000, "mean": 45.0}));
        l.offer(json!({"heater": "h", "start": 0, "mean": 40.0}));
        assert_eq!(
            l.get("h").unwrap()["mean"],
            45.0,
            "an older window is not kept"
        );
        l.offer(json!({"heater": "h", "start": 120_000, "mean": 46.0}));
        assert_eq!(l.get("h").unwrap()["mean"], 46.0);
        l.offer(json!({"start": 180_000}));
        l.offer(json!("not a window"));
        assert_eq!(l.get("h").unwrap()["start"], 120_000);
        assert!(l.get("other").is_none());
    }
}
