//! Process-wide metrics in the Prometheus text format.
//!
//! Every layer counts what it does here, on the hot path only through
//! atomics it holds a handle on: [`Counter`]s and [`Histogram`]s are
//! registered once (per label set) and cheap to bump afterwards. Values
//! that already live elsewhere (a consumer's assignment, an actor's mailbox
//! depth, a group's lag) are read when the metrics are scraped, through
//! collectors that hold a weak reference to their source and disappear with
//! it, so a consumer removed by autoscaling leaves no stale series.
//!
//! [`global`] is the registry every Riffle component reports to; an HTTP
//! endpoint serves [`Registry::render`] as `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// Label names and values of one series, in the order given.
pub type Labels = Vec<(&'static str, String)>;

/// A monotonic count.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds, in seconds, of the latency buckets: from a millisecond to
/// a minute, which covers a record processed at once and one that waited
/// behind a backlog.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0,
];

/// [`LATENCY_BUCKETS`] in microseconds.
const BUCKETS_MICROS: [u64; LATENCY_BUCKETS.len()] = {
    let mut us = [0; LATENCY_BUCKETS.len()];
    let mut i = 0;
    while i < us.len() {
        us[i] = (LATENCY_BUCKETS[i] * 1e6) as u64;
        i += 1;
    }
    us
};

/// A distribution of durations over [`LATENCY_BUCKETS`].
#[derive(Debug, Default)]
pub struct HistogramData {
    /// Per bucket, observations at most its bound (not cumulative); the
    /// last counts those above every bound.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

/// A handle on a registered histogram.
#[derive(Clone, Debug, Default)]
pub struct Histogram(Arc<HistogramData>);

impl Histogram {
    /// Records one duration, in milliseconds (what record timestamps give).
    pub fn observe_millis(&self, ms: i64) {
        let mut local = LocalHistogram::default();
        local.observe_millis(ms);
        self.add(&mut local);
    }

    /// Adds what `local` observed and empties it: one atomic add per
    /// bucket used, however many observations.
    pub fn add(&self, local: &mut LocalHistogram) {
        for (shared, n) in self.0.buckets.iter().zip(&mut local.buckets) {
            if *n > 0 {
                shared.fetch_add(std::mem::take(n), Ordering::Relaxed);
            }
        }
        let sum = std::mem::take(&mut local.sum_millis);
        self.0.sum_micros.fetch_add(sum * 1000, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.0
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .sum()
    }

    /// The smallest bucket bound, in seconds, at or below which at least
    /// `q` (0..1) of the observations fall; infinity when above them all,
    /// `None` without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let counts: Vec<u64> = self
            .0
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let want = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return Some(LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY));
            }
        }
        Some(f64::INFINITY)
    }
}

/// Observations gathered by one thread and added to a [`Histogram`] now
/// and then ([`Histogram::add`]): threads sharing a histogram then do not
/// contend for its atomics on every record.
#[derive(Debug, Default)]
pub struct LocalHistogram {
    buckets: [u64; LATENCY_BUCKETS.len() + 1],
    sum_millis: u64,
}

impl LocalHistogram {
    /// Records one duration, in milliseconds.
    pub fn observe_millis(&mut self, ms: i64) {
        let ms = ms.max(0) as u64;
        // Whole numbers compared, as this runs for every record consumed.
        let us = ms.saturating_mul(1000);
        let i = BUCKETS_MICROS
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(BUCKETS_MICROS.len());
        self.buckets[i] += 1;
        self.sum_millis += ms;
    }
}

/// Samples being gathered for one scrape, grouped by metric family.
#[derive(Default)]
pub struct Samples {
    families: BTreeMap<&'static str, Family>,
}

struct Family {
    help: &'static str,
    kind: &'static str,
    /// Gauge and counter values by rendered labels: sources reporting the
    /// same series (the producers of one process writing to one topic, say)
    /// are summed.
    values: BTreeMap<String, f64>,
    lines: Vec<String>,
}

impl Samples {
    fn family(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: &'static str,
    ) -> &mut Family {
        self.families.entry(name).or_insert_with(|| Family {
            help,
            kind,
            values: BTreeMap::new(),
            lines: Vec::new(),
        })
    }

