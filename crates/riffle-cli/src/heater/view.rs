//! The terminal view of a simulation: pure functions from a [`Snapshot`] or
//! a [`SimReport`] to text, so that they can be tested without a terminal.
//!
//! [`render`] draws one frame for a redraw in place (the caller homes the
//! cursor and clears the screen): a header with the clock, a row per
//! displayed heater with a sparkline of its recent temperature against its
//! band, and totals. Every line fits the given width, counting visible
//! characters; colours are ANSI escapes, emitted only when asked for.
//! [`summary`] is the end-of-run summary.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::Duration;

use riffle_heater::messages::{Command, Setting};
use riffle_heater::simulator::{HeaterView, Phase, Sample, SimReport, Snapshot};

/// Eight heights of a sparkline cell.
const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
/// Heater rows shown when there is no history to choose them by.
const DEFAULT_ROWS: usize = 8;

// SGR styles.
const BOLD: &str = "1";
const DIM: &str = "2";
const RED: &str = "31";
const GREEN: &str = "32";
const YELLOW: &str = "33";
const BLUE: &str = "34";
const CYAN: &str = "36";
const HOT: &str = "1;38;5;202";
const CHART_BG: &str = "48;5;236";

/// Draws one frame of the live view in at most `height` lines of at most
/// `width` visible characters. With `colour` false the text is plain.
pub fn render(snapshot: &Snapshot, width: u16, height: u16, colour: bool) -> String {
    let width = usize::from(width);
    let height = usize::from(height);
    let fixed = 4; // header, column titles, two lines of totals
    let empty = VecDeque::new();
    let rows: Vec<(usize, &VecDeque<Sample>)> = if snapshot.history.is_empty() {
        (0..snapshot.heaters.len().min(DEFAULT_ROWS))
            .map(|i| (i, &empty))
            .collect()
    } else {
        snapshot
            .history
            .iter()
            .filter(|h| h.index < snapshot.heaters.len())
            .map(|h| (h.index, &h.samples))
            .collect()
    };
    let rows = &rows[..rows.len().min(height.saturating_sub(fixed))];

    let mut lines = vec![header(snapshot, width, colour)];
    let table = Table::new(snapshot, rows, width);
    lines.push(table.titles(snapshot, colour));
    for &(index, samples) in rows {
        lines.push(table.row(&snapshot.heaters[index], samples, colour));
    }
    lines.extend(totals(snapshot, width, colour));
    lines.truncate(height);
    lines.join("\n")
}

/// The end-of-run summary: a few aligned lines, plain text.
pub fn summary(report: &SimReport) -> String {
    let c = &report.counters;
    let n = report.heaters.len();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Simulated {} in {:.1} s (×{:.0}, asked ×{}), {n} heaters, seed {}",
        clock(report.simulated),
        report.wall.as_secs_f64(),
        report.effective_speedup(),
        trim_float(report.speedup),
        report.seed
    );
    let _ = writeln!(
        out,
        "{:<10}measurements {}  settings {}",
        "Sent",
        thousands(c.measurements),
        thousands(c.settings)
    );
    let _ = writeln!(
        out,
        "{:<10}received {}  applied {}  ignored {}  malformed {}  switches {}",
        "Commands",
        thousands(c.commands_received),
        thousands(c.commands_applied),
        thousands(c.commands_ignored),
        thousands(c.commands_malformed),
        thousands(c.switches)
    );
    let settled = n - report.unsettled();
    let _ = write!(out, "{:<10}{settled}/{n} reached their band", "Settling");
    if let (Some(mean), Some(max)) = (report.first_settle_mean(), report.first_settle_max()) {
        let _ = write!(
            out,
            "; first after {} mean, {} max",
            short(mean),
            short(max)
        );
    }
    let unsettled: Vec<&str> = report
        .heaters
        .iter()
        .filter(|h| h.first_settle.is_none())
        .map(|h| h.id.as_str())
        .collect();
    if !unsettled.is_empty() {
        let _ = write!(out, "; never: {}", few(&unsettled));
    }
    out.push('\n');
    let _ = write!(out, "{:<10}", "In band");
    match report.in_band_fraction() {
        Some(f) => {
            let _ = write!(out, "{:.1}% of settled time", f * 100.0);
        }
        None => out.push_str("no heater settled"),
    }
    let _ = write!(
        out,
        "; max excursion {:.2} °C; violations {} (beyond {:.2} °C)",
        report.max_excursion(),
        thousands(report.violations()),
        report.tolerance
    );
    let violating: Vec<&str> = report
        .heaters
        .iter()
        .filter(|h| h.violations > 0)
        .map(|h| h.id.as_str())
        .collect();
    if !violating.is_empty() {
        let _ = write!(out, " in {}", few(&violating));
    }
    out.push('\n');
    match (report.reaction_mean, report.reaction_max) {
        (Some(mean), Some(max)) => {
            let _ = writeln!(
                out,
                "{:<10}mean {:.1} s, max {:.1} s of simulated time from measurement to switch",
                "Reaction",
                mean.as_secs_f64(),
                max.as_secs_f64()
            );
        }
        _ => {
            let _ = writeln!(out, "{:<10}no heater was switched", "Reaction");
        }
    }
    out
}

