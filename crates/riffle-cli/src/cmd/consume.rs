//! `riffle consume`: print a topic's records, as kcat and
//! `kafka-console-consumer` do. Without a group it reads the partitions it
//! is given from the offsets it is given and commits nothing, so every run
//! sees the same records; with `-g` it reads as a member of that group and
//! commits what it printed.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use riffle::log::{ConsumerConfig, Log, OffsetReset, ReaderConfig, RecordRef, TopicPartition};
use riffle::stream::ConsumerGroup;
use riffle::{Error, Result};

use crate::backend::LogArgs;
use crate::util;

#[derive(Args)]
pub struct ConsumeArgs {
    /// Topic to read (repeatable).
    #[arg(long, short = 't', required = true)]
    topic: Vec<String>,
    /// Read as a member of this consumer group, committing what was printed;
    /// members of one group share the partitions. Without it nothing is
    /// joined or committed.
    #[arg(long, short = 'g')]
    group: Option<String>,
    /// Consumer actors in this process (with --group).
    #[arg(long, short = 'n', default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    consumers: u16,
    /// Where to start: with --group when it has no committed offset,
    /// without it the same as -o beginning|end.
    #[arg(long, default_value = "earliest", value_parser = ["earliest", "latest"])]
    from: String,
    /// Read only this partition (repeatable; without --group).
    #[arg(long, short = 'p', value_name = "PARTITION")]
    partition: Vec<i32>,
    /// Where to start without --group: beginning, end, an offset, -N (N
    /// records before the end) or s@TIMESTAMP_MS (the first record at or
    /// after that time, in ms since the Unix epoch).
    #[arg(long, short = 'o', value_name = "OFFSET", allow_hyphen_values = true, value_parser = parse_start)]
    offset: Option<Start>,
    /// Exit once the end of every partition is reached (without --group).
    #[arg(long = "exit", short = 'e')]
    exit_at_end: bool,
    /// Print each record with this format: %t topic, %p partition, %o offset,
    /// %k key, %s value, %h headers (name=value,...), %T timestamp (ms), %%
    /// a percent sign, \n and \t.
    #[arg(long, short = 'f', value_name = "FORMAT", conflicts_with = "json")]
    format: Option<String>,
    /// Print each record as a JSON object on a line: topic, partition,
    /// offset, tstype, ts, headers, key and payload.
    #[arg(long = "json", short = 'J')]
    json: bool,
    /// Accepted for scripts written when values had to be JSON: every
    /// value is printed now.
    #[arg(long, hide = true)]
    raw: bool,
    /// Stop after this many records.
    #[arg(long)]
    max: Option<u64>,
    /// Stop after this long (e.g. 30s); runs until Ctrl-C or SIGTERM otherwise.
    #[arg(long, value_parser = util::parse_duration)]
    duration: Option<Duration>,
    /// Skip records of aborted transactions and those of open ones until
    /// they commit: how to read the outputs of an exactly-once application.
    #[arg(long)]
    read_committed: bool,
    /// Session timeout of the group members (with --group).
    #[arg(long, default_value = "10s", value_parser = util::parse_duration)]
    session_timeout: Duration,
}

/// Where a reader without a group starts in each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Beginning,
    End,
    Offset(i64),
    /// This many records before the end.
    FromEnd(i64),
    /// The first record at or after this time (ms since the Unix epoch).
    Time(i64),
}

fn parse_start(s: &str) -> std::result::Result<Start, String> {
    let bad = || format!("'{s}' is not an offset (beginning, end, OFFSET, -N or s@TIMESTAMP_MS)");
    match s {
        "beginning" | "earliest" => Ok(Start::Beginning),
        "end" | "latest" => Ok(Start::End),
        _ => {
            if let Some(ts) = s.strip_prefix("s@") {
                ts.parse().map(Start::Time).map_err(|_| bad())
            } else if let Some(n) = s.strip_prefix('-') {
                n.parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .map(Start::FromEnd)
                    .ok_or_else(bad)
            } else {
                s.parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .map(Start::Offset)
                    .ok_or_else(bad)
            }
        }
    }
}

/// How a record is printed.
enum Output {
    /// `topic=T partition=P offset=O key=K value=V [headers=N=V,...]` (with
    /// the consumer's name in front of the partition when reading as a group).
    Default,
    Format(Vec<Token>),
    Json,
}

enum Token {
    Text(String),
    Topic,
    Partition,
    Offset,
    Key,
    Value,
    Headers,
    Timestamp,
}

