//! A processor with timers of both kinds, for the tests of time in apps.

use std::time::Duration;

use riffle::log::RecordRef;
use riffle::process::{Context, Fired, KeyedProcessor, Time};
use riffle::{Error, Result};
use serde::{Deserialize, Serialize};

/// Inputs are `<command> <event time>`: `see` counts and (re)sets a
/// watchdog in processing time and a reminder in event time, `count`
/// only counts, `quiet` cancels the watchdog, `forget` deletes the key.
/// Every call says what it did on `out`, in order.
#[derive(Clone)]
pub struct Watch {
    /// Where it says what it did.
    pub out: String,
    /// How long after the last `see` the watchdog fires.
    pub watchdog: Duration,
    /// The event-time reminder fires this long after a `see`'s event time.
    pub remind_after: i64,
}

#[derive(Default, Serialize, Deserialize)]
pub struct Seen {
    pub count: u64,
}

impl KeyedProcessor for Watch {
    type Input = (String, i64);
    type State = Seen;

    fn decode(&self, r: &RecordRef<'_>) -> Result<(String, (String, i64))> {
        let key = r.key_str().ok_or_else(|| Error::Decode("no key".into()))?;
        let text = std::str::from_utf8(r.value).map_err(|e| Error::Decode(e.to_string()))?;
        let (cmd, at) = text
            .split_once(' ')
            .ok_or_else(|| Error::Decode(format!("not '<command> <time>': {text}")))?;
        let at = at
            .parse()
            .map_err(|_| Error::Decode(format!("bad time: {at}")))?;
        Ok((key.to_owned(), (cmd.to_owned(), at)))
    }

    fn event_time(&self, _: &RecordRef<'_>, input: &(String, i64)) -> Option<i64> {
        Some(input.1)
    }

    fn process(
        &mut self,
        key: &str,
        (cmd, at): &(String, i64),
        state: &mut Seen,
        ctx: &mut Context<'_>,
    ) -> Result<()> {
        match cmd.as_str() {
            "see" => {
                state.count += 1;
                let due = ctx.now() + self.watchdog.as_millis() as i64;
                ctx.set_timer("watchdog", Time::Processing(due));
                ctx.set_timer("remind", Time::Event(at + self.remind_after));
            }
            "quiet" => ctx.cancel_timer("watchdog"),
            "count" => state.count += 1,
            "forget" => ctx.delete_state(),
            other => return Err(Error::Decode(format!("unknown command {other}"))),
        }
        let said = format!("{cmd}@{at} count={}", state.count);
        ctx.send(&self.out, Some(key), said.as_bytes())
    }

    fn on_timer(
        &mut self,
        key: &str,
        timer: &Fired,
        state: &mut Seen,
        ctx: &mut Context<'_>,
    ) -> Result<()> {
        let said = format!(
            "{}@{} count={}",
            &*timer.name,
            timer.at.millis(),
            state.count
        );
        ctx.send(&self.out, Some(key), said.as_bytes())
    }
}
