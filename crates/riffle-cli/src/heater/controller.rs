//! `riffle heater controller`.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use riffle::log::{Log, OffsetReset, TopicSpec};
use riffle::process::table::GlobalTable;
use riffle::process::{App, EventTime, Guarantee, Running, Scaling, Style};
use riffle::serve::{Endpoint, Routes};
use riffle::{Error, Result};
use riffle_heater::controller::Controller;
use riffle_heater::messages::{
    ALERTS_TOPIC, CONTROL_TOPIC, DEAD_LETTER_TOPIC, SENSOR_TOPIC, STATS_TOPIC,
};

use crate::backend::LogArgs;
use crate::dashboard::Dashboard;
use crate::endpoint::HttpSecurity;
use crate::util;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum StyleArg {
    /// State in the consumer that owns the partition.
    Keyed,
    /// Per-key actors on a pool of workers.
    Actors,
}

/// Flags shared by the controller command and the heater demo.
#[derive(Args, Clone)]
pub struct ControllerOptions {
    /// Where controller state lives.
    #[arg(long, value_enum, default_value = "keyed")]
    pub style: StyleArg,
    /// Consumer actors in this process: a number, or MIN..MAX to let their
    /// count follow the lag (see --scale-lag).
    #[arg(long, short = 'n', value_name = "N|MIN..MAX", default_value = "2", value_parser = parse_consumers)]
    pub consumers: Consumers,
    /// With --consumers MIN..MAX: the lag per consumer (records not yet
    /// committed on this process's partitions, divided by its consumers)
    /// above which a consumer is added; below a quarter of it one is removed.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub scale_lag: u64,
    /// With --consumers MIN..MAX: how long to wait after adding or removing
    /// a consumer before the next change.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = util::parse_duration)]
    pub scale_cooldown: Duration,
    /// Workers of the actors style (default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: Option<u16>,
    /// Topic of measurements (and settings, unless --settings-topic is given).
    #[arg(long, default_value = SENSOR_TOPIC)]
    pub sensor_topic: String,
    /// A separate topic of thermostat settings.
    #[arg(long)]
    pub settings_topic: Option<String>,
    /// Topic the commands go to.
    #[arg(long, default_value = CONTROL_TOPIC)]
    pub control_topic: String,
    /// Topic for records that cannot be used, with the reason.
    #[arg(long, default_value = DEAD_LETTER_TOPIC)]
    pub dead_letter: String,
    /// Turn a heater OFF, with an alert, when it sends no measurement for
    /// this long (a per-heater timer, kept with its state).
    #[arg(long, value_name = "DURATION", value_parser = util::parse_duration)]
    pub watchdog: Option<Duration>,
    /// Topic of the watchdog's alerts.
    #[arg(long, default_value = ALERTS_TOPIC)]
    pub alerts_topic: String,
    /// The watchdog and statistics run in event time (the heaters' own
    /// time); a partition without records for this long moves on by
    /// the wall clock instead, so that its heaters' timers still fire.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = util::parse_duration)]
    pub idle_timeout: Duration,
    /// Send each heater's statistics (lowest, mean and highest temperature,
    /// share of time ON, commands) per window of this length, by the
    /// heaters' own time (the simulator's simulated time: 60s is a
    /// simulated minute at any --speedup) [the demo: 60s, shown on its
    /// dashboard, with --http].
    #[arg(long, value_name = "DURATION", value_parser = util::parse_duration)]
    pub stats_window: Option<Duration>,
    /// Topic of the statistics.
    #[arg(long, default_value = STATS_TOPIC)]
    pub stats_topic: String,
    /// A compacted topic of fleet-wide limits, read in full by every
    /// process: its `max_temperature` row (a number) caps every heater's
    /// desired temperature.
    #[arg(long, value_name = "TOPIC")]
    pub limits_topic: Option<String>,
    /// Measurements older than this (their record's timestamp, when it was
    /// sent, against the wall clock) are counted, not acted upon: a backlog
    /// says what heaters were.
    #[arg(long, value_name = "DURATION", value_parser = util::parse_duration)]
    pub max_age: Option<Duration>,
    /// Partitions of topics created because they are missing.
    #[arg(long, short = 'p', default_value_t = 10)]
    pub partitions: i32,
    /// Route records through this topic keyed by heater id first: needed in
    /// the keyed style when heaters send key-less records.
    #[arg(long, value_name = "TOPIC")]
    pub repartition: Option<String>,
    /// What survives a failure: at-least-once (commands may repeat after a
    /// crash) or exactly-once (commands, state and offsets committed together
    /// in transactions; readers of the control topic must read committed
    /// records only).
    #[arg(long, value_name = "GUARANTEE", default_value = "at-least-once", value_parser = parse_guarantee)]
    pub guarantee: Guarantee,
    /// How often offsets (and, under exactly-once, transactions) are
    /// committed: longer costs less per record and replays more after a crash
    /// [default: 100ms at-least-once, 50ms exactly-once].
    #[arg(long, value_name = "DURATION", value_parser = util::parse_duration)]
    pub commit_interval: Option<Duration>,
    /// Where snapshots of controller state are kept, so that a restart
    /// restores from them instead of the whole changelog [default:
    /// <data-dir>/state; none with --in-memory].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// A name for this process, unique in the group and stable across its
    /// restarts (a host or pod name). On Kafka its consumers become static
    /// members of the group: restarted within the session timeout after a
    /// crash, it takes its partitions back without a rebalance of the
    /// others (a stop still hands them over at once). Under exactly-once a
    /// restart also aborts its predecessor's open transactions at once.
    #[arg(long, value_name = "ID", env = "RIFFLE_INSTANCE")]
    pub instance: Option<String>,
    /// Keep a warm copy of the state of every partition this process does
    /// not own, followed from the changelog (key-based style): when another
    /// controller is killed or stopped, its heaters' state is taken over
    /// from the copy, not replayed from the whole changelog. Costs the
    /// memory of all the heaters' state.
    #[arg(long)]
    pub standby: bool,
    /// Serve /metrics (Prometheus), /state/<heater id> and the live
    /// dashboard over HTTP on this address [bare --http: 127.0.0.1:9464].
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:9464")]
    pub http: Option<String>,
    #[command(flatten)]
    pub http_security: HttpSecurity,
}