/// Parses kcat's format tokens; an unknown `%x` is refused, so that a typo
/// does not print garbage for every record.
fn parse_format(f: &str) -> Result<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut text = String::new();
    let mut chars = f.chars();
    while let Some(c) = chars.next() {
        let token = match c {
            '%' => match chars.next() {
                Some('t') => Token::Topic,
                Some('p') => Token::Partition,
                Some('o') => Token::Offset,
                Some('k') => Token::Key,
                Some('s') => Token::Value,
                Some('h') => Token::Headers,
                Some('T') => Token::Timestamp,
                Some('%') => {
                    text.push('%');
                    continue;
                }
                Some(other) => {
                    return Err(Error::InvalidInput(format!(
                        "unknown format token %{other} (use %t %p %o %k %s %h %T %%)"
                    )))
                }
                None => return Err(Error::InvalidInput("the format ends with a lone %".into())),
            },
            '\\' => {
                match chars.next() {
                    Some('n') => text.push('\n'),
                    Some('t') => text.push('\t'),
                    Some('\\') => text.push('\\'),
                    Some(other) => {
                        text.push('\\');
                        text.push(other);
                    }
                    None => text.push('\\'),
                }
                continue;
            }
            c => {
                text.push(c);
                continue;
            }
        };
        if !text.is_empty() {
            tokens.push(Token::Text(std::mem::take(&mut text)));
        }
        tokens.push(token);
    }
    if !text.is_empty() {
        tokens.push(Token::Text(text));
    }
    Ok(tokens)
}

impl Output {
    /// The record as printed, with its line end (a format brings its own).
    fn render(&self, r: &RecordRef<'_>, consumer: Option<usize>) -> String {
        match self {
            Output::Default => {
                let who = match consumer {
                    Some(i) => format!("consumer-{i} "),
                    None => format!("topic={} ", r.topic),
                };
                format!(
                    "{who}partition={} offset={} key={} value={}{}\n",
                    r.partition,
                    r.offset,
                    r.key.map(util::show).unwrap_or_else(|| "-".into()),
                    util::show(r.value),
                    util::show_headers(r.headers)
                )
            }
            Output::Format(tokens) => {
                let mut out = String::new();
                for t in tokens {
                    match t {
                        Token::Text(s) => out.push_str(s),
                        Token::Topic => out.push_str(r.topic),
                        Token::Partition => out.push_str(&r.partition.to_string()),
                        Token::Offset => out.push_str(&r.offset.to_string()),
                        Token::Key => out.push_str(&r.key.map(util::show).unwrap_or_default()),
                        Token::Value => out.push_str(&util::show(r.value)),
                        Token::Headers => out.push_str(
                            util::show_headers(r.headers).trim_start_matches(" headers="),
                        ),
                        Token::Timestamp => out.push_str(&r.timestamp.unwrap_or(-1).to_string()),
                    }
                }
                out
            }
            Output::Json => {
                // As kcat: names and values in turn, a null value as null.
                let headers: Vec<serde_json::Value> = r
                    .headers
                    .iter()
                    .flat_map(|h| [h.name.into(), h.value.map(util::show).into()])
                    .collect();
                let v = serde_json::json!({
                    "topic": r.topic,
                    "partition": r.partition,
                    "offset": r.offset,
                    "tstype": if r.timestamp.is_some() { "create" } else { "none" },
                    "ts": r.timestamp.unwrap_or(-1),
                    "headers": headers,
                    "key": r.key.map(util::show),
                    "payload": util::show(r.value),
                });
                format!("{v}\n")
            }
        }
    }
}

pub fn run(args: &LogArgs, a: ConsumeArgs) -> Result<()> {
    let output = match (&a.format, a.json) {
        (Some(f), _) => Output::Format(parse_format(f)?),
        (None, true) => Output::Json,
        (None, false) => Output::Default,
    };
    if a.group.is_some() && (!a.partition.is_empty() || a.offset.is_some() || a.exit_at_end) {
        return Err(Error::InvalidInput(
            "-p, -o and -e read without a group: drop --group, or use --from with it".into(),
        ));
    }
    if a.group.is_none() && a.consumers != 1 {
        return Err(Error::InvalidInput(
            "--consumers shares partitions within a group: give --group".into(),
        ));
    }
    let log = args.stored("consume")?;
    match a.group.clone() {
        Some(group) => consume_in_group(log, a, &group, output),
        None => read_without_group(&*log, a, output),
    }
}

/// Writes to stdout; a closed pipe (`| head`) ends the run as an error
/// rather than a panic.
fn print(s: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("cannot write to stdout", &e))
}

