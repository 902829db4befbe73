//! The one duration grammar of every flag and pipeline file.
//!
//! A duration is one or more terms, each a number and a unit, written
//! without spaces from the largest unit down: `250ms`, `1.5s`, `10m`,
//! `1h30m`, `7d`, `2m30s500ms`. Units are `ms`, `s`, `m` (or `min`), `h`
//! and `d`; a number is an integer or a decimal (`0.5h`, `.5s`). A bare number
//! means seconds (`30` is `30s`), as every earlier parser of the project
//! read it, and `0` is zero. Surrounding whitespace is ignored; negative,
//! infinite and out-of-range values are refused.
//!
//! [`parse`] reads it; [`format`] writes a duration back in it, so that
//! what is printed (a default, a report) can be given again as a flag.

use std::time::Duration;

/// Units from the largest down, with their length in seconds.
const UNITS: [(&str, f64); 6] = [
    ("d", 86_400.0),
    ("h", 3_600.0),
    ("min", 60.0),
    ("m", 60.0),
    ("s", 1.0),
    ("ms", 0.001),
];

/// Parses a duration in the grammar above; the error is one line that
/// names the input.
pub fn parse(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    let bad = |why: &str| {
        Err(format!(
            "'{text}' is not a duration ({why}; e.g. 500ms, 10s, 1h30m)"
        ))
    };
    if s.is_empty() {
        return bad("empty");
    }
    let mut rest = s;
    let mut total = 0.0f64;
    // Each term must use a smaller unit than the one before, so that
    // `1m1h` and `5s5s` are refused rather than guessed at.
    let mut last_rank: Option<usize> = None;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        // Rust's float syntax restricted to digits and one point: `.5` and
        // `5.` are numbers, as they were to every earlier parser.
        let Ok(n) = number.parse::<f64>() else {
            return bad("expected a number");
        };
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let (rank, seconds) = if unit.is_empty() {
            if last_rank.is_some() || !next.is_empty() {
                return bad("a unit is needed after every number but a lone one");
            }
            (UNITS.len(), 1.0)
        } else {
            match UNITS.iter().position(|(u, _)| *u == unit) {
                Some(i) => (i, UNITS[i].1),
                None => return bad(&format!("unknown unit '{unit}', use ms, s, m, h or d")),
            }
        };
        // `m` and `min` are one unit.
        let rank = if rank == 2 { 3 } else { rank };
        if last_rank.is_some_and(|r| rank <= r) {
            return bad("units must go from the largest down, each once");
        }
        last_rank = Some(rank);
        total += n * seconds;
        rest = next;
    }
    Duration::try_from_secs_f64(total).or_else(|_| bad("out of range"))
}

/// Writes `d` in the grammar [`parse`] reads, largest units first and
/// without zero terms: `1h30m`, `1s500ms`, `0s`. Sub-millisecond parts
/// are rounded to the millisecond, which no flag needs finer.
pub fn format(d: Duration) -> String {
    let mut ms = d.as_millis();
    if d.subsec_nanos() % 1_000_000 >= 500_000 {
        ms += 1;
    }
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        let n = ms / size;
        if n > 0 {
            out.push_str(&n.to_string());
            out.push_str(unit);
            ms %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Duration {
        parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn single_terms_in_every_unit() {
        assert_eq!(ok("250ms"), Duration::from_millis(250));
        assert_eq!(ok("10s"), Duration::from_secs(10));
        assert_eq!(ok("5m"), Duration::from_secs(300));
        assert_eq!(ok("5min"), Duration::from_secs(300));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("7d"), Duration::from_secs(7 * 86_400));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok("0.5h"), Duration::from_secs(1800));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("2.m"), Duration::from_secs(120));
    }

    #[test]
    fn bare_numbers_are_seconds_and_zero_is_zero() {
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("2"), Duration::from_secs(2));
        assert_eq!(ok("0.25"), Duration::from_millis(250));
        assert_eq!(ok(" 30s "), Duration::from_secs(30));
    }

    #[test]
    fn combinations_go_from_the_largest_unit_down() {
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("2m30s500ms"), Duration::from_millis(150_500));
        assert_eq!(ok("1d12h"), Duration::from_secs(36 * 3600));
        assert!(parse("1m1h").is_err());
        assert!(parse("5s5s").is_err());
        assert!(parse("1m5min").is_err());
        assert!(parse("1h30").is_err());
    }

    #[test]
    fn errors_are_one_line_naming_the_input() {
        for bad in [
            "",
            "x",
            "5 parsecs",
            "10y",
            "-1s",
            "1..5s",
            ".s",
            "s",
            "1e3s",
            "ms5",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(&format!("'{bad}'")), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
        assert!(parse("10y").unwrap_err().contains("unknown unit 'y'"));
        assert!(parse("99999999999999999999999d").is_err());
    }

    #[test]
    fn format_writes_what_parse_reads() {
        assert_eq!(format(Duration::ZERO), "0s");
        assert_eq!(format(Duration::from_millis(250)), "250ms");
        assert_eq!(format(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(format(Duration::from_secs(86_400 + 1)), "1d1s");
        assert_eq!(format(Duration::from_micros(1_499)), "1ms");
        for d in [
            Duration::from_millis(1),
            Duration::from_millis(61_001),
            Duration::from_secs(3 * 86_400 + 7 * 3600 + 59),
        ] {
            assert_eq!(ok(&format(d)), d);
        }
    }
}
