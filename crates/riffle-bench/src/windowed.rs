//! The windowed-aggregation workload: heater measurements that carry their
//! event time, aggregated per heater over tumbling windows of a minute
//! (count, sum, minimum, maximum, mean), one result per window once it has
//! closed; and the reference that says which results the input must give,
//! which record of the input closes each window, and what each holds.
//!
//! The input: one measurement per record, keyed by heater id, round-robin
//! over the heaters, `{"measurement": 42.318702264911, "unit": "C", "id":
//! "heater-00017", "ts": 1718000012345}` (about 100 bytes of key and value,
//! as the heater workload's). `ts` is the event time in milliseconds: the
//! log API cannot set a record's timestamp, so both systems read it from
//! the value. Record `i` is nominally at `epoch + i` ms, so each heater
//! reports once per simulated second (with the default 1,000 heaters) and
//! a minute of event time passes every 60,000 records; each record's `ts`
//! is its nominal time less a random delay of up to [`JITTER_MS`], so the
//! input is out of order by at most that much.
//!
//! The epoch is [`epoch_for`] the input's length: an hour more than the
//! input spans before the moment it is filled, so that every event time is
//! recent and in the past. Kafka Streams stamps its results with their
//! event time, and the broker applies its time-based retention (7 days)
//! to record timestamps and refuses timestamps more than an hour ahead:
//! results stamped with a date long past would be deleted from the output
//! topic within minutes, before the driver could read them back.
//!
//! When a window closes. Both systems track, per input partition, the
//! latest event time seen. Riffle's watermark trails it by the
//! out-of-orderness ([`OUT_OF_ORDERNESS_MS`]) and a window's result goes
//! out once the watermark passes its end plus the grace ([`GRACE_MS`]);
//! Kafka Streams has no out-of-orderness, only a grace, and emits (with
//! `suppress(untilWindowCloses)`) once its stream time passes the window's
//! end plus that grace, so it is given [`KS_GRACE_MS`], the sum of the two.
//! Either way a window `[start, end)` of a heater closes at the first
//! record of its partition whose event time reaches `end + CLOSE_AFTER_MS`.
//! As the delay is below the out-of-orderness, no record is ever late, and
//! the windows that close are exactly those the input passes: the last one
//! of each heater stays open (neither system is asked to close windows on
//! wall-clock time).

use std::collections::HashMap;

use riffle::log::partition_for_key;
use riffle::process::window::{Aggregator, Stats, StatsAcc};

use crate::data::heater_id;

/// Window size.
pub const WINDOW_MS: i64 = 60_000;
/// How far Riffle's watermark trails the latest event time seen.
pub const OUT_OF_ORDERNESS_MS: i64 = 2_000;
/// Riffle's grace after a window's end.
pub const GRACE_MS: i64 = 3_000;
/// Kafka Streams' grace: the same closing time without an out-of-orderness.
pub const KS_GRACE_MS: i64 = OUT_OF_ORDERNESS_MS + GRACE_MS;
/// A window closes when its partition's latest event time reaches its end
/// plus this.
pub const CLOSE_AFTER_MS: i64 = OUT_OF_ORDERNESS_MS + GRACE_MS;
/// The most a record's event time lags its nominal time: below the
/// out-of-orderness, so that no record arrives late.
pub const JITTER_MS: i64 = 1_500;
/// The nominal event time of the first of `records` records filled now:
/// they end an hour before now (module docs).
pub fn epoch_for(records: u64) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    now - records as i64 - 3_600_000
}

/// One input record.
pub struct Record {
    pub heater: u32,
    pub key: String,
    pub value: Vec<u8>,
    /// Event time, ms.
    pub ts: i64,
    /// The measurement as the systems decode it (from the printed number).
    pub measurement: f64,
}

/// The input's record stream: the same seed and epoch give the same
/// records.
pub struct Generator {
    rng: fastrand::Rng,
    epoch: i64,
    keys: Vec<String>,
    temps: Vec<f64>,
    seq: u64,
}

