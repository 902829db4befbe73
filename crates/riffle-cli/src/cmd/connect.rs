//! `riffle connect`: a pipeline from one system to another, from flags or
//! a TOML file, with an optional built-in transform.
//!
//! A connector is written `TYPE:KEY=VALUE,KEY=VALUE...` on the command line
//! (`mqtt:topic=heaters/+/sensor,url=mqtt://10.0.0.5:1883`) and as a table
//! in a file:
//!
//! ```toml
//! [source]
//! type = "mqtt"
//! topic = "heaters/+/sensor"
//!
//! [transform]
//! filter = ["measurement>0"]
//! key_from = "topic:1"
//!
//! [sink]
//! type = "kafka"
//! topic = "sensor"
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use riffle::connect::{Condition, NoDeadLetter, Pipeline, Transform};
use riffle::{Error, Result};
use riffle_connectors::{registry, Env, LogChoice, Options};
use serde::Deserialize;

use crate::backend::LogArgs;
use crate::endpoint::HttpSecurity;
use crate::util;

#[derive(Args, Debug, Default)]
#[command(after_help = "Connectors and their options: riffle connect --list")]
pub struct ConnectArgs {
    /// Where records come from: TYPE:KEY=VALUE,... (e.g. mqtt:topic=heaters/+/sensor).
    #[arg(long, value_name = "SPEC", required_unless_present_any = ["file", "list"])]
    pub source: Option<String>,
    /// Where records go: TYPE:KEY=VALUE,... (e.g. kafka:topic=sensor).
    #[arg(long, value_name = "SPEC", required_unless_present_any = ["file", "list"])]
    pub sink: Option<String>,
    /// Where records go that the transform cannot handle or the sink refuses for good,
    /// with the reason: TYPE:KEY=VALUE,... [default: see --no-dead-letter].
    #[arg(long, value_name = "SPEC")]
    pub dead_letter: Option<String>,
    /// Without a dead-letter sink, what a failed or refused record does: stop (the
    /// pipeline fails, naming it) or skip (logged as a warning, counted) [default: skip].
    #[arg(long, value_name = "POLICY")]
    pub no_dead_letter: Option<String>,
    /// How many times a record the sink refuses for good (an HTTP 4xx, an MQTT 5
    /// reason code, an AMQP return) is sent before it is a dead letter [default: 3].
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<u32>,
    /// Keep only records whose JSON value passes: FIELD==V, !=, >, >=, <, <=, or a
    /// bare FIELD (repeatable; all must pass).
    #[arg(long, value_name = "CONDITION")]
    pub filter: Vec<String>,
    /// Keep only these JSON fields (comma-separated, dotted paths allowed).
    #[arg(long, value_name = "FIELDS", value_delimiter = ',')]
    pub project: Vec<String>,
    /// Set each record's key from its topic (topic:N, the Nth level from 0, split
    /// on / or .) or from a JSON field (field:PATH).
    #[arg(long, value_name = "FROM")]
    pub key_from: Option<String>,
    /// The most records read, sent and acknowledged together.
    #[arg(long, value_name = "N")]
    pub batch: Option<usize>,
    /// A pipeline file (TOML) with [source], [sink], and optionally
    /// [transform], [dead_letter] and batch; flags given as well replace its values.
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Print every connector, what it guarantees and its options, and exit.
    #[arg(long)]
    pub list: bool,
    /// Serve /metrics (records in and out, dead letters, retries, errors per
    /// connector, the source's lag) and /healthz on this address, e.g.
    /// 127.0.0.1:9100.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    #[command(flatten)]
    pub http_security: HttpSecurity,
    /// The pipeline's name in its metrics (the `pipeline` label).
    #[arg(long, value_name = "NAME", default_value = "connect")]
    pub name: String,
}

/// A pipeline as a file holds it (and as flags are turned into).
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    pub source: Option<BTreeMap<String, toml::Value>>,
    pub sink: Option<BTreeMap<String, toml::Value>>,
    pub dead_letter: Option<BTreeMap<String, toml::Value>>,
    #[serde(default)]
    pub transform: TransformFile,
    pub batch: Option<usize>,
    /// `stop` or `skip`: see [`NoDeadLetter`].
    pub no_dead_letter: Option<String>,
    pub max_attempts: Option<u32>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TransformFile {
    #[serde(default)]
    pub filter: Vec<String>,
    #[serde(default)]
    pub project: Vec<String>,
    pub key_from: Option<String>,
}

