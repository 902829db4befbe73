//! Reading topics back, the reference model computed from the input, and
//! its comparison with what the controllers wrote.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use riffle::log::{
    partition_for_key, ConsumerConfig, GroupEvent, Log, PollVisitor, Record, RecordRef,
};
use riffle_heater::controller::ControllerState;
use riffle_heater::messages::{decode_sensor, Command, SensorMessage};

use super::workers::Guarantee;

struct Collect {
    records: Vec<Record>,
    assigned: bool,
}

impl PollVisitor for Collect {
    fn record(&mut self, record: RecordRef<'_>) -> bool {
        self.records.push(record.to_owned());
        true
    }

    fn event(&mut self, event: GroupEvent) {
        if let GroupEvent::Assigned(_) = event {
            self.assigned = true;
        }
    }
}

/// Every record of `topic`, per partition in offset order. With
/// `read_committed`, records of aborted transactions are skipped; the read
/// ends when every partition is read to its end, or (since transaction
/// markers take offsets too) when nothing more arrives for a few seconds.
pub fn read_topic(log: &Arc<dyn Log>, topic: &str, read_committed: bool) -> Vec<Record> {
    let t = Duration::from_secs(30);
    let info = log.describe_topic(topic, t).expect("topic described");
    let high: BTreeMap<i32, i64> = info.partitions.iter().map(|p| (p.id, p.high)).collect();
    let mut cfg = ConsumerConfig::new(format!("{topic}-reader-{}", fastrand::u64(..)), &[topic]);
    cfg.read_committed = read_committed;
    let mut consumer = log.consumer(&cfg).expect("reader joins");
    let mut c = Collect {
        records: Vec::new(),
        assigned: false,
    };
    let mut next: BTreeMap<i32, i64> = high.keys().map(|p| (*p, 0)).collect();
    let start = Instant::now();
    let mut last_progress = Instant::now();
    loop {
        let before = c.records.len();
        consumer
            .poll(Duration::from_millis(200), 10_000, &mut c)
            .expect("reader polls");
        for r in &c.records[before..] {
            next.insert(r.partition, r.offset + 1);
        }
        if c.records.len() > before {
            last_progress = Instant::now();
        }
        if high.iter().all(|(p, h)| next[p] >= *h) {
            break;
        }
        if read_committed && c.assigned && last_progress.elapsed() > Duration::from_secs(5) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "reading {topic} back: stuck at {next:?}, ends {high:?}"
        );
    }
    consumer.close().expect("reader leaves");
    c.records.sort_by_key(|r| (r.partition, r.offset));
    c.records
}

/// Commands per heater, in the order they were (or should be) sent.
pub type Commands = BTreeMap<String, Vec<Command>>;

/// Watchdog alerts per heater, in order: (`"silent"` or `"reporting"`, the
/// event time it names).
pub type Alerts = BTreeMap<String, Vec<(String, i64)>>;

/// What a controller that processes every input record exactly once sends.
pub struct Reference {
    pub expected: Commands,
    /// With a watchdog: its alerts.
    pub alerts: Alerts,
    pub heaters: usize,
    pub undecodable: usize,
}

/// A heater in the model: the controller's state and, with a watchdog, when
/// its timer is due (event time).
#[derive(Default)]
struct Modelled {
    state: ControllerState,
    due: Option<i64>,
}