    /// A value that can go up and down, read now.
    pub fn gauge(&mut self, name: &'static str, help: &'static str, labels: &Labels, value: f64) {
        self.sample(name, help, "gauge", labels, value);
    }

    /// A count kept elsewhere, read now.
    pub fn counter(&mut self, name: &'static str, help: &'static str, labels: &Labels, value: u64) {
        self.sample(name, help, "counter", labels, value as f64);
    }

    fn sample(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: &'static str,
        labels: &Labels,
        value: f64,
    ) {
        *self
            .family(name, help, kind)
            .values
            .entry(render_labels(labels, None))
            .or_default() += value;
    }

    fn histogram(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &Labels,
        h: &HistogramData,
    ) {
        let fam = self.family(name, help, "histogram");
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += h.buckets[i].load(Ordering::Relaxed);
            let le = number(*bound);
            fam.lines.push(format!(
                "{name}_bucket{} {cumulative}",
                render_labels(labels, Some(&le))
            ));
        }
        cumulative += h.buckets[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
        let l = render_labels(labels, None);
        fam.lines.push(format!(
            "{name}_bucket{} {cumulative}",
            render_labels(labels, Some("+Inf"))
        ));
        let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        fam.lines.push(format!("{name}_sum{l} {}", number(sum)));
        fam.lines.push(format!("{name}_count{l} {cumulative}"));
    }

    fn render(self) -> String {
        let mut out = String::new();
        for (name, fam) in self.families {
            let _ = writeln!(out, "# HELP {name} {}", fam.help);
            let _ = writeln!(out, "# TYPE {name} {}", fam.kind);
            for (labels, value) in fam.values {
                let _ = writeln!(out, "{name}{labels} {}", number(value));
            }
            for line in fam.lines {
                out.push_str(&line);
                out.push('\n');
            }
        }
        out
    }
}

