//! The heater application's wire formats, byte-compatible with the book's
//! Python heater and controller.
//!
//! - Topic `sensor`, key = heater id (or no key and `"id"` in the body):
//!   - a measurement: `{"measurement": 45.2}`
//!   - a thermostat setting: `{"temperature": 45.0, "up_delta": 1.0, "down_delta": 1.0}`
//! - Topic `heatercontrol`, key = heater id: `{"control": 0}` switches the
//!   heater ON, `{"control": 1}` switches it OFF (the book's heater code and
//!   its protobuf `enum HeaterCommand { On = 0; Off = 1; }`).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// Default topic of measurements and settings.
pub const SENSOR_TOPIC: &str = "sensor";
/// Default topic of control commands.
pub const CONTROL_TOPIC: &str = "heatercontrol";
/// Default dead-letter topic for records the controller cannot use.
pub const DEAD_LETTER_TOPIC: &str = "sensor-dlq";

/// A thermostat setting: keep the temperature within
/// `[temperature - down_delta, temperature + up_delta]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Setting {
    pub temperature: f64,
    pub up_delta: f64,
    pub down_delta: f64,
}

/// What a heater (or its thermostat) says on the sensor topic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SensorMessage {
    Measurement(f64),
    Setting(Setting),
}

/// A command to a heater.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Command {
    On,
    Off,
}

impl Command {
    /// The wire value: 0 is ON, 1 is OFF.
    pub fn code(self) -> u8 {
        match self {
            Command::On => 0,
            Command::Off => 1,
        }
    }

    /// The JSON body sent on the control topic.
    pub fn to_json(self) -> &'static [u8] {
        match self {
            Command::On => br#"{"control":0}"#,
            Command::Off => br#"{"control":1}"#,
        }
    }

    /// Parses a control record's body.
    pub fn from_json(bytes: &[u8]) -> Result<Command, String> {
        #[derive(Deserialize)]
        struct Control {
            control: serde_json::Value,
        }
        let c: Control =
            serde_json::from_slice(bytes).map_err(|e| format!("not a control message: {e}"))?;
        match c.control.as_u64() {
            Some(0) => Ok(Command::On),
            Some(1) => Ok(Command::Off),
            _ => Err(format!(
                "control must be 0 (on) or 1 (off), not {}",
                c.control
            )),
        }
    }
}

/// The body of a sensor record, decoded once: both kinds of message, and the
/// key-less variant's `"id"`.
#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    measurement: Option<serde_json::Value>,
    temperature: Option<serde_json::Value>,
    up_delta: Option<serde_json::Value>,
    down_delta: Option<serde_json::Value>,
}

fn number(v: &Option<serde_json::Value>, field: &str) -> Result<f64, String> {
    match v {
        None => Err(format!("missing field '{field}'")),
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| format!("field '{field}' must be a number, not {v}")),
    }
}

/// Decodes a sensor record into its heater id and message. The id is the
/// record key when there is one, else the body's `"id"`. Every way a record
/// can be unusable is an error with a one-line reason, for the dead-letter
/// topic.
pub fn decode_sensor(key: Option<&[u8]>, value: &[u8]) -> Result<(String, SensorMessage), String> {
    let body: Body<'_> =
        serde_json::from_slice(value).map_err(|e| format!("not a JSON object: {e}"))?;
    let id = match key {
        Some(k) => std::str::from_utf8(k)
            .map_err(|_| "key is not UTF-8".to_string())?
            .to_owned(),
        None => body
            .id
            .as_deref()
            .map(str::to_owned)
            .ok_or("no key and no \"id\" field")?,
    };
    if id.is_empty() {
        return Err("empty heater id".into());
    }
    let msg = if body.measurement.is_some() {
        SensorMessage::Measurement(number(&body.measurement, "measurement")?)
    } else if body.temperature.is_some() || body.up_delta.is_some() || body.down_delta.is_some() {
        let s = Setting {
            temperature: number(&body.temperature, "temperature")?,
            up_delta: number(&body.up_delta, "up_delta")?,
            down_delta: number(&body.down_delta, "down_delta")?,
        };
        if s.up_delta < 0.0 || s.down_delta < 0.0 {
            return Err(format!(
                "deltas must not be negative (up_delta {}, down_delta {})",
                s.up_delta, s.down_delta
            ));
        }
        SensorMessage::Setting(s)
    } else {
        return Err("neither a measurement nor a setting".into());
    };
    Ok((id, msg))
}

/// Encodes a measurement body at full precision, as Python's `json.dumps`
/// does for the book's heater: rounding would delay the controller's
/// reaction by up to a measurement.
pub fn measurement_json(celsius: f64) -> Vec<u8> {
    format!("{{\"measurement\":{celsius:?}}}").into_bytes()
}

/// Encodes a setting body.
pub fn setting_json(s: &Setting) -> Vec<u8> {
    serde_json::to_vec(s).expect("a setting encodes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_books_formats() {
        assert_eq!(
            decode_sensor(Some(b"1234"), br#"{"measurement": 45.2}"#),
            Ok(("1234".into(), SensorMessage::Measurement(45.2)))
        );
        assert_eq!(
            decode_sensor(
                Some(b"1234"),
                br#"{"temperature": 45.0, "up_delta": 1.0, "down_delta": 1.0}"#
            ),
            Ok((
                "1234".into(),
                SensorMessage::Setting(Setting {
                    temperature: 45.0,
                    up_delta: 1.0,
                    down_delta: 1.0
                })
            ))
        );
        assert_eq!(
            decode_sensor(None, br#"{"id": "1234", "measurement": 45}"#),
            Ok(("1234".into(), SensorMessage::Measurement(45.0)))
        );
        assert_eq!(Command::from_json(br#"{"control": 0}"#), Ok(Command::On));
        assert_eq!(Command::from_json(Command::Off.to_json()), Ok(Command::Off));
    }

    #[test]
    fn rejects_malformed_records_with_a_reason() {
        type Case<'a> = (Option<&'a [u8]>, &'a [u8], &'a str);
        let cases: [Case; 8] = [
            (Some(b"1"), b"not json", "not a JSON object"),
            (Some(b"1"), b"[1,2]", "not a JSON object"),
            (Some(b"1"), br#"{"measurement": "hot"}"#, "must be a number"),
            (
                Some(b"1"),
                br#"{"temperature": 45.0, "up_delta": 1.0}"#,
                "missing field 'down_delta'",
            ),
            (
                Some(b"1"),
                br#"{"temperature": 45.0, "up_delta": -1.0, "down_delta": 1.0}"#,
                "must not be negative",
            ),
            (None, br#"{"measurement": 45.0}"#, "no key"),
            (Some(b"1"), br#"{"hello": 1}"#, "neither"),
            (Some(&[0xff]), br#"{"measurement": 45.0}"#, "UTF-8"),
        ];
        for (key, value, reason) in cases {
            let err = decode_sensor(key, value).expect_err(&String::from_utf8_lossy(value));
            assert!(err.contains(reason), "{err:?} should mention {reason:?}");
            assert!(!err.contains('\n'));
        }
    }
}
