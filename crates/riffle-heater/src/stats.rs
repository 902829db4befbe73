//! Per-heater statistics per window of time: the lowest, mean and highest
//! temperature measured, the share of measurements taken while the heater
//! was ON (they come at a steady pace, so this is its share of time ON),
//! and the commands sent, as the controller saw them.
//!
//! The controller keeps the window under way in each heater's state and
//! sends it to the statistics topic when a measurement of a later window
//! arrives, or when the partition's watermark passes the window's end (an
//! event-time timer: a heater that falls silent still gets its last
//! window out). Windows follow the measurements' record timestamps. Their
//! format is in docs/heater.md, "Statistics".

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where statistics go, and over what time.
#[derive(Debug, Clone)]
pub(crate) struct StatsConfig {
    pub(crate) window: i64,
    pub(crate) topic: Arc<str>,
}

impl StatsConfig {
    pub(crate) fn new(window: Duration, topic: &str) -> Self {
        Self {
            window: (window.as_millis() as i64).max(1),
            topic: topic.into(),
        }
    }

    /// The start of the window holding `at`.
    pub(crate) fn start_of(&self, at: i64) -> i64 {
        at.div_euclid(self.window) * self.window
    }
}

/// One heater's statistics for one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowStats {
    /// The window's start, in milliseconds since the Unix epoch.
    pub start: i64,
    pub measurements: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    /// Measurements taken while the heater was ON.
    pub on: u64,
    pub commands: u64,
}

impl WindowStats {
    pub fn new(start: i64) -> Self {
        Self {
            start,
            ..Self::default()
        }
    }

    /// Counts a measurement, taken while the heater was `on`.
    pub fn measured(&mut self, celsius: f64, on: bool) {
        if self.measurements == 0 {
            (self.min, self.max) = (celsius, celsius);
        }
        self.measurements += 1;
        self.sum += celsius;
        self.min = self.min.min(celsius);
        self.max = self.max.max(celsius);
        self.on += u64::from(on);
    }

    /// The record sent for the window of `window` ms of `heater`.
    pub fn to_json(&self, heater: &str, window: i64) -> serde_json::Value {
        let share = |n: u64| match self.measurements {
            0 => 0.0,
            m => n as f64 / m as f64,
        };
        serde_json::json!({
            "heater": heater,
            "start": self.start,
            "end": self.start + window,
            "measurements": self.measurements,
            "min": self.min,
            "mean": if self.measurements == 0 { 0.0 } else { self.sum / self.measurements as f64 },
            "max": self.max,
            "share_on": share(self.on),
            "commands": self.commands,
        })
    }
}
