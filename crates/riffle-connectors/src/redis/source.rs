//! Reading a stream as a member of a consumer group.

use std::time::{Duration, Instant};

use riffle::connect::{Delivery, Record, Sampled, Source};
use riffle::{Error, Result};

use ::redis::streams::StreamInfoGroupsReply;
use ::redis::Value;

use super::conn::in_context;
use super::{Conn, Target};
use crate::net::Backoff;

/// Where a new group starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Everything already in the stream (`0`).
    Beginning,
    /// Only entries added after the group is created (`$`).
    New,
}

impl std::str::FromStr for Start {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "0" => Ok(Start::Beginning),
            "$" => Ok(Start::New),
            _ => Err("expected 0 (the whole stream) or $ (new entries only)".into()),
        }
    }
}

/// A consumer in a group on one stream. Entries it reads stay in the
/// group's pending list until [`Source::ack`] sends `XACK` for them; after
/// a reconnect (or a restart with the same consumer name) it reads its own
/// pending entries again before any new ones.
pub struct RedisSource {
    target: Target,
    stream: String,
    group: String,
    consumer: String,
    start: Start,
    conn: Option<Conn>,
    /// While re-reading this consumer's pending entries: the id after
    /// which to continue. `None` once they are all read and new entries
    /// (`>`) are next.
    pending_after: Option<String>,
    /// Ids handed out (or skipped) and not yet acknowledged.
    unacked: Vec<String>,
    backoff: Backoff,
    lag: Sampled,
}

impl RedisSource {
    /// Connects, creating the group (and the stream) if needed. An
    /// unreachable server is an error here, within seconds.
    pub fn open(
        target: Target,
        stream: String,
        group: String,
        consumer: String,
        start: Start,
    ) -> Result<Self> {
        let mut s = Self {
            target,
            stream,
            group,
            consumer,
            start,
            conn: None,
            pending_after: None,
            unacked: Vec::new(),
            backoff: Backoff::default(),
            lag: Sampled::default(),
        };
        s.connect()?;
        Ok(s)
    }

    fn connect(&mut self) -> Result<()> {
        let mut conn = self.target.connect()?;
        let from = match self.start {
            Start::Beginning => "0",
            Start::New => "$",
        };
        let created: ::redis::RedisResult<Value> = ::redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(from)
            .arg("MKSTREAM")
            .query(&mut conn);
        match created.map_err(|e| self.target.error(e)) {
            Ok(_) => {}
            Err(e) if refused_for(&e, "BUSYGROUP") => {}
            Err(e) => {
                return Err(in_context(e, |m| {
                    format!(
                        "redis {}: cannot create group '{}' on stream '{}': {m}",
                        self.target.address(),
                        self.group,
                        self.stream
                    )
                }))
            }
        }
        self.conn = Some(conn);
        self.pending_after = Some("0".into());
        Ok(())
    }

    /// Connects again after a lost connection, waiting with backoff, for
    /// at most `deadline`; `false` if still not connected.
    fn reconnect(&mut self, deadline: Instant) -> bool {
        while self.conn.is_none() {
            match self.connect() {
                Ok(()) => {
                    tracing::info!("reconnected to redis {}", self.target.address());
                    self.backoff.reset();
                }
                Err(e) => {
                    let delay = self.backoff.next_delay();
                    tracing::warn!(
                        "redis {}: {e}; trying again in {delay:?}",
                        self.target.address()
                    );
                    if Instant::now() + delay > deadline {
                        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
                        return false;
                    }
                    std::thread::sleep(delay);
                }
            }
        }
        true
    }

    fn lost(&mut self, e: Error) {
        tracing::warn!(
            "redis {}: {e}; reconnecting (unacknowledged entries come again)",
            self.target.address()
        );
        self.conn = None;
    }