pub fn run(log: &LogArgs, args: ConnectArgs) -> Result<()> {
    if args.list {
        print!("{}", registry::describe_all());
        return Ok(());
    }
    args.http_security.check(args.http.as_deref())?;
    let spec = resolve(&args)?;
    let env = Env {
        log: Box::new({
            let log = log.clone();
            move |choice| match choice {
                LogChoice::Kafka(Some(brokers)) => {
                    let mut l = log.clone();
                    l.brokers = Some(brokers.to_owned());
                    l.kafka("connect", "")
                }
                LogChoice::Kafka(None) => log.kafka(
                    "connect",
                    "or give the kafka connector its own brokers option",
                ),
                LogChoice::Embedded => {
                    let mut l = log.clone();
                    l.brokers = None;
                    l.stored("connect")
                }
            }
        }),
    };
    let endpoint = match &args.http {
        Some(bind) => Some(args.http_security.start(bind, None)?),
        None => {
            args.http_security.check_unused()?;
            None
        }
    };
    let mut pipeline = build(spec, &env, &args.name)?;
    eprintln!("riffle connect: {}", pipeline.describe());
    if let Some(e) = &endpoint {
        eprintln!(
            "riffle connect: serving {}://{}/metrics and /healthz ({})",
            e.scheme(),
            e.addr(),
            args.http_security.describe(e)
        );
    }
    let stopper = util::signal_stopper();
    let mut last = Instant::now();
    pipeline = pipeline.on_batch(move |s| {
        if last.elapsed() >= Duration::from_secs(5) {
            last = Instant::now();
            eprintln!(
                "  {} in, {} out, {} dead letters, {} skipped, {} retries",
                s.records_in, s.records_out, s.dead_letters, s.skipped, s.retries
            );
        }
    });
    let stats = pipeline.run(stopper.as_ref())?;
    eprintln!(
        "riffle connect: done: {} in, {} out, {} dead letters, {} skipped, {} retries",
        stats.records_in, stats.records_out, stats.dead_letters, stats.skipped, stats.retries
    );
    Ok(())
}

/// The pipeline the file and the flags describe together.
pub fn resolve(args: &ConnectArgs) -> Result<PipelineFile> {
    let mut spec = match &args.file {
        None => PipelineFile::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::InvalidInput(format!("cannot read {}: {e}", path.display())))?;
            toml::from_str(&text).map_err(|e| {
                // Where (the first line) and what (the last), without the
                // excerpt drawn between them.
                let msg = e.to_string();
                let mut lines = msg.lines().map(str::trim).filter(|l| !l.is_empty());
                let place = lines.next().unwrap_or("invalid TOML");
                let what = lines.next_back().unwrap_or_default();
                Error::InvalidInput(format!("{}: {place}: {what}", path.display()))
            })?
        }
    };
    let table = |s: &str| -> Result<BTreeMap<String, toml::Value>> {
        let (kind, pairs) = parse_spec(s)?;
        let mut t: BTreeMap<_, _> = pairs
            .into_iter()
            .map(|(k, v)| (k, toml::Value::String(v)))
            .collect();
        t.insert("type".into(), toml::Value::String(kind));
        Ok(t)
    };
    if let Some(s) = &args.source {
        spec.source = Some(table(s)?);
    }
    if let Some(s) = &args.sink {
        spec.sink = Some(table(s)?);
    }
    if let Some(s) = &args.dead_letter {
        spec.dead_letter = Some(table(s)?);
    }
    if !args.filter.is_empty() {
        spec.transform.filter = args.filter.clone();
    }
    if !args.project.is_empty() {
        spec.transform.project = args.project.clone();
    }
    if args.key_from.is_some() {
        spec.transform.key_from = args.key_from.clone();
    }
    if args.batch.is_some() {
        spec.batch = args.batch;
    }
    if args.no_dead_letter.is_some() {
        spec.no_dead_letter = args.no_dead_letter.clone();
    }
    if args.max_attempts.is_some() {
        spec.max_attempts = args.max_attempts;
    }
    Ok(spec)
}