/// A line being built: never wider than its width, with optional colour.
struct Line {
    text: String,
    visible: usize,
    width: usize,
    colour: bool,
}

impl Line {
    fn new(width: usize, colour: bool) -> Self {
        Self {
            text: String::new(),
            visible: 0,
            width,
            colour,
        }
    }

    fn room(&self) -> usize {
        self.width - self.visible
    }

    /// Appends what fits of `s` (control characters as spaces, so that a
    /// line stays one line).
    fn push(&mut self, s: &str) {
        for c in s.chars().take(self.room()) {
            self.text.push(if c.is_control() { ' ' } else { c });
            self.visible += 1;
        }
    }

    /// Appends what fits of `s` in the SGR style `style`.
    fn styled(&mut self, style: &str, s: &str) {
        if !self.colour || style.is_empty() || self.room() == 0 || s.is_empty() {
            return self.push(s);
        }
        let _ = write!(self.text, "\x1b[{style}m");
        self.push(s);
        self.text.push_str("\x1b[0m");
    }

    fn pad_to(&mut self, column: usize) {
        while self.visible < column.min(self.width) {
            self.push(" ");
        }
    }

    fn finish(self) -> String {
        self.text
    }
}

fn header(s: &Snapshot, width: usize, colour: bool) -> String {
    let mut l = Line::new(width, colour);
    l.styled(BOLD, "Heaters");
    l.push(" │ sim ");
    l.styled(BOLD, &clock(s.sim_time));
    l.push(&format!(" │ ×{}", trim_float(s.speedup)));
    let eff = s.effective_speedup();
    if s.wall_time >= Duration::from_secs(1) && (eff - s.speedup).abs() > s.speedup * 0.02 {
        l.styled(YELLOW, &format!(" (×{eff:.0})"));
    }
    l.push(&format!(" │ {} heaters", thousands(s.heaters.len() as u64)));
    l.push(&format!(" │ {} rec/s", rate(s.records_per_sec)));
    match &s.phase {
        Phase::Joining => l.styled(YELLOW, " │ joining the control topic…"),
        Phase::Running => {}
        Phase::Finished => l.styled(GREEN, " │ finished"),
        Phase::Failed(e) => l.styled(RED, &format!(" │ failed: {e}")),
    }
    if let Some(limit) = s.limit.filter(|l| !l.is_zero()) {
        let done = (s.sim_time.as_secs_f64() / limit.as_secs_f64()).clamp(0.0, 1.0);
        let bar = 12;
        if l.room() >= bar + 8 {
            let full = (done * bar as f64).round() as usize;
            l.push(" │ ");
            l.styled(CYAN, &"█".repeat(full));
            l.styled(DIM, &"░".repeat(bar - full));
            l.push(&format!(" {:.0}%", done * 100.0));
        }
    }
    l.finish()
}

/// Column layout of the heater rows: `id chart temp setting heat band [cmd]`.
struct Table {
    width: usize,
    id: usize,
    chart: usize,
    setting: usize,
    command: bool,
}

