//! The input of a run: a setting per heater, then measurements following a
//! seeded random walk around each heater's band, written at a steady rate.
//! Records are stamped with the heaters' own time: a round is a simulated
//! second, its tenths of heaters a tenth of a second apart, from when the
//! feed starts; so timestamps never go back within a partition.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use riffle::log::{Log, OutRecord};
use riffle::stream::Producer;
use riffle_heater::messages::{measurement_json, setting_json, Setting};

/// What the feeder writes, and over how long.
#[derive(Debug, Clone)]
pub struct FeedPlan {
    pub heaters: usize,
    /// Measurements per heater, one per round.
    pub rounds: usize,
    pub duration: Duration,
    pub seed: u64,
    /// Rounds before which about a tenth of the heaters get a new setting.
    pub setting_changes: Vec<usize>,
    /// Heaters that fall silent for a while, for a watchdog to notice.
    pub silence: Option<Silence>,
}

/// Every `every`-th heater (from heater 0) sends no measurement in
/// `rounds`.
#[derive(Debug, Clone)]
pub struct Silence {
    pub every: usize,
    pub rounds: std::ops::RangeInclusive<usize>,
}

impl Silence {
    fn mutes(&self, heater: usize, round: usize) -> bool {
        heater.is_multiple_of(self.every) && self.rounds.contains(&round)
    }
}

/// Simulated milliseconds per round.
pub const ROUND_MS: i64 = 1000;

pub fn heater_id(i: usize) -> String {
    format!("heater-{i:04}")
}

fn random_setting(rng: &mut fastrand::Rng) -> Setting {
    Setting {
        temperature: 40.0 + rng.f64() * 20.0,
        up_delta: 0.3 + rng.f64() * 0.7,
        down_delta: 0.3 + rng.f64() * 0.7,
    }
}

/// Writes the plan's records to `topic`, keyed by heater id; returns how
/// many. Stops early when `stop` is set.
pub fn feed(log: Arc<dyn Log>, topic: &str, plan: &FeedPlan, stop: &AtomicBool) -> u64 {
    let producer = Producer::new(&*log).expect("producer");
    let mut rng = fastrand::Rng::with_seed(plan.seed);
    let mut heaters: Vec<(Setting, f64)> = (0..plan.heaters)
        .map(|_| {
            let s = random_setting(&mut rng);
            let t = s.temperature + rng.f64() * 10.0 - 5.0;
            (s, t)
        })
        .collect();
    let mut sent = 0u64;
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut send = |i: usize, value: &[u8], at: i64| {
        let key = heater_id(i);
        producer
            .send_record(OutRecord::new(topic, Some(key.as_bytes()), value).at(at))
            .expect("input record queued");
        sent += 1;
    };
    const CHUNKS: usize = 10;
    let per_chunk = plan.heaters.div_ceil(CHUNKS);
    let start = Instant::now();
    // Round 0 is the settings, rounds 1..=rounds the measurements.
    let slots = (plan.rounds + 1) * CHUNKS;
    for round in 0..=plan.rounds {
        let changes = plan.setting_changes.contains(&round);
        for chunk in 0..CHUNKS {
            if stop.load(Ordering::SeqCst) {
                return sent;
            }
            let at = plan
                .duration
                .mul_f64((round * CHUNKS + chunk) as f64 / slots as f64);
            if let Some(wait) = at.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
            let range = chunk * per_chunk..((chunk + 1) * per_chunk).min(plan.heaters);
            let ts = t0 + round as i64 * ROUND_MS + chunk as i64 * ROUND_MS / CHUNKS as i64;
            for i in range {
                let (setting, temp) = &mut heaters[i];
                if round == 0 {
                    send(i, &setting_json(setting), ts);
                    continue;
                }
                if changes && rng.f64() < 0.1 {
                    *setting = random_setting(&mut rng);
                    send(i, &setting_json(setting), ts);
                }
                // Pulled towards the setting, pushed by noise wider than the
                // band: the band is crossed every few measurements.
                *temp += 0.6 * (setting.temperature - *temp) + rng.f64() * 6.0 - 3.0;
                if !plan.silence.as_ref().is_some_and(|s| s.mutes(i, round)) {
                    send(i, &measurement_json(*temp), ts);
                }
            }
        }
    }
    // Long enough for a broker stopped for 30 s to come back.
    producer
        .flush(Duration::from_secs(120))
        .expect("input delivered");
    let s = producer.stats();
    assert_eq!(
        s.failed.load(Ordering::Relaxed),
        0,
        "input records failed to be delivered"
    );
    assert_eq!(s.delivered.load(Ordering::Relaxed), sent);
    sent
}
