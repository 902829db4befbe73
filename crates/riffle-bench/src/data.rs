//! The benchmark input: heater sensor records in the wire format of
//! `riffle_heater::messages`, about 100 bytes each, keyed by heater id.
//!
//! First one setting per heater, then measurements round-robin over the
//! heaters. Each heater's temperature is a seeded random walk pulled back
//! towards its setting, wide enough to leave the band now and then, so the
//! controller sends a command every few dozen measurements per heater.
//!
//! Alongside each record the generator gives the command the controller must
//! send for it, if any, from [`ControllerState::apply`]: the reference the
//! latency phase matches outputs against.

use riffle_heater::controller::ControllerState;
use riffle_heater::messages::{Command, SensorMessage, Setting};

/// One input record and what the controller answers to it.
pub struct Record {
    pub heater: u32,
    pub key: String,
    pub value: Vec<u8>,
    pub command: Option<Command>,
}

/// The record stream of a benchmark run: the same seed gives the same
/// records.
pub struct Generator {
    rng: fastrand::Rng,
    keys: Vec<String>,
    settings: Vec<Setting>,
    temps: Vec<f64>,
    states: Vec<ControllerState>,
    seq: u64,
}

/// Simulated time of the first record, seconds since the Unix epoch.
const EPOCH: f64 = 1_718_000_000.0;
/// Simulated seconds between consecutive records.
const STEP: f64 = 0.000_25;

impl Generator {
    pub fn new(heaters: usize, seed: u64) -> Self {
        let rng = fastrand::Rng::with_seed(seed);
        let keys: Vec<String> = (0..heaters).map(heater_id).collect();
        let settings: Vec<Setting> = (0..heaters)
            .map(|i| Setting {
                temperature: 42.0 + (i % 13) as f64 * 0.5,
                up_delta: 1.0,
                down_delta: 1.0,
            })
            .collect();
        let temps = settings.iter().map(|s| s.temperature).collect();
        Self {
            rng,
            keys,
            settings,
            temps,
            states: vec![ControllerState::default(); heaters],
            seq: 0,
        }
    }

    /// The next record: the settings first, then measurements.
    pub fn next_record(&mut self) -> Record {
        let n = self.keys.len() as u64;
        let heater = (self.seq % n) as usize;
        let ts = EPOCH + self.seq as f64 * STEP;
        let key = &self.keys[heater];
        let (value, msg) = if self.seq < n {
            let s = self.settings[heater];
            let value = format!(
                r#"{{"temperature": {:.1}, "up_delta": {:.1}, "down_delta": {:.1}, "id": "{key}", "ts": {ts:.6}}}"#,
                s.temperature, s.up_delta, s.down_delta
            );
            (value, SensorMessage::Setting(s))
        } else {
            let target = self.settings[heater].temperature;
            let t = &mut self.temps[heater];
            *t += 0.05 * (target - *t) + (self.rng.f64() - 0.5) * 1.2;
            let number = format!("{:.12}", *t);
            // What the controller decodes is the printed number, not `t`.
            let m: f64 = number.parse().expect("a printed number parses");
            let value = format!(
                r#"{{"measurement": {number}, "unit": "C", "id": "{key}", "ts": {ts:.6}}}"#
            );
            (value, SensorMessage::Measurement(m))
        };
        let command = self.states[heater].apply(msg);
        self.seq += 1;
        Record {
            heater: heater as u32,
            key: key.clone(),
            value: value.into_bytes(),
            command,
        }
    }
}

pub fn heater_id(i: usize) -> String {
    format!("heater-{i:05}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use riffle_heater::messages::decode_sensor;

    #[test]
    fn records_decode_to_what_the_reference_saw() {
        let mut g = Generator::new(50, 7);
        let mut reference = vec![ControllerState::default(); 50];
        let mut commands = 0;
        for _ in 0..50_000 {
            let r = g.next_record();
            assert!(
                (90..=120).contains(&(r.key.len() + r.value.len())),
                "{}",
                r.value.len()
            );
            let (id, msg) = decode_sensor(Some(r.key.as_bytes()), &r.value).unwrap();
            assert_eq!(id, r.key);
            assert_eq!(reference[r.heater as usize].apply(msg), r.command);
            commands += r.command.is_some() as usize;
        }
        // The walk leaves the band now and then: tens of commands per heater.
        assert!((500..5_000).contains(&commands), "{commands} commands");
    }
}
