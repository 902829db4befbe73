//! The built-in stage: keep records whose JSON matches, keep some fields,
//! take the key from the record. For anything more, write a processor.

use std::fmt;

use serde_json::{Map, Value};

use super::{Record, Stage};
use crate::error::{Error, Result};

/// A filter-and-project step over JSON values.
///
/// Records pass unchanged when the transform is empty. With a filter or a
/// projection, each value must be a JSON object; one that is not goes to
/// the dead letters with the reason.
///
/// ```
/// use riffle_connect::{Condition, Record, Stage, Transform};
/// let mut t = Transform::new()
///     .filter(Condition::parse("measurement>40").unwrap())
///     .project(&["measurement"])
///     .key_from_topic_level(1);
/// let mut out = Vec::new();
/// let r = Record::new("heaters/h1/sensor", None, r#"{"measurement": 45.2, "unit": "C"}"#);
/// t.process(&r, &mut out).unwrap();
/// assert_eq!(out[0].value, br#"{"measurement":45.2}"#);
/// assert_eq!(out[0].key.as_deref(), Some(&b"h1"[..]));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Transform {
    filters: Vec<Condition>,
    project: Vec<String>,
    key: Option<KeyFrom>,
}

#[derive(Debug, Clone)]
enum KeyFrom {
    TopicLevel(usize),
    Field(String),
}

impl Transform {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps only records that satisfy `condition` (all of them, when
    /// called more than once).
    pub fn filter(mut self, condition: Condition) -> Self {
        self.filters.push(condition);
        self
    }

    /// Keeps only these fields (dotted paths such as `reading.value`) in
    /// the output object; missing ones are left out.
    pub fn project(mut self, fields: &[&str]) -> Self {
        self.project.extend(fields.iter().map(|f| f.to_string()));
        self
    }

    /// Sets each record's key to level `n` (from 0) of its topic, split on
    /// `/` (MQTT) or `.` (NATS): with 1, `heaters/h1/sensor` gets key `h1`.
    pub fn key_from_topic_level(mut self, n: usize) -> Self {
        self.key = Some(KeyFrom::TopicLevel(n));
        self
    }

    /// Sets each record's key to a field of its JSON value (as text).
    pub fn key_from_field(mut self, path: &str) -> Self {
        self.key = Some(KeyFrom::Field(path.to_owned()));
        self
    }

    /// Whether the transform passes everything through unchanged.
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty() && self.project.is_empty() && self.key.is_none()
    }

    fn needs_json(&self) -> bool {
        !self.filters.is_empty()
            || !self.project.is_empty()
            || matches!(self.key, Some(KeyFrom::Field(_)))
    }
}

impl Stage for Transform {
    fn process(&mut self, record: &Record, out: &mut Vec<Record>) -> Result<()> {
        let json = if self.needs_json() {
            match serde_json::from_slice::<Value>(&record.value) {
                Ok(v @ Value::Object(_)) => Some(v),
                Ok(_) => return Err(Error::Decode("value is not a JSON object".into())),
                Err(e) => return Err(Error::Decode(format!("value is not JSON: {e}"))),
            }
        } else {
            None
        };
        if let Some(v) = &json {
            if !self.filters.iter().all(|c| c.holds(v)) {
                return Ok(());
            }
        }
        let mut r = record.clone();
        match &self.key {
            Some(KeyFrom::TopicLevel(n)) => {
                let level = record.topic.split(['/', '.']).nth(*n).ok_or_else(|| {
                    Error::Decode(format!("topic '{}' has no level {n}", record.topic))
                })?;
                r.key = Some(level.as_bytes().to_vec());
            }
            Some(KeyFrom::Field(path)) => {
                let v = json
                    .as_ref()
                    .and_then(|v| lookup(v, path))
                    .ok_or_else(|| Error::Decode(format!("no field '{path}' for the key")))?;
                r.key = Some(match v {
                    Value::String(s) => s.clone().into_bytes(),
                    other => other.to_string().into_bytes(),
                });
            }
            None => {}
        }
        if let (false, Some(v)) = (self.project.is_empty(), &json) {
            let mut kept = Value::Object(Map::new());
            for path in &self.project {
                if let Some(x) = lookup(v, path) {
                    insert(&mut kept, path, x.clone());
                }
            }
            r.value = serde_json::to_vec(&kept).expect("JSON encodes");
        }
        out.push(r);
        Ok(())
    }
}

fn lookup<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(v, |v, part| v.get(part))
}

fn insert(root: &mut Value, path: &str, x: Value) {
    let mut parts = path.split('.').peekable();
    let mut at = root;
    while let Some(part) = parts.next() {
        let obj = at.as_object_mut().expect("projection builds objects");
        if parts.peek().is_none() {
            obj.insert(part.to_owned(), x);
            return;
        }
        at = obj.entry(part).or_insert_with(|| Value::Object(Map::new()));
    }
}

/// A test on one field of a JSON object: `field==value`, `field!=value`,
/// `field>n`, `field>=n`, `field<n`, `field<=n`, or just `field` (present
/// and not `null` or `false`). The value is read as JSON when it parses
/// (`42`, `true`, `"on"`) and as a string otherwise (`on`). A missing field
/// fails every test except `!=`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    field: String,
    op: Op,
    value: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Truthy,
}