impl Generator {
    /// Records from nominal event time `epoch` (ms) on.
    pub fn new(heaters: usize, seed: u64, epoch: i64) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed),
            epoch,
            keys: (0..heaters).map(heater_id).collect(),
            temps: (0..heaters).map(|i| 42.0 + (i % 13) as f64 * 0.5).collect(),
            seq: 0,
        }
    }

    pub fn next_record(&mut self) -> Record {
        let heater = (self.seq % self.keys.len() as u64) as usize;
        let ts = self.epoch + self.seq as i64 - self.rng.i64(0..=JITTER_MS);
        let t = &mut self.temps[heater];
        *t += (self.rng.f64() - 0.5) * 1.2;
        let number = format!("{:.12}", *t);
        let measurement: f64 = number.parse().expect("a printed number parses");
        let key = self.keys[heater].clone();
        let value =
            format!(r#"{{"measurement": {number}, "unit": "C", "id": "{key}", "ts": {ts}}}"#);
        self.seq += 1;
        Record {
            heater: heater as u32,
            key,
            value: value.into_bytes(),
            ts,
            measurement,
        }
    }
}

/// One window's result, as the reference computes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expected {
    pub heater: u32,
    pub start: i64,
    pub end: i64,
    pub stats: StatsAcc,
    /// The index (in input order) of the record whose event time closed
    /// the window: the result cannot exist before it was processed.
    pub cause: u64,
}

/// The reference: feeds on the input in order and closes windows as each
/// partition's latest event time passes them, as both systems must.
pub struct Reference {
    partitions: i32,
    /// Per partition: the latest event time seen, and the open windows of
    /// its heaters by (end, heater).
    latest: Vec<Option<i64>>,
    open: Vec<std::collections::BTreeMap<(i64, u32), StatsAcc>>,
    seq: u64,
    pub closed: Vec<Expected>,
}

impl Reference {
    pub fn new(partitions: i32) -> Self {
        Self {
            partitions,
            latest: vec![None; partitions as usize],
            open: vec![Default::default(); partitions as usize],
            seq: 0,
            closed: Vec::new(),
        }
    }

    /// Takes the next input record; returns its partition.
    pub fn add(&mut self, r: &Record) -> usize {
        let p = partition_for_key(r.key.as_bytes(), self.partitions) as usize;
        let latest = self.latest[p].map_or(r.ts, |l| l.max(r.ts));
        self.latest[p] = Some(latest);
        let open = &mut self.open[p];
        while let Some((&(end, heater), _)) = open.first_key_value() {
            if end + CLOSE_AFTER_MS > latest {
                break;
            }
            let stats = open.pop_first().expect("a first entry").1;
            self.closed.push(Expected {
                heater,
                start: end - WINDOW_MS,
                end,
                stats,
                cause: self.seq,
            });
        }
        let end = r.ts.div_euclid(WINDOW_MS) * WINDOW_MS + WINDOW_MS;
        // No record is late: its window is still open (module docs).
        assert!(end + CLOSE_AFTER_MS > latest, "a late record at {}", r.ts);
        Stats.add(open.entry((end, r.heater)).or_default(), &r.measurement);
        self.seq += 1;
        p
    }
}

/// A result as read back from a system's output topic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Got {
    pub start: i64,
    pub end: i64,
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
}