const TEMP: usize = 7; // " 45.3°"
const HEAT: usize = 4; // " OFF"
const BAND: usize = 9; // " settling"
const COMMAND: usize = 13; // " OFF 01:23:45"

impl Table {
    fn new(s: &Snapshot, rows: &[(usize, &VecDeque<Sample>)], width: usize) -> Self {
        let id = rows
            .iter()
            .map(|&(i, _)| s.heaters[i].id.chars().count())
            .max()
            .unwrap_or(6)
            .max(6);
        let setting = rows
            .iter()
            .map(|&(i, _)| setting_text(&s.heaters[i].setting).chars().count() + 1)
            .max()
            .unwrap_or(9);
        let fixed = id + TEMP + setting + HEAT + BAND;
        let history = if s.history.is_empty() {
            0
        } else {
            s.history_len.max(1)
        };
        // Room for the last command only when the chart gets its fill.
        let command = width >= fixed + COMMAND + 1 + history.min(120);
        let rest = width.saturating_sub(fixed + if command { COMMAND } else { 0 });
        // The chart: one cell per sample, after a space; dropped when tiny.
        let chart = if rest >= 9 {
            (rest - 1).min(history)
        } else {
            0
        };
        Self {
            width,
            id,
            chart,
            setting,
            command,
        }
    }

    fn titles(&self, s: &Snapshot, colour: bool) -> String {
        let mut l = Line::new(self.width, colour);
        let mut t = String::new();
        let _ = write!(t, "{:<w$}", "heater", w = self.id);
        if self.chart > 0 {
            let span = s.history_spacing.saturating_mul(self.chart as u32);
            let title = format!(" last {}, band in the middle", short(span));
            let _ = write!(t, "{title:<w$}", w = self.chart + 1);
        }
        let _ = write!(
            t,
            "{:>TEMP$}{:<w$}{:<HEAT$}{:<BAND$}",
            "temp",
            " setting",
            " heat",
            " band",
            w = self.setting
        );
        if self.command {
            t.push_str(" last command");
        }
        l.styled(DIM, t.trim_end());
        l.finish()
    }

    fn row(&self, h: &HeaterView, samples: &VecDeque<Sample>, colour: bool) -> String {
        let mut l = Line::new(self.width, colour);
        l.styled(BOLD, &h.id);
        l.pad_to(self.id);
        if self.chart > 0 {
            l.push(" ");
            let start = l.visible;
            let shown = samples.len().min(self.chart);
            l.styled(CHART_BG, &" ".repeat(self.chart - shown));
            // One escape per run of cells in the same style, not per cell.
            let mut run = String::new();
            let mut run_style = "";
            for sample in samples.iter().skip(samples.len() - shown) {
                let (c, style) = cell(sample);
                if style != run_style && !run.is_empty() {
                    l.styled(&format!("{run_style};{CHART_BG}"), &run);
                    run.clear();
                }
                run_style = style;
                run.push(c);
            }
            l.styled(&format!("{run_style};{CHART_BG}"), &run);
            l.pad_to(start + self.chart);
        }
        let temp_style = if h.in_band {
            GREEN
        } else if h.temperature > h.setting.temperature {
            RED
        } else {
            BLUE
        };
        l.styled(temp_style, &format!("{:>6.1}°", h.temperature));
        l.push(&format!(
            " {:<w$}",
            setting_text(&h.setting),
            w = self.setting - 1
        ));
        if h.on {
            l.styled(HOT, " ON ");
        } else {
            l.styled(CYAN, " OFF");
        }
        let (band, style) = if !h.settled {
            ("settling", YELLOW)
        } else if h.in_band {
            ("in band", GREEN)
        } else if h.temperature > h.setting.temperature {
            ("high", RED)
        } else {
            ("low", BLUE)
        };
        l.push(" ");
        l.styled(style, band);
        if self.command {
            l.pad_to(
                self.id
                    + self.chart
                    + usize::from(self.chart > 0)
                    + TEMP
                    + self.setting
                    + HEAT
                    + BAND,
            );
            match h.last_command {
                Some((c, at)) => {
                    let name = if c == Command::On { "ON " } else { "OFF" };
                    l.push(&format!(" {name} {}", clock(at)));
                }
                None => l.styled(DIM, " -"),
            }
        }
        l.finish()
    }
}

