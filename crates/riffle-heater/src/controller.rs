//! The thermostat rule as a keyed processor: one controller state per
//! heater, fed by measurements and settings, emitting ON/OFF commands.
//!
//! The rule (docs/heater.md): with setting `Td`, `up`, `down`, a measurement
//! `m > Td + up` turns the heater OFF and `m < Td - down` turns it ON;
//! anything in between changes nothing. A command is sent only when it
//! differs from the last one sent to that heater, and measurements before
//! the first setting are ignored. (The book's code names ON and OFF the
//! wrong way round; this is the rule its heater expects.)
//!
//! With a watchdog ([`Controller::with_watchdog`]), a controlled heater
//! that sends no measurement for the given time is turned OFF (fail-safe:
//! a heater nobody hears from must not heat on) and an alert goes to the
//! alerts topic; when it reports again, an alert says so and it is
//! controlled as before. The watchdog is a per-heater timer, stored with
//! the heater's state: it survives crashes and moves with the heater.
//! It runs in event time, the heaters' own ([`heater_time`]: a simulator's
//! simulated time): it fires once the heater's partition has records that much later than
//! its last measurement, or has been quiet for the app's idle timeout
//! ([`riffle::process::EventTime`]). So a backlog replayed after an outage
//! raises the alerts it would have raised live, at the same times, and a
//! replay after a crash raises them at the same place.
//!
//! With fleet-wide limits ([`Controller::with_limits`]), a global table
//! every process holds in full, every heater's desired temperature is
//! capped at its `max_temperature` row.
//!
//! With a maximum age ([`Controller::with_max_age`]), a measurement older
//! than that (by its record's timestamp, against the wall clock) is not
//! acted upon: a backlog replayed after an outage says what heaters were,
//! not what they are. Such measurements are counted
//! (`riffle_heater_stale_measurements_total`), never dropped silently.
//!
//! The state is stored (changelog, snapshots) as version 1: the last
//! command as its wire code, `0` for ON and `1` for OFF, as on the control
//! topic. Version 0 ([`v0::ControllerState`]) stored it by name; a
//! controller restoring such a state upgrades it
//! ([`KeyedProcessor::upgrade_state`]).

use std::sync::Arc;

use riffle::log::RecordRef;
use riffle::process::table::GlobalTable;
use riffle::process::{Context, Fired, KeyedProcessor, StoredState, Time};
use riffle::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::messages::{decode_sensor, heater_time, Command, SensorMessage, Setting};
use crate::stats::{StatsConfig, WindowStats};

/// One heater's controller state.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControllerState {
    pub setting: Option<Setting>,
    /// The last command sent, stored as its wire code (`0` ON, `1` OFF).
    #[serde(with = "wire_code")]
    pub last_command: Option<Command>,
    /// The watchdog found the heater silent, and it has not reported since.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub silent: bool,
    /// With statistics: the window under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<WindowStats>,
}

/// The state as stored before state versions: version 0.
pub mod v0 {
    use super::*;

    /// Version 0 of [`super::ControllerState`]: the last command by name
    /// (`"On"`, `"Off"`).
    #[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
    pub struct ControllerState {
        pub setting: Option<Setting>,
        pub last_command: Option<Command>,
    }

    impl From<ControllerState> for super::ControllerState {
        fn from(old: ControllerState) -> Self {
            Self {
                setting: old.setting,
                last_command: old.last_command,
                silent: false,
                stats: None,
            }
        }
    }
}

/// `Option<Command>` as the control topic's code, or `null`.
mod wire_code {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::messages::Command;