/// Applies the controller rule to the input topic, per partition in offset
/// order (the order of each heater's records), with the watchdog of
/// `silence` ms, if any, in event time. Timestamps never go back within a
/// partition here (see `feed.rs`), so a heater's watchdog fires just
/// before its first record at or after the due time (some record of the
/// partition moved the watermark there, and none before it could), or at
/// the end if the partition's last record reaches it; the idle timeout is
/// an hour, and moves nothing.
pub fn reference(input: &[Record], silence: Option<i64>) -> Reference {
    let mut heaters: BTreeMap<String, Modelled> = BTreeMap::new();
    let mut expected = Commands::new();
    let mut alerts = Alerts::new();
    let mut undecodable = 0;
    let mut last_time: BTreeMap<i32, i64> = BTreeMap::new();
    let mut partition_of: BTreeMap<String, i32> = BTreeMap::new();
    let fire =
        |h: &mut Modelled, due: i64, cmds: &mut Vec<Command>, alerts: &mut Vec<(String, i64)>| {
            h.due = None;
            h.state.last_command = Some(Command::Off);
            h.state.silent = true;
            cmds.push(Command::Off);
            alerts.push(("silent".into(), due));
        };
    for r in input {
        let ts = r.timestamp.expect("input records have timestamps");
        let last = last_time.entry(r.partition).or_insert(ts);
        assert!(
            ts >= *last,
            "timestamps go back in partition {}",
            r.partition
        );
        *last = ts;
        let (id, msg) = match decode_sensor(r.key.as_deref(), &r.value) {
            Ok(m) => m,
            Err(_) => {
                undecodable += 1;
                continue;
            }
        };
        partition_of.insert(id.clone(), r.partition);
        let h = heaters.entry(id.clone()).or_default();
        let cmds = expected.entry(id.clone()).or_default();
        let alerts = alerts.entry(id).or_default();
        if let Some(silence) = silence {
            if let Some(due) = h.due.filter(|due| ts >= *due) {
                fire(h, due, cmds, alerts);
            }
            if matches!(msg, SensorMessage::Measurement(_)) && h.state.setting.is_some() {
                h.due = Some(ts + silence);
                if std::mem::take(&mut h.state.silent) {
                    alerts.push(("reporting".into(), ts));
                }
            }
        }
        cmds.extend(h.state.apply(msg));
    }
    for (id, h) in &mut heaters {
        let end = last_time[&partition_of[id]];
        if let Some(due) = h.due.filter(|due| end >= *due) {
            fire(
                h,
                due,
                expected.get_mut(id).unwrap(),
                alerts.get_mut(id).unwrap(),
            );
        }
    }
    alerts.retain(|_, a| !a.is_empty());
    Reference {
        expected,
        alerts,
        heaters: heaters.len(),
        undecodable,
    }
}

/// The alerts the controllers sent, per heater; records that are not
/// alerts are returned apart.
pub fn actual_alerts(output: &[Record]) -> (Alerts, Vec<String>) {
    let mut alerts = Alerts::new();
    let mut bad = Vec::new();
    for r in output {
        let v: serde_json::Value = serde_json::from_slice(&r.value).unwrap_or_default();
        match (r.key.as_deref(), v["alert"].as_str(), v["at_ms"].as_i64()) {
            (Some(k), Some(a), Some(at)) => alerts
                .entry(String::from_utf8_lossy(k).into_owned())
                .or_default()
                .push((a.to_owned(), at)),
            _ => bad.push(String::from_utf8_lossy(&r.value).into_owned()),
        }
    }
    (alerts, bad)
}

/// The commands the controllers sent, per heater; records that are not
/// commands are returned apart.
pub fn actual(output: &[Record]) -> (Commands, Vec<String>) {
    let mut actual = Commands::new();
    let mut bad = Vec::new();
    for r in output {
        let key = r.key.as_deref().map(String::from_utf8_lossy);
        match (key, Command::from_json(&r.value)) {
            (Some(k), Ok(c)) => actual.entry(k.into_owned()).or_default().push(c),
            (k, e) => bad.push(format!(
                "{}/{}@{}: key {k:?}, {e:?}",
                r.topic, r.partition, r.offset
            )),
        }
    }
    (actual, bad)
}

/// One heater whose commands break the guarantee.
pub struct Mismatch {
    pub heater: String,
    pub partition: i32,
    pub why: String,
    pub expected: Vec<Command>,
    pub actual: Vec<Command>,
}

/// How the actual commands compare with the expected ones.
pub struct Comparison {
    pub expected: usize,
    pub actual: usize,
    /// Commands beyond the expected ones, over the heaters.
    pub duplicates: usize,
    /// Heaters whose last command is not the expected one.
    pub wrong_final: usize,
    pub mismatches: Vec<Mismatch>,
}

/// Whether `sub` is `seq` with some elements left out.
fn is_subsequence(sub: &[Command], seq: &[Command]) -> (bool, usize) {
    let mut it = seq.iter();
    let matched = sub.iter().take_while(|c| it.any(|x| x == *c)).count();
    (matched == sub.len(), matched)
}