/// A sparkline cell for one sample: its height within the sample's band
/// widened by half the band each side, and a style by where it is.
fn cell(s: &Sample) -> (char, &'static str) {
    let low = s.setting.temperature - s.setting.down_delta;
    let high = s.setting.temperature + s.setting.up_delta;
    let pad = ((high - low) / 2.0).max(0.5);
    let (bottom, top) = (low - pad, high + pad);
    let level = ((s.temperature - bottom) / (top - bottom) * BLOCKS.len() as f64).floor();
    let level = if level.is_nan() {
        0
    } else {
        (level.max(0.0) as usize).min(BLOCKS.len() - 1)
    };
    let style = if s.temperature > high {
        RED
    } else if s.temperature < low {
        BLUE
    } else {
        GREEN
    };
    (BLOCKS[level], style)
}

fn totals(s: &Snapshot, width: usize, colour: bool) -> [String; 2] {
    let n = s.heaters.len();
    let mut l = Line::new(width, colour);
    l.push("in band ");
    let pct = if n == 0 {
        0.0
    } else {
        s.in_band as f64 * 100.0 / n as f64
    };
    l.styled(
        GREEN,
        &format!(
            "{}/{} ({pct:.1}%)",
            thousands(s.in_band as u64),
            thousands(n as u64)
        ),
    );
    l.push("  settling ");
    l.styled(
        if s.settling > 0 { YELLOW } else { "" },
        &thousands(s.settling as u64),
    );
    l.push("  violations ");
    l.styled(
        if s.violations > 0 { RED } else { GREEN },
        &thousands(s.violations),
    );
    l.push(&format!(
        "  max excursion {:.2}°C (tol {:.2})",
        s.max_excursion, s.tolerance
    ));
    let first = l.finish();

    let c = &s.counters;
    let mut l = Line::new(width, colour);
    l.push(&format!(
        "commands recv {}  applied {}  ",
        thousands(c.commands_received),
        thousands(c.commands_applied)
    ));
    l.push("ignored ");
    l.styled(
        if c.commands_ignored > 0 { YELLOW } else { "" },
        &thousands(c.commands_ignored),
    );
    l.push("  malformed ");
    l.styled(
        if c.commands_malformed > 0 { RED } else { "" },
        &thousands(c.commands_malformed),
    );
    l.styled(
        DIM,
        &format!(
            "  sent: {} measurements, {} settings",
            thousands(c.measurements),
            thousands(c.settings)
        ),
    );
    [first, l.finish()]
}

/// `45.0±1.0`, or `45.0+1.0/-0.5` when the deltas differ.
fn setting_text(s: &Setting) -> String {
    if s.up_delta == s.down_delta {
        format!("{:.1}±{:.1}", s.temperature, s.up_delta)
    } else {
        format!(
            "{:.1}+{:.1}/-{:.1}",
            s.temperature, s.up_delta, s.down_delta
        )
    }
}

/// `hh:mm:ss`.
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// `90s`, `20m`, `1h30m`: a span for a title.
fn short(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 if s.is_multiple_of(60) => format!("{}m", s / 60),
        120..=7199 => format!("{}m{:02}s", s / 60, s % 60),
        _ if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        _ => format!("{}h{:02}m", s / 3600, s / 60 % 60),
    }
}

/// `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `950`, `6.1k`, `1.2M`.
fn rate(r: f64) -> String {
    if r < 1_000.0 {
        format!("{r:.0}")
    } else if r < 1_000_000.0 {
        format!("{:.1}k", r / 1_000.0)
    } else {
        format!("{:.1}M", r / 1_000_000.0)
    }
}

/// `300` rather than `300.0`, `0.5` as is.
fn trim_float(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else {
        format!("{x}")
    }
}