    /// One XREADGROUP: this consumer's pending entries after an id, or new
    /// entries waiting up to `block`.
    fn read(&mut self, out: &mut Vec<Record>, max: usize, block: Duration) -> Result<usize> {
        let conn = self.conn.as_mut().expect("connected");
        let id = self.pending_after.clone();
        let mut cmd = ::redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(max.max(1));
        match &id {
            Some(after) => cmd.arg("STREAMS").arg(&self.stream).arg(after),
            None => cmd
                .arg("BLOCK")
                .arg(block.as_millis().max(1) as u64)
                .arg("STREAMS")
                .arg(&self.stream)
                .arg(">"),
        };
        let reply: Value = conn
            .set_read_timeout(Some(block + Duration::from_secs(10)))
            .and_then(|()| cmd.query(conn))
            .map_err(|e| self.target.error(e))?;
        let entries = parse_entries(reply)?;
        if id.is_some() {
            match entries.last() {
                // Every pending entry is read: new ones are next.
                None => self.pending_after = None,
                Some((last, _)) => self.pending_after = Some(last.clone()),
            }
        }
        let mut n = 0;
        for (id, fields) in entries {
            // An entry trimmed from the stream while pending has no fields
            // any more: nothing to deliver, but it is acknowledged so that
            // it leaves the pending list.
            if let Some(fields) = fields {
                out.push(record_of(&self.stream, fields));
                n += 1;
            }
            self.unacked.push(id);
        }
        Ok(n)
    }
}

/// A group's entries not yet acknowledged: those not delivered yet (`lag`,
/// which Redis 7 can tell unless entries were deleted in between) and
/// those delivered and pending.
fn group_lag(conn: &mut Conn, stream: &str, group: &str) -> Option<u64> {
    let reply: StreamInfoGroupsReply = ::redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query(conn)
        .map_err(|e| tracing::debug!("redis XINFO GROUPS {stream}: {e}"))
        .ok()?;
    let g = reply.groups.into_iter().find(|g| g.name == group)?;
    Some((g.lag? + g.pending) as u64)
}

/// The entries of an XREADGROUP reply on one stream: each id with its
/// field and value pairs (`None` for an entry deleted while pending).
type Entry = (String, Option<Vec<(Vec<u8>, Vec<u8>)>>);

/// Whether `e` is the server's error reply starting with `code`.
fn refused_for(e: &Error, code: &str) -> bool {
    matches!(e, Error::Refused { message, .. } if message.starts_with(code))
}

/// The entries of an XREADGROUP reply (RESP2: `[[stream, [[id, [field,
/// value, ...]], ...]]]`, nil when nothing came), fields in their order,
/// which the client's typed stream replies (hash maps) would lose.
fn parse_entries(reply: Value) -> Result<Vec<Entry>> {
    let bad = || Error::Protocol {
        server: "redis".into(),
        message:
            "redis: an XREADGROUP reply not shaped [[stream, [[id, [field, value, ...]], ...]]]"
                .into(),
    };
    // Taken apart by value: the field values move into the records.
    fn items(v: Value) -> Option<Vec<Value>> {
        match v {
            Value::Array(items) => Some(items),
            Value::Nil => Some(Vec::new()),
            _ => None,
        }
    }
    fn bytes(v: Value) -> Option<Vec<u8>> {
        match v {
            Value::BulkString(b) => Some(b),
            Value::SimpleString(s) => Some(s.into_bytes()),
            _ => None,
        }
    }
    fn pair(v: Value) -> Option<(Value, Value)> {
        let mut items = items(v)?.into_iter();
        match (items.next(), items.next(), items.next()) {
            (Some(a), Some(b), None) => Some((a, b)),
            _ => None,
        }
    }
    let mut entries = Vec::new();
    for stream in items(reply).ok_or_else(bad)? {
        let (_name, list) = pair(stream).ok_or_else(bad)?;
        for entry in items(list).ok_or_else(bad)? {
            let (id, fields) = pair(entry).ok_or_else(bad)?;
            let id = String::from_utf8_lossy(&bytes(id).ok_or_else(bad)?).into_owned();
            let fields = match fields {
                Value::Nil => None,
                f => {
                    let f = items(f).ok_or_else(bad)?;
                    if f.len() % 2 != 0 {
                        return Err(bad());
                    }
                    let mut f = f.into_iter();
                    let mut out = Vec::with_capacity(f.len() / 2);
                    while let (Some(k), Some(v)) = (f.next(), f.next()) {
                        out.push((bytes(k).ok_or_else(bad)?, bytes(v).ok_or_else(bad)?));
                    }
                    Some(out)
                }
            };
            entries.push((id, fields));
        }
    }
    Ok(entries)
}