/// Exactly-once: every heater's commands are exactly the expected ones.
/// At-least-once: the expected ones appear in order within them (repeats
/// allowed, nothing lost). Either way the last command must be the
/// expected last command: the heater ends in the right state.
pub fn compare(
    guarantee: Guarantee,
    expected: &Commands,
    actual: &Commands,
    partitions: i32,
) -> Comparison {
    let none = Vec::new();
    let heaters: BTreeSet<&String> = expected.keys().chain(actual.keys()).collect();
    let mut cmp = Comparison {
        expected: expected.values().map(Vec::len).sum(),
        actual: actual.values().map(Vec::len).sum(),
        duplicates: 0,
        wrong_final: 0,
        mismatches: Vec::new(),
    };
    for h in heaters {
        let e = expected.get(h).unwrap_or(&none);
        let a = actual.get(h).unwrap_or(&none);
        cmp.duplicates += a.len().saturating_sub(e.len());
        let final_ok = e.last() == a.last();
        if !final_ok {
            cmp.wrong_final += 1;
        }
        let why = match guarantee {
            Guarantee::ExactlyOnce if e != a => {
                let at = e.iter().zip(a).take_while(|(x, y)| x == y).count();
                Some(format!(
                    "differs from command #{at} on ({} expected, {} sent)",
                    e.len(),
                    a.len()
                ))
            }
            Guarantee::AtLeastOnce => match is_subsequence(e, a) {
                (false, matched) => Some(format!(
                    "commands lost: only {matched} of the {} expected found in order among the {} sent",
                    e.len(),
                    a.len()
                )),
                _ if !final_ok => Some(format!(
                    "ends {:?}, expected {:?}",
                    a.last(),
                    e.last()
                )),
                _ => None,
            },
            _ => None,
        };
        if let Some(why) = why {
            cmp.mismatches.push(Mismatch {
                heater: h.clone(),
                partition: partition_for_key(h.as_bytes(), partitions),
                why,
                expected: e.clone(),
                actual: a.clone(),
            });
        }
    }
    cmp
}

/// `+` for ON, `-` for OFF.
fn show(cmds: &[Command]) -> String {
    const MAX: usize = 60;
    let s: String = cmds
        .iter()
        .take(MAX)
        .map(|c| if *c == Command::On { '+' } else { '-' })
        .collect();
    if cmds.len() > MAX {
        format!("{s}... ({})", cmds.len())
    } else {
        s
    }
}

impl Comparison {
    /// The heaters that break the guarantee, for a failure message.
    pub fn report(&self, limit: usize) -> String {
        let mut by_partition: BTreeMap<i32, usize> = BTreeMap::new();
        for m in &self.mismatches {
            *by_partition.entry(m.partition).or_default() += 1;
        }
        let mut s = format!(
            "{} heaters wrong (per partition: {by_partition:?}); commands as + for ON, - for OFF\n",
            self.mismatches.len()
        );
        for m in self.mismatches.iter().take(limit) {
            let _ = writeln!(
                s,
                "  {} (partition {}): {}\n    expected {}\n    actual   {}",
                m.heater,
                m.partition,
                m.why,
                show(&m.expected),
                show(&m.actual)
            );
        }
        if self.mismatches.len() > limit {
            let _ = writeln!(s, "  ... and {} more", self.mismatches.len() - limit);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Command::{Off, On};

    fn commands(seq: &[Command]) -> Commands {
        [("h".to_string(), seq.to_vec())].into()
    }

    #[test]
    fn exactly_once_wants_the_same_commands() {
        let expected = commands(&[On, Off, On]);
        for (actual, ok) in [
            (&[On, Off, On][..], true),
            (&[On, Off, On, On], false),
            (&[On, Off, Off, On], false),
            (&[On, On], false),
            (&[], false),
        ] {
            let cmp = compare(Guarantee::ExactlyOnce, &expected, &commands(actual), 10);
            assert_eq!(cmp.mismatches.is_empty(), ok, "{actual:?}");
        }
    }

    #[test]
    fn at_least_once_allows_repeats_not_losses() {
        let expected = commands(&[On, Off, On]);
        for (actual, ok, duplicates) in [
            (&[On, Off, On][..], true, 0),
            (&[On, Off, On, Off, On], true, 2),
            (&[On, On, Off, Off, On], true, 2),
            (&[On, Off, On, Off], false, 1),
            (&[On, On], false, 0),
            (&[Off, On], false, 0),
        ] {
            let cmp = compare(Guarantee::AtLeastOnce, &expected, &commands(actual), 10);
            assert_eq!(cmp.mismatches.is_empty(), ok, "{actual:?}");
            assert_eq!(cmp.duplicates, duplicates, "{actual:?}");
        }
        let cmp = compare(
            Guarantee::AtLeastOnce,
            &expected,
            &commands(&[On, Off, On, Off]),
            10,
        );
        assert_eq!(cmp.wrong_final, 1);
        assert!(cmp.report(5).contains("ends Some(Off), expected Some(On)"));
    }
}
