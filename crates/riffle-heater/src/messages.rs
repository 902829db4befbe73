//! The heater application's wire formats, byte-compatible with the book's
//! Python heater and controller.
//!
//! - Topic `sensor`, key = heater id (or no key and `"id"` in the body):
//!   - a measurement: `{"measurement": 45.2}`
//!   - a thermostat setting: `{"temperature": 45.0, "up_delta": 1.0, "down_delta": 1.0}`
//! - Topic `heatercontrol`, key = heater id: `{"control": 0}` switches the
//!   heater ON, `{"control": 1}` switches it OFF (the book's heater code and
//!   its protobuf `enum HeaterCommand { On = 0; Off = 1; }`).

use serde::{Deserialize, Serialize};

use crate::json;

/// Default topic of measurements and settings.
pub const SENSOR_TOPIC: &str = "sensor";
/// Default topic of control commands.
pub const CONTROL_TOPIC: &str = "heatercontrol";
/// Default dead-letter topic for records the controller cannot use.
pub const DEAD_LETTER_TOPIC: &str = "sensor-dlq";
/// The default topic of the controller's watchdog alerts.
pub const ALERTS_TOPIC: &str = "heateralerts";
/// The default topic of the controller's per-heater statistics.
pub const STATS_TOPIC: &str = "heaterstats";

/// The record header with the heater's own time of a measurement or
/// setting: milliseconds since the Unix epoch, in decimal. The simulator
/// writes its simulated time there; the controller's event time reads it
/// (the record's timestamp when it is missing or not a number), while the
/// record's timestamp stays the time it was sent.
pub const TIME_HEADER: &str = "heater-time";

/// The heater's own time of a record: its [`TIME_HEADER`], else its
/// timestamp.
pub fn heater_time(record: &riffle::log::RecordRef<'_>) -> Option<i64> {
    record
        .headers
        .last(TIME_HEADER)
        .and_then(|h| h.value_str()?.parse().ok())
        .or(record.timestamp)
}

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

/// The members of a sensor record's body that the controller reads: both
/// kinds of message, and the key-less variant's `"id"`.
#[derive(Default)]
struct Body<'a> {
    id: Option<json::Value<'a>>,
    measurement: Option<json::Value<'a>>,
    temperature: Option<json::Value<'a>>,
    up_delta: Option<json::Value<'a>>,
    down_delta: Option<json::Value<'a>>,
}

impl<'a> Body<'a> {
    /// Reads the body in one pass; other members are checked and skipped,
    /// and a member that is `null` counts as absent.
    fn parse(bytes: &'a [u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
        let mut body = Body::default();
        json::for_each_member(text, |key, value| {
            let slot = match &*key {
                "id" => &mut body.id,
                "measurement" => &mut body.measurement,
                "temperature" => &mut body.temperature,
                "up_delta" => &mut body.up_delta,
                "down_delta" => &mut body.down_delta,
                _ => return Ok(()),
            };
            if slot.is_some() {
                return Err(format!("duplicate field '{key}'"));
            }
            if value != json::Value::Null {
                *slot = Some(value);
            }
            Ok(())
        })?;
        Ok(body)
    }
}

fn number(v: &Option<json::Value<'_>>, field: &str) -> Result<f64, String> {
    match v {
        None => Err(format!("missing field '{field}'")),
        Some(json::Value::Number(n)) => n
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| format!("field '{field}' must be a number in range, not {n}")),
        Some(v) => Err(format!(
            "field '{field}' must be a number, not {}",
            v.describe()
        )),
    }
}

/// Decodes a sensor record into its heater id and message. The id is the
/// record key when there is one, else the body's `"id"`. Every way a record
/// can be unusable is an error with a one-line reason, for the dead-letter
/// topic.
pub fn decode_sensor(key: Option<&[u8]>, value: &[u8]) -> Result<(String, SensorMessage), String> {
    let body = Body::parse(value).map_err(|e| format!("not a JSON object: {e}"))?;
    let id = match (key, body.id) {
        (Some(k), _) => std::str::from_utf8(k)
            .map_err(|_| "key is not UTF-8".to_string())?
            .to_owned(),
        (None, Some(json::Value::String(id))) => id.into_owned(),
        (None, Some(v)) => {
            return Err(format!("field 'id' must be a string, not {}", v.describe()))
        }
        (None, None) => return Err("no key and no \"id\" field".into()),
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
    fn the_heaters_time_is_its_header_else_the_timestamp() {
        use riffle::log::{Header, Headers};
        let at = |headers: &[Header<'_>], timestamp| {
            heater_time(&riffle::log::RecordRef {
                topic: "sensor",
                partition: 0,
                offset: 0,
                key: None,
                value: b"{}",
                timestamp,
                headers: Headers::from(headers),
            })
        };
        let time = Header::new(TIME_HEADER, Some(b"1700000000123"));
        assert_eq!(at(&[time], Some(5)), Some(1_700_000_000_123));
        assert_eq!(at(&[], Some(5)), Some(5));
        let junk = Header::new(TIME_HEADER, Some(b"soon"));
        assert_eq!(at(&[junk], Some(5)), Some(5), "not a number: the timestamp");
        assert_eq!(at(&[], None), None);
    }

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
        let cases: [Case; 12] = [
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
            (Some(b"1"), b"{\"measurement\": 4\xff}", "not UTF-8"),
            (
                Some(b"1"),
                br#"{"measurement": 1e400}"#,
                "must be a number in range",
            ),
            (
                Some(b"1"),
                br#"{"measurement": 1, "measurement": 2}"#,
                "duplicate field",
            ),
            (
                None,
                br#"{"id": 7, "measurement": 45.0}"#,
                "'id' must be a string",
            ),
        ];
        for (key, value, reason) in cases {
            let err = decode_sensor(key, value).expect_err(&String::from_utf8_lossy(value));
            assert!(err.contains(reason), "{err:?} should mention {reason:?}");
            assert!(!err.contains('\n'));
        }
    }
}