impl Got {
    /// Reads a result; `key` is the record's key, which must match the
    /// body's and name a heater. Returns the heater's number too.
    pub fn parse(key: Option<&[u8]>, value: &[u8]) -> Result<(u32, Got), String> {
        let v: serde_json::Value =
            serde_json::from_slice(value).map_err(|e| format!("a result is no JSON: {e}"))?;
        let key = key
            .and_then(|k| std::str::from_utf8(k).ok())
            .ok_or("a result without a UTF-8 key")?;
        if v["key"] != key {
            return Err(format!("result keyed {key} says key {}", v["key"]));
        }
        if v["final"] != true {
            return Err(format!("{key}: a result not marked final: {v}"));
        }
        let heater = key
            .strip_prefix("heater-")
            .and_then(|k| k.parse::<u32>().ok())
            .ok_or_else(|| format!("result key {key} names no heater"))?;
        let int = |f: &str| {
            v[f].as_i64()
                .ok_or_else(|| format!("{key}: no integer {f}: {v}"))
        };
        let num = |f: &str| {
            v[f].as_f64()
                .ok_or_else(|| format!("{key}: no number {f}: {v}"))
        };
        Ok((
            heater,
            Got {
                start: int("start")?,
                end: int("end")?,
                count: int("count")? as u64,
                sum: num("sum")?,
                min: num("min")?,
                max: num("max")?,
                mean: num("mean")?,
            },
        ))
    }

    /// Whether this is the expected result: the same window and count,
    /// and the same sum, minimum, maximum and mean to within a relative
    /// 1e-9 (both systems add the same doubles in the same order, but a
    /// result may be printed with fewer digits).
    pub fn matches(&self, e: &Expected) -> bool {
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0);
        let s = &e.stats;
        self.start == e.start
            && self.end == e.end
            && self.count == s.count
            && close(self.sum, s.sum)
            && close(self.min, s.min)
            && close(self.max, s.max)
            && close(self.mean, s.sum / s.count as f64)
    }
}

/// How a system's results compare with the reference's.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Check {
    /// Results equal to the expected one of their heater and window.
    pub right: u64,
    /// Results for an expected window with other figures.
    pub wrong: u64,
    /// Results for a window not expected (or not closed by the input).
    pub unexpected: u64,
    /// A second result for a window (at-least-once may replay).
    pub duplicates: u64,
    /// Expected windows without a result.
    pub missing: u64,
    /// The first problem found, to show.
    pub first_problem: Option<String>,
}

