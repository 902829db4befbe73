//! Shows a running simulation: a live view redrawn in place on a terminal,
//! a status line every few seconds otherwise (logs, CI), and the summary at
//! the end.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::heater::view;
use riffle::stream::Stopper;
use riffle::Result;
use riffle_heater::simulator::{SimHandle, SimReport};

/// Redraws per second on a terminal.
const FRAME: Duration = Duration::from_millis(150);
/// Status lines when not on a terminal.
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// Columns and rows of the terminal on stdout.
fn terminal_size() -> (u16, u16) {
    // SAFETY: TIOCGWINSZ fills the plain struct it is given.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 && ws.ws_row > 0 {
        (ws.ws_col, ws.ws_row)
    } else {
        (100, 30)
    }
}

/// Follows `sim` until it finishes or `stopper` fires, then returns its
/// report. `status` adds a line about the rest of the pipeline.
pub fn watch(sim: SimHandle, stopper: &Stopper, status: impl Fn() -> String) -> Result<SimReport> {
    let tty = std::io::stdout().is_terminal();
    let colour = tty && std::env::var_os("NO_COLOR").is_none();
    let mut out = std::io::stdout().lock();
    let mut last_status = Instant::now();
    if tty {
        // Alternate screen, hidden cursor: the view replaces itself.
        let _ = write!(out, "\x1b[?1049h\x1b[?25l");
    }
    while !sim.is_finished() && !stopper.is_stopped() {
        std::thread::sleep(FRAME);
        if tty {
            let (w, h) = terminal_size();
            let frame = sim.with_snapshot(|s| view::render(s, w, h.saturating_sub(1), colour));
            let line = status();
            let _ = write!(
                out,
                "\x1b[H{}\x1b[J\n{}",
                frame.replace('\n', "\x1b[K\n"),
                truncate(&line, w)
            );
            let _ = out.flush();
        } else if last_status.elapsed() >= STATUS_EVERY {
            last_status = Instant::now();
            let s = sim.snapshot();
            let _ = writeln!(
                out,
                "t={:>8}  heaters in band {}/{}  settling {}  violations {}  commands {}  | {}",
                clock(s.sim_time),
                s.in_band,
                s.heaters.len(),
                s.settling,
                s.violations,
                s.counters.commands_applied,
                status()
            );
        }
    }
    if tty {
        let _ = write!(out, "\x1b[?25h\x1b[?1049l");
        let _ = out.flush();
    }
    sim.stop();
    sim.join()
}

fn truncate(s: &str, width: u16) -> String {
    s.chars().take(usize::from(width)).collect()
}

/// `hh:mm:ss` of simulated time.
pub fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}