fn read_without_group(log: &dyn Log, a: ConsumeArgs, output: Output) -> Result<()> {
    const T: Duration = Duration::from_secs(30);
    let default_start = match a.from.as_str() {
        "latest" => Start::End,
        _ => Start::Beginning,
    };
    let start_at = a.offset.unwrap_or(default_start);
    let mut start = Vec::new();
    for topic in &a.topic {
        let info = log.describe_topic(topic, T)?;
        for p in &a.partition {
            if !info.partitions.iter().any(|q| q.id == *p) {
                return Err(Error::InvalidInput(format!(
                    "partition {p} does not exist in topic '{topic}' ({} partitions)",
                    info.partitions.len()
                )));
            }
        }
        let by_time = match start_at {
            Start::Time(ts) => log.offsets_for_time(topic, ts, T)?,
            _ => Vec::new(),
        };
        for p in &info.partitions {
            if !a.partition.is_empty() && !a.partition.contains(&p.id) {
                continue;
            }
            let from = match start_at {
                Start::Beginning => p.low,
                Start::End => p.high,
                Start::Offset(o) => o.clamp(p.low, p.high),
                Start::FromEnd(n) => (p.high - n).max(p.low),
                Start::Time(_) => by_time
                    .iter()
                    .find(|(q, _)| *q == p.id)
                    .and_then(|(_, o)| *o)
                    .unwrap_or(p.high),
            };
            start.push((TopicPartition::new(topic.clone(), p.id), from));
        }
    }
    let mut reader = log.reader(&ReaderConfig {
        start,
        read_committed: a.read_committed,
    })?;
    let stopper = util::signal_stopper();
    let began = Instant::now();
    let mut printed: u64 = 0;
    let mut text = String::new();
    loop {
        if stopper.is_stopped() || a.duration.is_some_and(|d| began.elapsed() >= d) {
            break;
        }
        let room = a.max.map_or(1000, |m| (m - printed).min(1000)) as usize;
        text.clear();
        let n = reader.poll(Duration::from_millis(100), room, &mut |r| {
            text.push_str(&output.render(&r, None));
            Ok(())
        })?;
        print(&text)?;
        printed += n as u64;
        if a.max.is_some_and(|m| printed >= m) || (a.exit_at_end && reader.at_end()) {
            break;
        }
    }
    eprintln!("consumed {printed} records");
    Ok(())
}

fn consume_in_group(
    log: Arc<dyn Log>,
    a: ConsumeArgs,
    group_id: &str,
    output: Output,
) -> Result<()> {
    let topics: Vec<&str> = a.topic.iter().map(String::as_str).collect();
    let mut cfg = ConsumerConfig::new(group_id, &topics);
    cfg.offset_reset = a.from.parse::<OffsetReset>()?;
    cfg.session_timeout = a.session_timeout;
    cfg.read_committed = a.read_committed;
    cfg.client_id = "consumer".into();
    let stopper = util::signal_stopper();
    let count = Arc::new(AtomicU64::new(0));
    let max = a.max;
    let output = Arc::new(output);
    let (c, s) = (count.clone(), stopper.clone());
    let group = ConsumerGroup::spawn(log, &cfg, a.consumers as usize, move |i| {
        let (count, stopper, output) = (c.clone(), s.clone(), output.clone());
        move |r: RecordRef<'_>| -> Result<()> {
            print(&output.render(&r, Some(i)))?;
            let printed = count.fetch_add(1, Ordering::Relaxed) + 1;
            if max.is_some_and(|m| printed >= m) {
                stopper.stop();
            }
            Ok(())
        }
    })?;
    let group_stop = group.stopper();
    util::wait(&stopper, a.duration);
    group_stop.stop();
    let failed: u64 = group
        .members()
        .iter()
        .map(|m| m.stats().failed.load(Ordering::Relaxed))
        .sum();
    group.stop()?;
    eprintln!(
        "consumed {} records ({failed} failed)",
        count.load(Ordering::Relaxed)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use riffle::log::Header;

    #[test]
    fn starts_and_formats_parse() {
        assert_eq!(parse_start("beginning"), Ok(Start::Beginning));
        assert_eq!(parse_start("end"), Ok(Start::End));
        assert_eq!(parse_start("12"), Ok(Start::Offset(12)));
        assert_eq!(parse_start("-3"), Ok(Start::FromEnd(3)));
        assert_eq!(
            parse_start("s@1700000000000"),
            Ok(Start::Time(1_700_000_000_000))
        );
        assert!(parse_start("s@x").is_err() && parse_start("--1").is_err());
        let headers = [Header::new("h", Some(b"1")), Header::new("n", None)];
        let r = RecordRef {
            topic: "t",
            partition: 2,
            offset: 7,
            key: None,
            value: b"v\xff",
            timestamp: Some(5),
            headers: (&headers).into(),
        };
        let f = Output::Format(parse_format(r"%t/%p@%o %k=%s %T 100%%\t[%h].\n").unwrap());
        assert_eq!(f.render(&r, None), "t/2@7 =v\\xff 5 100%\t[h=1,n].\n");
        let json: serde_json::Value = serde_json::from_str(&Output::Json.render(&r, None)).unwrap();
        assert_eq!(json["headers"], serde_json::json!(["h", "1", "n", null]));
        assert!(parse_format("%x").is_err() && parse_format("a%").is_err());
    }
}