/// Compares every result read back with the reference's.
pub fn check(
    expected: &[Expected],
    got: impl IntoIterator<Item = Result<(u32, Got), String>>,
) -> Check {
    let by_window: HashMap<(u32, i64), &Expected> =
        expected.iter().map(|e| ((e.heater, e.start), e)).collect();
    let mut seen: HashMap<(u32, i64), u32> = HashMap::with_capacity(expected.len());
    let mut c = Check::default();
    let problem = |c: &mut Check, text: String| {
        c.first_problem.get_or_insert(text);
    };
    for g in got {
        let (heater, g) = match g {
            Ok(x) => x,
            Err(e) => {
                c.unexpected += 1;
                problem(&mut c, e);
                continue;
            }
        };
        let n = seen.entry((heater, g.start)).or_insert(0);
        *n += 1;
        if *n > 1 {
            c.duplicates += 1;
            continue;
        }
        match by_window.get(&(heater, g.start)) {
            Some(e) if g.matches(e) => c.right += 1,
            Some(e) => {
                c.wrong += 1;
                problem(
                    &mut c,
                    format!("{}: got {g:?}, expected {e:?}", heater_id(heater as usize)),
                );
            }
            None => {
                c.unexpected += 1;
                problem(
                    &mut c,
                    format!("{}: unexpected {g:?}", heater_id(heater as usize)),
                );
            }
        }
    }
    c.missing = expected.len() as u64 - (c.right + c.wrong);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_their_event_time_within_the_jitter() {
        const EPOCH_MS: i64 = 1_718_000_000_000;
        let mut g = Generator::new(100, 3, EPOCH_MS);
        for i in 0..10_000i64 {
            let r = g.next_record();
            let v: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
            assert_eq!(v["ts"].as_i64(), Some(r.ts));
            assert_eq!(v["measurement"].as_f64(), Some(r.measurement));
            assert_eq!(r.key, heater_id((i % 100) as usize));
            let lag = EPOCH_MS + i - r.ts;
            assert!((0..=JITTER_MS).contains(&lag), "{lag}");
            assert!((80..=120).contains(&(r.key.len() + r.value.len())));
        }
    }

    /// The reference against a brute-force computation over the whole
    /// input: every window a heater has a record in, closed iff its
    /// partition's input reaches `end + CLOSE_AFTER_MS`.
    #[test]
    fn the_reference_closes_what_the_input_passes() {
        // 300,000 records are 300 s of event time, from 20 s into a
        // window: five windows per heater close, the sixth stays open.
        let (heaters, partitions, n) = (40, 4, 300_000);
        let mut g = Generator::new(heaters, 9, 1_718_000_000_000);
        let mut reference = Reference::new(partitions);
        let records: Vec<Record> = (0..n).map(|_| g.next_record()).collect();
        for r in &records {
            reference.add(r);
        }
        let mut latest = vec![i64::MIN; partitions as usize];
        // Per record, the latest event time of its partition before it.
        let mut before = Vec::with_capacity(records.len());
        let mut all: HashMap<(u32, i64), (StatsAcc, usize)> = HashMap::new();
        for r in &records {
            let p = partition_for_key(r.key.as_bytes(), partitions) as usize;
            before.push(latest[p]);
            latest[p] = latest[p].max(r.ts);
            let start = r.ts.div_euclid(WINDOW_MS) * WINDOW_MS;
            let w = all.entry((r.heater, start)).or_default();
            Stats.add(&mut w.0, &r.measurement);
            w.1 = p;
        }
        let closed: HashMap<(u32, i64), StatsAcc> = all
            .into_iter()
            .filter(|((_, start), (_, p))| start + WINDOW_MS + CLOSE_AFTER_MS <= latest[*p])
            .map(|(k, (s, _))| (k, s))
            .collect();
        assert_eq!(reference.closed.len(), closed.len());
        assert_eq!(closed.len(), heaters * 5);
        for e in &reference.closed {
            assert_eq!(closed[&(e.heater, e.start)], e.stats);
            assert_eq!(e.end - e.start, WINDOW_MS);
            // The cause is the first record of the partition at or past
            // the closing time.
            let at = e.end + CLOSE_AFTER_MS;
            assert!(records[e.cause as usize].ts >= at);
            assert!(before[e.cause as usize] < at);
        }
    }

    #[test]
    fn the_check_finds_each_kind_of_difference() {
        let stats = StatsAcc {
            count: 2,
            sum: 3.0,
            min: 1.0,
            max: 2.0,
        };
        let e = |heater, start| Expected {
            heater,
            start,
            end: start + WINDOW_MS,
            stats,
            cause: 0,
        };
        let expected = [e(1, 0), e(1, 60_000), e(2, 0), e(3, 0)];
        let body = |key: &str, start: i64, count: u64, mean: f64| {
            format!(
                r#"{{"key":"{key}","start":{start},"end":{},"final":true,"count":{count},"sum":3.0,"min":1.0,"max":2.0,"mean":{mean}}}"#,
                start + WINDOW_MS
            )
        };
        let got = [
            ("heater-00001", body("heater-00001", 0, 2, 1.5)),
            ("heater-00001", body("heater-00001", 0, 2, 1.5)),
            (
                "heater-00001",
                body("heater-00001", 60_000, 2, 1.5000000000001),
            ),
            ("heater-00002", body("heater-00002", 0, 3, 1.5)),
            ("heater-00004", body("heater-00004", 0, 2, 1.5)),
            ("heater-00003", body("heater-00002", 0, 2, 1.5)),
        ];
        let c = check(
            &expected,
            got.iter()
                .map(|(k, v)| Got::parse(Some(k.as_bytes()), v.as_bytes())),
        );
        assert_eq!(
            (c.right, c.wrong, c.unexpected, c.duplicates, c.missing),
            (2, 1, 2, 1, 1),
            "{c:?}"
        );
        assert!(c.first_problem.unwrap().contains("heater-00002"));
    }
}