    pub fn serialize<S: Serializer>(c: &Option<Command>, s: S) -> Result<S::Ok, S::Error> {
        match c {
            Some(c) => s.serialize_u8(c.code()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Command>, D::Error> {
        match Option::<u8>::deserialize(d)? {
            None => Ok(None),
            Some(0) => Ok(Some(Command::On)),
            Some(1) => Ok(Some(Command::Off)),
            Some(n) => Err(serde::de::Error::custom(format!(
                "a command is 0 (on) or 1 (off), not {n}"
            ))),
        }
    }
}

impl ControllerState {
    /// Applies one message; returns the command to send, if any.
    pub fn apply(&mut self, msg: SensorMessage) -> Option<Command> {
        self.apply_capped(msg, None)
    }

    /// Applies one message with the desired temperature capped at `cap`
    /// (the fleet's maximum), if any.
    pub fn apply_capped(&mut self, msg: SensorMessage, cap: Option<f64>) -> Option<Command> {
        match msg {
            SensorMessage::Setting(s) => {
                self.setting = Some(s);
                None
            }
            SensorMessage::Measurement(m) => {
                let mut s = self.setting?;
                if let Some(cap) = cap {
                    s.temperature = s.temperature.min(cap);
                }
                let wanted = if m > s.temperature + s.up_delta {
                    Command::Off
                } else if m < s.temperature - s.down_delta {
                    Command::On
                } else {
                    return None;
                };
                (self.last_command != Some(wanted)).then(|| {
                    self.last_command = Some(wanted);
                    wanted
                })
            }
        }
    }
}

/// The heater controller: reads the sensor topic (and optionally a
/// settings topic), writes commands keyed by heater id to the control topic.
#[derive(Debug, Clone)]
pub struct Controller {
    control_topic: Arc<str>,
    watchdog: Option<Watchdog>,
    /// Fleet-wide limits, held in full by every process.
    limits: Option<GlobalTable<f64>>,
    stats: Option<StatsConfig>,
    /// Measurements older than this are counted in `stale`, not used.
    max_age: Option<i64>,
    stale: riffle::metrics::Counter,
}

/// How long a heater may stay silent, and where alerts go.
#[derive(Debug, Clone)]
struct Watchdog {
    silence: std::time::Duration,
    alerts_topic: Arc<str>,
}

/// The row of the limits table that caps desired temperatures.
pub const MAX_TEMPERATURE: &str = "max_temperature";

/// The name of the statistics window's per-heater timer.
const STATS: &str = "stats";

/// The name of the watchdog's per-heater timer.
const WATCHDOG: &str = "watchdog";

impl Controller {
    pub fn new(control_topic: &str) -> Self {
        Self {
            control_topic: control_topic.into(),
            watchdog: None,
            limits: None,
            stats: None,
            max_age: None,
            stale: riffle::metrics::global().counter(
                "riffle_heater_stale_measurements_total",
                "Measurements older than the controller's maximum age, not acted upon.",
                vec![("control_topic", control_topic.to_owned())],
            ),
        }
    }

    /// Sends each heater's statistics per `window` of time to `topic` (see
    /// [`crate::stats`]).
    pub fn with_stats(self, window: std::time::Duration, topic: &str) -> Self {
        Self {
            stats: Some(StatsConfig::new(window, topic)),
            ..self
        }
    }

    /// Counts a measurement in its window, sending the window before if
    /// this one is later.
    fn count_measurement(
        &self,
        key: &str,
        celsius: f64,
        state: &mut ControllerState,
        ctx: &mut Context<'_>,
    ) -> Result<()> {
        let (Some(cfg), Some(at)) = (&self.stats, ctx.event_time()) else {
            return Ok(());
        };
        let start = cfg.start_of(at);
        match &state.stats {
            // Out of order, for a window already sent: not counted.
            Some(w) if start < w.start => return Ok(()),
            Some(w) if start == w.start => {}
            _ => {
                if let Some(done) = state.stats.replace(WindowStats::new(start)) {
                    ctx.send_json(&cfg.topic, Some(key), &done.to_json(key, cfg.window))?;
                }
                ctx.set_timer(STATS, Time::Event(start + cfg.window));
            }
        }
        let on = state.last_command == Some(Command::On);
        if let Some(w) = &mut state.stats {
            w.measured(celsius, on);
        }
        Ok(())
    }

    /// Caps every heater's desired temperature at the `max_temperature`
    /// row of `limits` (a global table every process holds), while it has
    /// one.
    pub fn with_limits(self, limits: GlobalTable<f64>) -> Self {
        Self {
            limits: Some(limits),
            ..self
        }
    }

    /// Measurements older than `age` are counted, not acted upon (see the
    /// module docs).
    pub fn with_max_age(self, age: std::time::Duration) -> Self {
        Self {
            max_age: Some(age.as_millis() as i64),
            ..self
        }
    }

    /// How many measurements were too old to act upon.
    pub fn stale(&self) -> u64 {
        self.stale.get()
    }

    /// Turns a controlled heater OFF, with an alert on `alerts_topic`,
    /// when it sends no measurement for `silence` (see the module docs).
    pub fn with_watchdog(self, silence: std::time::Duration, alerts_topic: &str) -> Self {
        Self {
            watchdog: Some(Watchdog {
                silence,
                alerts_topic: alerts_topic.into(),
            }),
            ..self
        }
    }

    /// Sends `alert` for `key`, saying when (event time) it happened.
    fn alert(&self, key: &str, alert: Alert, at_ms: i64, ctx: &mut Context<'_>) -> Result<()> {
        let Some(w) = &self.watchdog else {
            return Ok(());
        };
        let json = serde_json::json!({
            "heater": key,
            "alert": alert.name(),
            "silence_ms": w.silence.as_millis() as u64,
            "at_ms": at_ms,
        });
        ctx.send_json(&w.alerts_topic, Some(key), &json)
    }
}

/// What the watchdog reports (docs/heater.md, "Alerts").
#[derive(Debug, Clone, Copy)]
enum Alert {
    /// No measurement for the watchdog's time: turned OFF.
    Silent,
    /// A silent heater reports again.
    Reporting,
}

impl Alert {
    fn name(self) -> &'static str {
        match self {
            Alert::Silent => "silent",
            Alert::Reporting => "reporting",
        }
    }
}

impl KeyedProcessor for Controller {
    type Input = SensorMessage;
    type State = ControllerState;
    const STATE_VERSION: u32 = 1;

    fn upgrade_state(&self, old: StoredState<'_>) -> Result<ControllerState> {
        match old.version {
            0 => Ok(old.decode::<v0::ControllerState>()?.into()),
            _ => Err(old.unknown()),
        }
    }

    fn decode(&self, record: &RecordRef<'_>) -> Result<(String, SensorMessage)> {
        decode_sensor(record.key, record.value).map_err(Error::Decode)
    }

    /// The heater's own time where something here runs on it (the
    /// watchdog, the statistics); otherwise the record's timestamp, which
    /// costs nothing to read, where the heater's time takes a parse of the
    /// record's headers (a tenth of the controller's time per record).
    fn event_time(&self, record: &RecordRef<'_>, _: &SensorMessage) -> Option<i64> {
        if self.watchdog.is_none() && self.stats.is_none() {
            return record.timestamp;
        }
        heater_time(record)
    }

    fn process(
        &mut self,
        key: &str,
        msg: &SensorMessage,
        state: &mut ControllerState,
        ctx: &mut Context<'_>,
    ) -> Result<()> {
        if let (Some(max), Some(at), SensorMessage::Measurement(_)) =
            (self.max_age, ctx.timestamp(), msg)
        {
            if ctx.now() - at > max {
                self.stale.inc();
                return Ok(());
            }
        }
        if let (Some(w), SensorMessage::Measurement(_), Some(_)) =
            (&self.watchdog, msg, state.setting)
        {
            let silence = w.silence.as_millis() as i64;
            // A record without a timestamp (none on Kafka) has no event
            // time: its watchdog runs on the wall clock.
            let (due, at) = match ctx.event_time() {
                Some(at) => (Time::Event(at + silence), at),
                None => (Time::Processing(ctx.now() + silence), ctx.now()),
            };
            ctx.set_timer(WATCHDOG, due);
            if std::mem::take(&mut state.silent) {
                self.alert(key, Alert::Reporting, at, ctx)?;
            }
        }
        if let SensorMessage::Measurement(m) = msg {
            self.count_measurement(key, *m, state, ctx)?;
        }
        let cap = self.limits.as_ref().and_then(|l| l.get(MAX_TEMPERATURE));
        if let Some(cmd) = state.apply_capped(*msg, cap) {
            ctx.send(&self.control_topic, Some(key), cmd.to_json())?;
            if let Some(w) = &mut state.stats {
                w.commands += 1;
            }
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        key: &str,
        timer: &Fired,
        state: &mut ControllerState,
        ctx: &mut Context<'_>,
    ) -> Result<()> {
        if &*timer.name == STATS {
            if let (Some(cfg), Some(done)) = (&self.stats, state.stats.take()) {
                ctx.send_json(&cfg.topic, Some(key), &done.to_json(key, cfg.window))?;
            }
            return Ok(());
        }
        if &*timer.name != WATCHDOG || self.watchdog.is_none() {
            return Ok(());
        }
        // Fail-safe: OFF, sent even if OFF was the last command (the
        // heater may have missed it, which could be why it is silent).
        state.last_command = Some(Command::Off);
        state.silent = true;
        ctx.send(&self.control_topic, Some(key), Command::Off.to_json())?;
        if let Some(w) = &mut state.stats {
            w.commands += 1;
        }
        self.alert(key, Alert::Silent, timer.at.millis(), ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_command_is_stored_as_its_wire_code() {
        let s = Setting {
            temperature: 45.0,
            up_delta: 1.0,
            down_delta: 1.0,
        };
        for (command, code) in [
            (Some(Command::On), "0"),
            (Some(Command::Off), "1"),
            (None, "null"),
        ] {
            let state = ControllerState {
                setting: Some(s),
                last_command: command,
                silent: false,
                stats: None,
            };
            let json = serde_json::to_string(&state).unwrap();
            assert!(
                json.ends_with(&format!(r#""last_command":{code}}}"#)),
                "{json}"
            );
            assert_eq!(
                serde_json::from_str::<ControllerState>(&json).unwrap(),
                state
            );
        }
        let v0 = serde_json::to_vec(&v0::ControllerState {
            setting: Some(s),
            last_command: Some(Command::Off),
        })
        .unwrap();
        assert!(
            serde_json::from_slice::<ControllerState>(&v0).is_err(),
            "version 0 does not decode as version 1"
        );
        let upgraded = Controller::new("c")
            .upgrade_state(StoredState {
                version: 0,
                json: &v0,
            })
            .unwrap();
        assert_eq!(upgraded.last_command, Some(Command::Off));
        assert_eq!(upgraded.setting, Some(s));
        assert!(Controller::new("c")
            .upgrade_state(StoredState {
                version: 0,
                json: b"{",
            })
            .is_err());
    }
}
