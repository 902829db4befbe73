//! One record per line, for files and stdio: the value alone, or the whole
//! record as a JSON object.

use riffle::connect::Record;
use riffle::{Error, Result};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::connector::{Fallback, Opt, Role};

/// How a record is written on one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The value's bytes (JSON lines when the values are JSON). Reading
    /// gives records without a key.
    Value,
    /// `{"topic": ..., "key": ..., "value": ..., "headers": {...}}`, with
    /// the value embedded as JSON when it is JSON and as a string
    /// otherwise.
    Record,
}

pub const FORMAT_OPT: Opt = Opt {
    name: "format",
    role: Role::Both,
    default: Fallback::Value("value"),
    help: "value (each line is a record's value) or record (each line a JSON object with topic, key, value and headers)",
};

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "value" => Ok(Format::Value),
            "record" => Ok(Format::Record),
            _ => Err("expected value or record".into()),
        }
    }
}

/// The line for `record`, with its newline.
pub fn encode(record: &Record, format: Format) -> Vec<u8> {
    let mut line = match format {
        Format::Value => record.value.clone(),
        Format::Record => {
            #[derive(serde::Serialize)]
            struct Line<'a> {
                topic: &'a str,
                #[serde(skip_serializing_if = "Option::is_none")]
                key: Option<Value>,
                value: Box<RawValue>,
                #[serde(skip_serializing_if = "Map::is_empty")]
                headers: Map<String, Value>,
            }
            let line = Line {
                topic: &record.topic,
                key: record.key.as_deref().map(text),
                // Embedded as it is when it is JSON, so that its fields
                // keep their order and numbers their spelling.
                value: std::str::from_utf8(&record.value)
                    .ok()
                    .filter(|s| !s.contains('\n'))
                    .and_then(|s| RawValue::from_string(s.trim().to_owned()).ok())
                    .unwrap_or_else(|| {
                        let v = serde_json::from_slice::<Value>(&record.value)
                            .unwrap_or_else(|_| text(&record.value));
                        RawValue::from_string(v.to_string()).expect("JSON")
                    }),
                headers: record
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), text(v)))
                    .collect(),
            };
            serde_json::to_vec(&line).expect("JSON encodes")
        }
    };
    // A value with a newline would read back as two records.
    if format == Format::Value && line.contains(&b'\n') {
        line.retain(|&b| b != b'\n');
    }
    line.push(b'\n');
    line
}

fn text(bytes: &[u8]) -> Value {
    Value::String(String::from_utf8_lossy(bytes).into_owned())
}

/// The record a line (without its newline) holds. `topic` is where it was
/// read (the path, `stdin`), kept unless the line names its own.
pub fn decode(line: &[u8], format: Format, topic: &str) -> Result<Record> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match format {
        Format::Value => Ok(Record::new(topic, None, line)),
        Format::Record => {
            let v: Value = serde_json::from_slice(line)
                .map_err(|e| Error::Decode(format!("line is not a JSON record: {e}")))?;
            let Value::Object(mut o) = v else {
                return Err(Error::Decode("line is not a JSON object".into()));
            };
            let as_bytes = |v: Value| match v {
                Value::String(s) => s.into_bytes(),
                other => other.to_string().into_bytes(),
            };
            let mut r = Record::new(topic, None, Vec::new());
            if let Some(Value::String(t)) = o.remove("topic") {
                r.topic = t;
            }
            r.key = o.remove("key").filter(|k| !k.is_null()).map(as_bytes);
            r.value = o.remove("value").map(as_bytes).unwrap_or_default();
            if let Some(Value::Object(h)) = o.remove("headers") {
                r.headers = h.into_iter().map(|(k, v)| (k, as_bytes(v))).collect();
            }
            Ok(r)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_round_trip() {
        let mut r = Record::new("sensor", Some(b"h1"), r#"{"measurement":45.2}"#);
        r.headers.push(("source".into(), b"mqtt".to_vec()));
        let line = encode(&r, Format::Record);
        assert_eq!(
            std::str::from_utf8(&line).unwrap(),
            "{\"topic\":\"sensor\",\"key\":\"h1\",\"value\":{\"measurement\":45.2},\"headers\":{\"source\":\"mqtt\"}}\n"
        );
        assert_eq!(
            decode(&line[..line.len() - 1], Format::Record, "x").unwrap(),
            r
        );
        let pretty = Record::new("t", None, "{\n  \"a\": 1\n}");
        assert_eq!(
            encode(&pretty, Format::Record),
            b"{\"topic\":\"t\",\"value\":{\"a\":1}}\n"
        );
        let plain = Record::new("t", None, "not json");
        let line = encode(&plain, Format::Record);
        assert_eq!(
            decode(&line[..line.len() - 1], Format::Record, "x").unwrap(),
            plain
        );
    }

    #[test]
    fn value_lines_are_the_value() {
        let r = Record::new("f", Some(b"k"), "a\nb");
        assert_eq!(encode(&r, Format::Value), b"ab\n");
        assert_eq!(
            decode(b"v\r", Format::Value, "f").unwrap(),
            Record::new("f", None, "v")
        );
        assert!(decode(b"[1]", Format::Record, "f").is_err());
    }
}