/// A fixed consumer count, or bounds to autoscale between.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Consumers {
    pub min: u16,
    pub max: u16,
}

impl std::fmt::Display for Consumers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}..{}", self.min, self.max)
        }
    }
}

fn parse_consumers(s: &str) -> std::result::Result<Consumers, String> {
    let count = |n: &str| -> std::result::Result<u16, String> {
        match n.trim().parse::<u16>() {
            Ok(0) => Err("at least 1 consumer is needed".into()),
            Ok(n) => Ok(n),
            Err(_) => Err("not a count or a MIN..MAX range".into()),
        }
    };
    let (min, max) = match s.split_once("..") {
        Some((a, b)) => (count(a)?, count(b)?),
        None => (count(s)?, count(s)?),
    };
    if min > max {
        return Err("MIN is above MAX".into());
    }
    Ok(Consumers { min, max })
}

fn parse_guarantee(s: &str) -> std::result::Result<Guarantee, String> {
    s.parse().map_err(|e| match e {
        Error::InvalidInput(m) => m,
        e => e.to_string(),
    })
}

impl ControllerOptions {
    pub fn style(&self) -> Style {
        match self.style {
            StyleArg::Keyed => Style::Keyed,
            StyleArg::Actors => Style::Actors {
                workers: self.workers.map(usize::from).unwrap_or_else(|| {
                    std::thread::available_parallelism()
                        .map(|n| n.get())
                        .unwrap_or(2)
                }),
            },
        }
    }