fn number(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

fn render_labels(labels: &Labels, le: Option<&str>) -> String {
    if labels.is_empty() && le.is_none() {
        return String::new();
    }
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    format!("{{{}}}", parts.join(","))
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Reads values when the metrics are scraped; returns `false` once its
/// source is gone, and is then dropped.
type Collector = Box<dyn FnMut(&mut Samples) -> bool + Send>;

type Key = (&'static str, Labels);

/// Registered metrics: counters and histograms by name and labels, and
/// collectors.
#[derive(Default)]
pub struct Registry {
    counters: Mutex<BTreeMap<Key, (&'static str, Counter)>>,
    histograms: Mutex<BTreeMap<Key, (&'static str, Histogram)>>,
    collectors: Mutex<Vec<Collector>>,
}

impl Registry {
    /// The counter `name` with these labels, registered on first use; the
    /// same handle for the same name and labels.
    pub fn counter(&self, name: &'static str, help: &'static str, labels: Labels) -> Counter {
        let mut m = self.counters.lock().unwrap();
        m.entry((name, labels))
            .or_insert_with(|| (help, Counter::default()))
            .1
            .clone()
    }

    /// The latency histogram `name` with these labels, registered on first
    /// use.
    pub fn histogram(&self, name: &'static str, help: &'static str, labels: Labels) -> Histogram {
        let mut m = self.histograms.lock().unwrap();
        m.entry((name, labels))
            .or_insert_with(|| (help, Histogram::default()))
            .1
            .clone()
    }

    /// The histogram `name` with exactly these labels, if something
    /// registered it: for readers (a dashboard's percentiles) that must not
    /// create a series nobody feeds.
    pub fn find_histogram(&self, name: &str, labels: &Labels) -> Option<Histogram> {
        let m = self.histograms.lock().unwrap();
        m.iter()
            .find(|((n, l), _)| *n == name && l == labels)
            .map(|(_, (_, h))| h.clone())
    }

    /// Adds a collector reading `source` at every scrape, for as long as
    /// `source` is alive elsewhere.
    pub fn collect<T, F>(&self, source: &Arc<T>, mut read: F)
    where
        T: Send + Sync + 'static,
        F: FnMut(&T, &mut Samples) + Send + 'static,
    {
        let weak: Weak<T> = Arc::downgrade(source);
        self.collectors
            .lock()
            .unwrap()
            .push(Box::new(move |s| match weak.upgrade() {
                Some(t) => {
                    read(&t, s);
                    true
                }
                None => false,
            }));
    }

    /// Everything registered, in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut s = Samples::default();
        for ((name, labels), (help, c)) in self.counters.lock().unwrap().iter() {
            s.sample(name, help, "counter", labels, c.get() as f64);
        }
        for ((name, labels), (help, h)) in self.histograms.lock().unwrap().iter() {
            s.histogram(name, help, labels, &h.0);
        }
        self.collectors.lock().unwrap().retain_mut(|c| c(&mut s));
        s.render()
    }
}

/// The registry of this process.
pub fn global() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_on_a_bound_counts_in_that_bound() {
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            let mut local = LocalHistogram::default();
            let ms = (bound * 1000.0).floor() as i64;
            local.observe_millis(ms);
            assert_eq!(
                local.buckets[i], 1,
                "{ms} ms belongs to the {bound} s bucket"
            );
            local.observe_millis(ms + 1);
            assert_eq!(local.buckets[i + 1], 1, "{} ms is above {bound} s", ms + 1);
        }
    }

    #[test]
    fn counters_are_shared_per_name_and_labels_and_rendered() {
        let r = Registry::default();
        let a = r.counter("riffle_x_total", "X.", vec![("topic", "a".into())]);
        let b = r.counter("riffle_x_total", "X.", vec![("topic", "b".into())]);
        r.counter("riffle_x_total", "X.", vec![("topic", "a".into())])
            .add(2);
        a.inc();
        b.inc();
        let text = r.render();
        assert_eq!(text.matches("# TYPE riffle_x_total counter").count(), 1);
        assert!(text.contains("riffle_x_total{topic=\"a\"} 3\n"), "{text}");
        assert!(text.contains("riffle_x_total{topic=\"b\"} 1\n"), "{text}");
    }

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let r = Registry::default();
        let h = r.histogram("riffle_lat_seconds", "L.", vec![]);
        h.observe_millis(3); // 0.005 bucket
        h.observe_millis(3);
        h.observe_millis(200); // 0.25 bucket
        h.observe_millis(120_000); // above every bound
        let text = r.render();
        assert!(
            text.contains("riffle_lat_seconds_bucket{le=\"0.0025\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("riffle_lat_seconds_bucket{le=\"0.005\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("riffle_lat_seconds_bucket{le=\"0.25\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("riffle_lat_seconds_bucket{le=\"60\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("riffle_lat_seconds_bucket{le=\"+Inf\"} 4\n"),
            "{text}"
        );
        assert!(text.contains("riffle_lat_seconds_count 4\n"), "{text}");
        assert!(text.contains("riffle_lat_seconds_sum 120.206\n"), "{text}");
        assert_eq!(h.quantile(0.5), Some(0.005));
        assert_eq!(h.quantile(0.75), Some(0.25));
        assert_eq!(h.quantile(1.0), Some(f64::INFINITY));
        let found = r.find_histogram("riffle_lat_seconds", &vec![]).unwrap();
        assert_eq!(found.count(), 4);
        assert!(r
            .find_histogram("riffle_lat_seconds", &vec![("group", "g".into())])
            .is_none());
    }

    #[test]
    fn collectors_read_live_sources_and_vanish_with_them() {
        let r = Registry::default();
        let source = Arc::new(AtomicU64::new(7));
        r.collect(&source, |v, s| {
            s.gauge(
                "riffle_depth",
                "Depth.",
                &vec![("actor", "w\"0".into())],
                v.load(Ordering::Relaxed) as f64,
            )
        });
        assert!(r.render().contains("riffle_depth{actor=\"w\\\"0\"} 7\n"));
        // Two sources of one series are summed.
        let other = Arc::new(AtomicU64::new(3));
        r.collect(&other, |v, s| {
            s.gauge(
                "riffle_depth",
                "Depth.",
                &vec![("actor", "w\"0".into())],
                v.load(Ordering::Relaxed) as f64,
            )
        });
        assert!(r.render().contains("riffle_depth{actor=\"w\\\"0\"} 10\n"));
        drop(other);
        source.store(9, Ordering::Relaxed);
        assert!(r.render().contains("} 9\n"));
        drop(source);
        assert!(!r.render().contains("riffle_depth"));
        assert!(r.collectors.lock().unwrap().is_empty());
    }
}