/// `TYPE:KEY=VALUE,KEY=VALUE`. A comma starts a new option only when a
/// `KEY=` follows it, so values may hold commas (`topic=a,b`).
pub fn parse_spec(s: &str) -> Result<(String, Vec<(String, String)>)> {
    let (kind, rest) = s.split_once(':').unwrap_or((s, ""));
    if kind.is_empty() || !kind.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(Error::InvalidInput(format!(
            "connector '{s}': expected TYPE or TYPE:KEY=VALUE,... (riffle connect --list shows the types)"
        )));
    }
    let mut pairs: Vec<(String, String)> = Vec::new();
    for part in split_options(rest) {
        match part.split_once('=') {
            Some((k, v)) if is_key(k) => pairs.push((k.to_owned(), v.to_owned())),
            _ => {
                return Err(Error::InvalidInput(format!(
                    "connector '{s}': '{part}' is not KEY=VALUE"
                )))
            }
        }
    }
    Ok((kind.to_owned(), pairs))
}

fn is_key(k: &str) -> bool {
    !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn split_options(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut parts = Vec::new();
    let mut start = 0;
    for (i, _) in s.match_indices(',') {
        let next = &s[i + 1..];
        let starts_key = next.split_once('=').is_some_and(|(k, _)| is_key(k));
        if starts_key {
            parts.push(&s[start..i]);
            start = i + 1;
        }
    }
    parts.push(&s[start..]);
    parts
}

fn options(what: &str, table: Option<BTreeMap<String, toml::Value>>) -> Result<Options> {
    let table = table.ok_or_else(|| {
        Error::InvalidInput(format!(
            "no {what}: pass --{what} TYPE:KEY=VALUE,... or a [{what}] table in --file"
        ))
    })?;
    let kind = match table.get("type") {
        Some(toml::Value::String(t)) => t.clone(),
        _ => {
            return Err(Error::InvalidInput(format!(
                "[{what}] needs type = \"...\" (riffle connect --list shows the types)"
            )))
        }
    };
    let mut o = Options::new(&kind);
    for (k, v) in table {
        if k == "type" {
            continue;
        }
        let text = match &v {
            toml::Value::Array(a) => a
                .iter()
                .map(scalar)
                .collect::<Option<Vec<_>>>()
                .map(|v| v.join(",")),
            other => scalar(other),
        }
        .ok_or_else(|| {
            Error::InvalidInput(format!(
                "[{what}] {k}: expected a string, number, boolean or list of them, not {}",
                v.type_str()
            ))
        })?;
        o.set(k, text);
    }
    Ok(o)
}

fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The transform a spec describes.
pub fn transform(t: &TransformFile) -> Result<Transform> {
    let mut out = Transform::new();
    for f in &t.filter {
        out = out.filter(Condition::parse(f)?);
    }
    let fields: Vec<&str> = t
        .project
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    if !fields.is_empty() {
        out = out.project(&fields);
    }
    if let Some(k) = &t.key_from {
        out = match k.split_once(':') {
            Some(("topic", n)) => out.key_from_topic_level(n.parse().map_err(|_| {
                Error::InvalidInput(format!("key-from '{k}': the topic level must be a number"))
            })?),
            Some(("field", path)) if !path.is_empty() => out.key_from_field(path),
            _ => {
                return Err(Error::InvalidInput(format!(
                    "key-from '{k}': expected topic:N or field:PATH"
                )))
            }
        };
    }
    Ok(out)
}

fn build(spec: PipelineFile, env: &Env, name: &str) -> Result<Pipeline> {
    // Everything that can be checked without connecting is checked first.
    let stage = transform(&spec.transform)?;
    let policy = spec
        .no_dead_letter
        .as_deref()
        .map(str::parse::<NoDeadLetter>)
        .transpose()?
        .unwrap_or_default();
    if spec.max_attempts == Some(0) {
        return Err(Error::InvalidInput(
            "max_attempts must be at least 1 (the first attempt counts)".into(),
        ));
    }
    let source = options("source", spec.source)?;
    let sink = options("sink", spec.sink)?;
    let dead = spec
        .dead_letter
        .map(|t| options("dead_letter", Some(t)))
        .transpose()?;
    let names = (
        source.connector().to_owned(),
        sink.connector().to_owned(),
        dead.as_ref().map(|d| d.connector().to_owned()),
    );
    let source = registry::source(source, env)?;
    let sink = registry::sink(sink, env)?;
    let mut p = Pipeline::new(source, sink)
        .stage(stage)
        .no_dead_letter(policy)
        .metrics(name, &names.0, &names.1, names.2.as_deref());
    if let Some(n) = spec.max_attempts {
        p = p.max_attempts(n);
    }
    if let Some(d) = dead {
        p = p.dead_letter(registry::sink(d, env)?);
    }
    if let Some(b) = spec.batch {
        p = p.batch(b);
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_split_on_commas_that_start_options() {
        let (k, o) = parse_spec("kafka:topic=a,b,group=g").unwrap();
        assert_eq!(k, "kafka");
        assert_eq!(
            o,
            [("topic".into(), "a,b".into()), ("group".into(), "g".into())]
        );
        let (k, o) = parse_spec("mqtt:url=mqtt://u:p@h:1883,topic=heaters/+/sensor").unwrap();
        assert_eq!(k, "mqtt");
        assert_eq!(o[0], ("url".into(), "mqtt://u:p@h:1883".into()));
        assert_eq!(o[1], ("topic".into(), "heaters/+/sensor".into()));
        assert_eq!(parse_spec("stdio").unwrap(), ("stdio".into(), vec![]));
        assert!(parse_spec("file:path").is_err());
        assert!(parse_spec(":x=1").is_err());
    }

    #[test]
    fn a_file_and_the_same_flags_make_the_same_pipeline() {
        let dir = std::env::temp_dir().join(format!("riffle-connect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("p.toml");
        std::fs::write(
            &file,
            r#"
batch = 50
max_attempts = 5
no_dead_letter = "stop"
[source]
type = "file"
path = "in.jsonl"
follow = true
[transform]
filter = ["t>3", "kind==heater"]
project = ["t", "id"]
key_from = "field:id"
[sink]
type = "kafka"
topic = "a,b"
[dead_letter]
type = "file"
path = "bad.jsonl"
"#,
        )
        .unwrap();
        let from_file = resolve(&ConnectArgs {
            file: Some(file.clone()),
            ..Default::default()
        })
        .unwrap();
        let from_flags = resolve(&ConnectArgs {
            source: Some("file:path=in.jsonl,follow=true".into()),
            sink: Some("kafka:topic=a,b".into()),
            dead_letter: Some("file:path=bad.jsonl".into()),
            filter: vec!["t>3".into(), "kind==heater".into()],
            project: vec!["t".into(), "id".into()],
            key_from: Some("field:id".into()),
            batch: Some(50),
            max_attempts: Some(5),
            no_dead_letter: Some("stop".into()),
            ..Default::default()
        })
        .unwrap();
        let opts = |p: &PipelineFile| {
            (
                options("source", p.source.clone()).unwrap(),
                options("sink", p.sink.clone()).unwrap(),
                options("dead_letter", p.dead_letter.clone()).unwrap(),
            )
        };
        assert_eq!(opts(&from_file), opts(&from_flags));
        assert_eq!(from_file.transform, from_flags.transform);
        assert_eq!(from_file.batch, from_flags.batch);
        assert_eq!(
            (from_file.max_attempts, from_file.no_dead_letter.as_deref()),
            (Some(5), Some("stop"))
        );
        assert_eq!(
            (from_flags.max_attempts, from_flags.no_dead_letter),
            (from_file.max_attempts, from_file.no_dead_letter)
        );
        std::fs::write(&file, "[source]\ntype = \"file\"\n[sinc]\n").unwrap();
        let e = resolve(&ConnectArgs {
            file: Some(file),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("sinc"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn transforms_are_checked_before_connecting() {
        let bad = |t: TransformFile| transform(&t).unwrap_err().to_string();
        assert!(bad(TransformFile {
            filter: vec!["t>hot".into()],
            ..Default::default()
        })
        .contains("filter"));
        assert!(bad(TransformFile {
            key_from: Some("topic:x".into()),
            ..Default::default()
        })
        .contains("key-from"));
        assert!(bad(TransformFile {
            key_from: Some("header:x".into()),
            ..Default::default()
        })
        .contains("topic:N"));
    }
}