/// Up to five names, then how many more.
fn few(names: &[&str]) -> String {
    let mut s = names.iter().take(5).copied().collect::<Vec<_>>().join(", ");
    if names.len() > 5 {
        let _ = write!(s, " and {} more", names.len() - 5);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use riffle_heater::simulator::{Counters, HeaterHistory, HeaterReport};

    /// The text a terminal shows: escapes removed.
    fn visible(s: &str) -> String {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    fn setting(t: f64) -> Setting {
        Setting {
            temperature: t,
            up_delta: 1.0,
            down_delta: 1.0,
        }
    }

    fn snapshot() -> Snapshot {
        let heaters: Vec<HeaterView> = (0..200)
            .map(|i| {
                let temperature = 43.5 + (i % 7) as f64 * 0.5;
                HeaterView {
                    id: format!("heater-{i:04}"),
                    temperature,
                    setting: setting(45.0),
                    on: i % 2 == 0,
                    settled: i % 5 != 0,
                    in_band: (44.0..=46.0).contains(&temperature),
                    violations: 0,
                    last_command: (i % 3 == 0)
                        .then_some((Command::Off, Duration::from_secs(3_000 + i))),
                }
            })
            .collect();
        let history = (0..8)
            .map(|index| HeaterHistory {
                index,
                samples: (0..120)
                    .map(|k| Sample {
                        temperature: 45.0 + 1.3 * ((k + index) as f64 / 6.0).sin(),
                        setting: setting(45.0),
                        on: k % 12 < 6,
                    })
                    .collect::<VecDeque<_>>(),
            })
            .collect();
        Snapshot {
            phase: Phase::Running,
            sim_time: Duration::from_secs(3 * 3600 + 25 * 60 + 7),
            wall_time: Duration::from_secs(60),
            speedup: 300.0,
            limit: Some(Duration::from_secs(4 * 3600)),
            records_per_sec: 6_123.0,
            counters: Counters {
                measurements: 144_000,
                settings: 2_600,
                commands_received: 2_345,
                commands_applied: 2_340,
                commands_ignored: 4,
                commands_malformed: 1,
                switches: 2_300,
            },
            settling: 13,
            in_band: 187,
            violations: 2,
            max_excursion: 0.23,
            tolerance: 0.47,
            heaters,
            history,
            history_spacing: Duration::from_secs(10),
            history_len: 120,
        }
    }

    #[test]
    fn fits_the_width_and_height_with_or_without_colour() {
        let s = snapshot();
        for colour in [false, true] {
            for width in [0u16, 1, 10, 30, 60, 80, 100, 132, 200, 300] {
                for height in [0u16, 1, 3, 5, 12, 24, 60] {
                    let frame = render(&s, width, height, colour);
                    let lines: Vec<&str> = frame.lines().collect();
                    assert!(lines.len() <= usize::from(height), "{width}x{height}");
                    for line in &lines {
                        let n = visible(line).chars().count();
                        assert!(n <= usize::from(width), "{n} > {width}: {line:?}");
                    }
                    if !colour {
                        assert!(!frame.contains('\x1b'), "{frame:?}");
                    }
                    // Before the run starts there is nothing to show yet.
                    let empty = render(&Snapshot::default(), width, height, colour);
                    assert!(empty.lines().count() <= usize::from(height));
                    for line in empty.lines() {
                        assert!(visible(line).chars().count() <= usize::from(width));
                    }
                }
            }
        }
    }

    #[test]
    fn shows_the_key_figures() {
        let s = snapshot();
        let frame = render(&s, 120, 24, false);
        for figure in [
            "03:25:07",
            "×300",
            "200 heaters",
            "6.1k rec/s",
            "85%",
            "heater-0000",
            "heater-0007",
            "45.0±1.0",
            "ON",
            "OFF",
            "settling",
            "in band 187/200 (93.5%)",
            "settling 13",
            "violations 2",
            "recv 2,345",
            "applied 2,340",
            "ignored 4",
            "malformed 1",
        ] {
            assert!(frame.contains(figure), "{figure:?} missing from\n{frame}");
        }
        assert!(!frame.contains("heater-0008"), "only the displayed heaters");
        // 8 rows of heaters with full 120-sample sparklines at this width.
        let rows: Vec<&str> = frame.lines().filter(|l| l.starts_with("heater-")).collect();
        assert_eq!(rows.len(), 8);
        let cells = rows[0].chars().filter(|c| BLOCKS.contains(c)).count();
        assert!(cells >= 60, "{cells} cells in {:?}", rows[0]);
        // ×205 achieved of ×300 asked is flagged.
        assert!(frame.contains("(×205)"), "{frame}");

        let coloured = render(&s, 120, 24, true);
        assert!(coloured.contains("\x1b["));
        assert_eq!(visible(&coloured), frame, "colour only adds escapes");
    }

    #[test]
    fn fewer_rows_when_short_and_the_chart_shrinks_when_narrow() {
        let s = snapshot();
        let frame = render(&s, 80, 7, false);
        assert_eq!(frame.lines().count(), 7);
        assert_eq!(
            frame.lines().filter(|l| l.starts_with("heater-")).count(),
            3
        );
        assert!(frame.lines().last().unwrap().contains("malformed"));
        let narrow = render(&s, 50, 24, false);
        let row = narrow
            .lines()
            .find(|l| l.starts_with("heater-0001"))
            .unwrap();
        assert!(row.contains("°"), "the temperature survives: {row:?}");
    }

    #[test]
    fn sparkline_cells_follow_the_band() {
        let at = |t: f64| {
            cell(&Sample {
                temperature: t,
                setting: setting(45.0),
                on: true,
            })
        };
        assert_eq!(at(40.0), ('▁', BLUE));
        assert_eq!(at(45.0).1, GREEN);
        assert_eq!(at(50.0), ('█', RED));
        assert!(at(44.2).0 < at(45.8).0);
    }

    #[test]
    fn summary_lists_the_results() {
        let heater = |i: usize, violations, first: Option<u64>| HeaterReport {
            id: format!("heater-{i:04}"),
            measurements: 720,
            settings: 12,
            commands_applied: 40,
            commands_malformed: 0,
            switches: 40,
            first_settle: first.map(Duration::from_secs),
            longest_settle: None,
            settling_at_end: false,
            settled_time: Duration::from_secs(7000),
            in_band_time: Duration::from_secs(6300),
            max_excursion: 0.2,
            violations,
            temperature: 45.0,
            setting: setting(45.0),
            on: true,
        };
        let report = SimReport {
            group_id: "g".into(),
            seed: 42,
            speedup: 300.0,
            simulated: Duration::from_secs(7200),
            wall: Duration::from_millis(24_100),
            tolerance: 0.467,
            counters: Counters {
                measurements: 2160,
                settings: 36,
                commands_received: 121,
                commands_applied: 120,
                commands_ignored: 1,
                commands_malformed: 0,
                switches: 120,
            },
            reaction_mean: Some(Duration::from_millis(420)),
            reaction_max: Some(Duration::from_millis(2700)),
            heaters: vec![
                heater(0, 0, Some(120)),
                heater(1, 3, Some(120)),
                heater(2, 0, None),
            ],
        };
        let text = summary(&report);
        for figure in [
            "Simulated 02:00:00 in 24.1 s",
            "seed 42",
            "measurements 2,160",
            "received 121",
            "ignored 1",
            "2/3 reached their band",
            "never: heater-0002",
            "90.0% of settled time",
            "violations 3",
            "in heater-0001",
            "max 2.7 s",
        ] {
            assert!(text.contains(figure), "{figure:?} missing from\n{text}");
        }
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn number_formats() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(clock(Duration::from_secs(3600 * 27 + 61)), "27:01:01");
        assert_eq!(short(Duration::from_secs(1200)), "20m");
        assert_eq!(short(Duration::from_secs(5400)), "90m");
        assert_eq!(short(Duration::from_secs(9000)), "2h30m");
        assert_eq!(rate(6_123.0), "6.1k");
        assert_eq!(trim_float(300.0), "300");
        assert_eq!(trim_float(0.5), "0.5");
    }
}