    /// Creates the topics that are missing.
    pub fn ensure_topics(&self, log: &dyn Log) -> Result<()> {
        let t = Duration::from_secs(30);
        let alerts = self.watchdog.map(|_| self.alerts_topic.as_str());
        let stats = self.stats_window.map(|_| &self.stats_topic);
        for topic in [&self.sensor_topic, &self.control_topic]
            .into_iter()
            .chain(alerts.as_ref().map(|_| &self.alerts_topic))
            .chain(stats)
        {
            log.ensure_topic(&TopicSpec::new(topic, self.partitions), t)?;
        }
        // Tables: only a key's latest row matters.
        for topic in self.settings_topic.iter().chain(&self.limits_topic) {
            let mut spec = TopicSpec::new(topic, self.partitions);
            spec.configs
                .push(("cleanup.policy".into(), "compact".into()));
            log.ensure_topic(&spec, t)?;
        }
        Ok(())
    }

    pub fn inputs(&self) -> Vec<&str> {
        let mut v = vec![self.sensor_topic.as_str()];
        v.extend(self.settings_topic.as_deref());
        v
    }

    /// The state directory: `--state-dir`, else the one under the data
    /// directory (none in memory).
    pub fn state_dir(&self, log_args: &LogArgs) -> Result<Option<PathBuf>> {
        match &self.state_dir {
            Some(dir) => Ok(Some(dir.clone())),
            None => Ok(log_args.data_dir()?.map(|d| d.join("state"))),
        }
    }

    /// Starts the operations endpoint if `--http` asks for one; `more`
    /// answers the paths it does not know itself (the dashboard).
    pub fn endpoint(&self, more: Option<Routes>) -> Result<Option<Endpoint>> {
        let Some(bind) = &self.http else {
            self.http_security.check_unused()?;
            return Ok(None);
        };
        let endpoint = self.http_security.start(bind, more)?;
        eprintln!(
            "serving {}://{}/ (dashboard), /metrics and /state/<heater id> ({})",
            endpoint.scheme(),
            endpoint.addr(),
            self.http_security.describe(&endpoint)
        );
        Ok(Some(endpoint))
    }

    /// Starts the controller; with an endpoint, names it to the group and
    /// answers state queries there.
    pub fn start(
        &self,
        log: Arc<dyn Log>,
        group: &str,
        from: OffsetReset,
        state_dir: Option<PathBuf>,
        endpoint: Option<&Endpoint>,
    ) -> Result<Running> {
        let mut controller = Controller::new(&self.control_topic);
        if let Some(silence) = self.watchdog {
            controller = controller.with_watchdog(silence, &self.alerts_topic);
        }
        if let Some(age) = self.max_age {
            controller = controller.with_max_age(age);
        }
        if let Some(window) = self.stats_window {
            controller = controller.with_stats(window, &self.stats_topic);
        }
        if let Some(topic) = &self.limits_topic {
            let number = |v: &[u8]| {
                serde_json::from_slice::<f64>(v)
                    .map_err(|e| Error::Decode(format!("a limit is a number: {e}")))
            };
            controller = controller.with_limits(GlobalTable::start(&*log, topic, number)?);
        }
        let mut app = App::new(group, &self.inputs(), controller)
            .style(self.style())
            .consumers(self.consumers.min as usize)
            .dead_letter(&self.dead_letter)
            .offset_reset(from)
            .guarantee(self.guarantee)
            .event_time(EventTime {
                idle_timeout: Some(self.idle_timeout),
                ..EventTime::default()
            });
        if let Some(interval) = self.commit_interval {
            app = app.commit_interval(interval);
        }
        let Consumers { min, max } = self.consumers;
        if min < max {
            app = app.autoscale(Scaling {
                min: min as usize,
                max: max as usize,
                lag_per_consumer: self.scale_lag,
                cooldown: self.scale_cooldown,
                ..Scaling::default()
            });
        }
        if let Some(topic) = &self.repartition {
            app = app.repartition(topic);
        }
        if let Some(dir) = state_dir {
            app = app.state_dir(dir);
        }
        if let Some(id) = &self.instance {
            app = app.instance(id);
        }
        app = app.standby(self.standby);
        if let Some(e) = endpoint {
            app = app.advertise(&e.addr().to_string());
        }
        let running = app.start(log)?;
        if let Some(e) = endpoint {
            e.serve_states(running.states());
        }
        Ok(running)
    }