/// A stream entry as a record: the field `value` is the value, `key` the
/// key, any other field a header.
fn record_of(stream: &str, fields: Vec<(Vec<u8>, Vec<u8>)>) -> Record {
    let mut r = Record::new(stream, None, Vec::new());
    for (name, v) in fields {
        match &name[..] {
            b"value" => r.value = v,
            b"key" => r.key = Some(v),
            _ => r
                .headers
                .push((String::from_utf8_lossy(&name).into_owned(), v)),
        }
    }
    r
}

impl Source for RedisSource {
    fn describe(&self) -> String {
        format!(
            "redis {} stream {} group {} consumer {}",
            self.target.address(),
            self.stream,
            self.group,
            self.consumer
        )
    }

    fn delivery(&self) -> Delivery {
        Delivery::AtLeastOnce
    }

    fn poll(&mut self, out: &mut Vec<Record>, max: usize, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.conn.is_none() && !self.reconnect(deadline) {
                return Ok(0);
            }
            let rereading = self.pending_after.is_some();
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read(out, max, left) {
                Ok(n) if n > 0 => return Ok(n),
                // Pending entries left (or all read: new ones are next).
                Ok(_) if rereading => {}
                Ok(_) if Instant::now() >= deadline => return Ok(0),
                Ok(_) => {}
                // The connection is lost, or the group was deleted under
                // us: connect again, which re-creates the group.
                Err(e @ Error::Connect { .. }) => self.lost(e),
                Err(e) if refused_for(&e, "NOGROUP") => self.lost(e),
                Err(e) => {
                    return Err(in_context(e, |m| {
                        format!(
                            "redis {} stream '{}': {m}",
                            self.target.address(),
                            self.stream
                        )
                    }))
                }
            }
        }
    }

    fn lag(&mut self) -> Option<u64> {
        let Self {
            conn,
            stream,
            group,
            lag,
            ..
        } = self;
        lag.get(|| group_lag(conn.as_mut()?, stream, group))
    }

    fn ack(&mut self) -> Result<()> {
        if self.unacked.is_empty() {
            return Ok(());
        }
        let ids = std::mem::take(&mut self.unacked);
        let Some(conn) = self.conn.as_mut() else {
            // Lost since the poll: the entries come again from the pending
            // list after the reconnect.
            return Err(Error::Connect {
                server: format!("Redis server at {}", self.target.address()),
                detail: "not connected".into(),
            });
        };
        let acked: ::redis::RedisResult<Value> = ::redis::cmd("XACK")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(&ids)
            .query(conn);
        if let Err(e) = acked {
            let e = self.target.error(e);
            self.conn = None;
            return Err(e);
        }
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        self.conn = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_become_records() {
        let b = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![Value::Array(vec![
            b("s"),
            Value::Array(vec![
                Value::Array(vec![
                    b("1-1"),
                    Value::Array(vec![b("key"), b("k"), b("value"), b("v"), b("h"), b("x")]),
                ]),
                Value::Array(vec![b("1-2"), Value::Nil]),
            ]),
        ])]);
        let entries = parse_entries(reply).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1], ("1-2".to_owned(), None));
        let (id, fields) = entries.into_iter().next().unwrap();
        assert_eq!(id, "1-1");
        let r = record_of("s", fields.unwrap());
        let mut want = Record::new("s", Some(b"k"), "v");
        want.headers.push(("h".into(), b"x".to_vec()));
        assert_eq!(r, want);
        assert!(parse_entries(Value::Int(1)).is_err());
        assert!(parse_entries(Value::Nil).unwrap().is_empty());
    }
}