impl Condition {
    /// Parses `field<op>value`; a one-line error says what is wrong.
    pub fn parse(text: &str) -> Result<Self> {
        const OPS: [(&str, Op); 6] = [
            ("==", Op::Eq),
            ("!=", Op::Ne),
            (">=", Op::Ge),
            ("<=", Op::Le),
            (">", Op::Gt),
            ("<", Op::Lt),
        ];
        let bad = |why: &str| {
            Error::InvalidInput(format!(
                "filter '{text}': {why} (expected field==value, !=, >, >=, <, <= or a bare field)"
            ))
        };
        let found = OPS
            .iter()
            .filter_map(|(s, op)| text.find(s).map(|i| (i, *s, *op)))
            .min_by_key(|(i, s, _)| (*i, std::cmp::Reverse(s.len())));
        let (field, op, value) = match found {
            Some((i, s, op)) => {
                let raw = text[i + s.len()..].trim();
                if raw.is_empty() {
                    return Err(bad("no value"));
                }
                let value =
                    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
                if matches!(op, Op::Gt | Op::Ge | Op::Lt | Op::Le) && !value.is_number() {
                    return Err(bad("comparison needs a number"));
                }
                (text[..i].trim(), op, value)
            }
            None => (text.trim(), Op::Truthy, Value::Null),
        };
        if field.is_empty() {
            return Err(bad("no field"));
        }
        Ok(Self {
            field: field.to_owned(),
            op,
            value,
        })
    }

    /// Whether `v` passes.
    pub fn holds(&self, v: &Value) -> bool {
        let Some(x) = lookup(v, &self.field) else {
            return self.op == Op::Ne;
        };
        let num = || x.as_f64().zip(self.value.as_f64());
        match self.op {
            Op::Eq => equal(x, &self.value),
            Op::Ne => !equal(x, &self.value),
            Op::Gt => num().is_some_and(|(a, b)| a > b),
            Op::Ge => num().is_some_and(|(a, b)| a >= b),
            Op::Lt => num().is_some_and(|(a, b)| a < b),
            Op::Le => num().is_some_and(|(a, b)| a <= b),
            Op::Truthy => !matches!(x, Value::Null | Value::Bool(false)),
        }
    }
}

/// JSON equality with numbers compared by value (`1` equals `1.0`).
fn equal(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Truthy => return f.write_str(&self.field),
        };
        write!(f, "{}{op}{}", self.field, self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(t: &mut Transform, value: &str) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        t.process(&Record::new("a/b", None, value), &mut out)?;
        Ok(out)
    }

    #[test]
    fn conditions_parse_and_test() {
        let v = json!({"kind": "heater", "t": 45.5, "on": true, "n": {"x": 1}});
        let holds = |c: &str| Condition::parse(c).unwrap().holds(&v);
        assert!(holds("kind==heater"));
        assert!(holds("kind==\"heater\""));
        assert!(!holds("kind!=heater"));
        assert!(holds("t>45") && holds("t>=45.5") && !holds("t<45") && holds("t<=46"));
        assert!(holds("on") && !holds("missing") && holds("missing!=1"));
        assert!(holds("n.x==1.0"));
        assert!(!holds("missing==1"));
        for bad in ["", "==1", "t>", "t>warm"] {
            let e = Condition::parse(bad).unwrap_err().to_string();
            assert!(e.contains("filter"), "{e}");
        }
        assert_eq!(Condition::parse("t >= 3").unwrap().to_string(), "t>=3");
    }

    #[test]
    fn empty_transform_passes_anything() {
        let mut t = Transform::new();
        assert!(t.is_empty());
        assert_eq!(run(&mut t, "not json").unwrap()[0].value, b"not json");
    }

    #[test]
    fn filter_projects_and_rejects_non_objects() {
        let mut t = Transform::new()
            .filter(Condition::parse("kind==heater").unwrap())
            .project(&["id", "r.v", "absent"]);
        let out = run(&mut t, r#"{"kind":"heater","id":7,"r":{"v":1,"w":2}}"#).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&out[0].value).unwrap(),
            json!({"id": 7, "r": {"v": 1}})
        );
        assert!(run(&mut t, r#"{"kind":"fan"}"#).unwrap().is_empty());
        assert!(matches!(run(&mut t, "[1]"), Err(Error::Decode(_))));
        assert!(matches!(run(&mut t, "nope"), Err(Error::Decode(_))));
    }

    #[test]
    fn keys_come_from_topic_levels_or_fields() {
        let mut t = Transform::new().key_from_topic_level(1);
        assert_eq!(run(&mut t, "x").unwrap()[0].key.as_deref(), Some(&b"b"[..]));
        let mut t = Transform::new().key_from_topic_level(5);
        assert!(run(&mut t, "x").is_err());
        let mut t = Transform::new().key_from_field("id");
        assert_eq!(
            run(&mut t, r#"{"id":"h9"}"#).unwrap()[0].key.as_deref(),
            Some(&b"h9"[..])
        );
        assert_eq!(
            run(&mut t, r#"{"id":12}"#).unwrap()[0].key.as_deref(),
            Some(&b"12"[..])
        );
        assert!(run(&mut t, r#"{"other":1}"#).is_err());
    }
}