    /// The delivery settings, for the first line of output.
    pub fn delivery(&self, state_dir: Option<&Path>) -> String {
        let guarantee = match self.guarantee {
            Guarantee::AtLeastOnce => "at-least-once",
            Guarantee::ExactlyOnce => "exactly-once",
        };
        let mut s = format!(
            "{guarantee}, commits every {:?}, state {}",
            self.commit_interval
                .unwrap_or_else(|| self.guarantee.default_commit_interval()),
            state_dir.map_or_else(|| "in memory".into(), |d| d.display().to_string())
        );
        if let Some(id) = &self.instance {
            s += &format!(", instance {id}");
        }
        if self.consumers.min < self.consumers.max {
            s += &format!(
                ", autoscaling above {} lag per consumer, cooldown {:?}",
                self.scale_lag, self.scale_cooldown
            );
        }
        s
    }
}

#[derive(Args)]
pub struct ControllerArgs {
    #[command(flatten)]
    options: ControllerOptions,
    /// Consumer group id; run several processes with the same id to share the work.
    #[arg(long, short = 'g', default_value = "heater-controller")]
    group: String,
    /// Where to start when the group has no committed offset.
    #[arg(long, default_value = "earliest", value_parser = ["earliest", "latest"])]
    from: String,
    /// Stop after this long; runs until Ctrl-C or SIGTERM otherwise.
    #[arg(long, value_parser = util::parse_duration)]
    duration: Option<Duration>,
    /// Seconds between two status lines on stderr (0: none).
    #[arg(long, default_value = "5s", value_parser = util::parse_duration)]
    status_every: Duration,
}

pub fn run(brokers: &LogArgs, a: ControllerArgs) -> Result<()> {
    // First: a supervisor's SIGTERM during start-up stops the process
    // gracefully once it has started, rather than killing it.
    let stopper = util::signal_stopper();
    a.options.http_security.check(a.options.http.as_deref())?;
    let log = brokers.kafka(
        "heater controller",
        "`riffle demo heater` runs the controller and the heaters in one",
    )?;
    a.options.ensure_topics(&*log)?;
    let state_dir = a.options.state_dir(brokers)?;
    let title = format!(
        "heater controller on {} ({:?} style, {} consumers, {})",
        log.describe(),
        a.options.style(),
        a.options.consumers,
        a.options.delivery(state_dir.as_deref()),
    );
    let dashboard = Dashboard::new(log.clone(), &a.group, title.clone());
    let endpoint = a.options.endpoint(Some(dashboard.routes()))?;
    let app = Arc::new(a.options.start(
        log.clone(),
        &a.group,
        a.from.parse()?,
        state_dir.clone(),
        endpoint.as_ref(),
    )?);
    dashboard.attach_app(&app);
    eprintln!(
        "{title}: {} -> {}, dead letters to {}",
        a.options.inputs().join(", "),
        a.options.control_topic,
        a.options.dead_letter
    );
    let start = Instant::now();
    let mut last = Instant::now();
    while !stopper.is_stopped() && a.duration.is_none_or(|d| start.elapsed() < d) {
        std::thread::sleep(Duration::from_millis(50));
        if !a.status_every.is_zero() && last.elapsed() >= a.status_every {
            last = Instant::now();
            let s = app.stats();
            let owned: usize = app.assignments().iter().map(|(_, p)| p.len()).sum();
            let outage = log
                .unreachable_for()
                .map(|d| format!("  brokers unreachable for {} s", d.as_secs()))
                .unwrap_or_default();
            eprintln!(
                "processed {}  sent {}  dead letters {}  consumers {}  partitions owned {owned}{outage}",
                s.processed.load(Ordering::Relaxed),
                s.sent.load(Ordering::Relaxed),
                s.dead_letters.load(Ordering::Relaxed),
                app.consumers()
            );
        }
    }
    let s = app.stats();
    let (p, c, d) = (
        s.processed.load(Ordering::Relaxed),
        s.sent.load(Ordering::Relaxed),
        s.dead_letters.load(Ordering::Relaxed),
    );
    dashboard.detach_app(app)?.stop()?;
    eprintln!("stopped: processed {p}, records sent {c} (commands and any statistics and alerts), dead letters {d}");
    Ok(())
}
