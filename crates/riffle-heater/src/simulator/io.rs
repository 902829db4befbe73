//! The simulator's records in and out: control records read from the log
//! and handed to the simulator's thread, heater records written to it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use riffle::log::{Header, OutRecord, RecordRef};
use riffle::stream::Producer;
use riffle::Result;

use crate::messages::{Command, TIME_HEADER};

/// A control record as the consumer thread saw it, stamped with its wall
/// arrival time (see [`arrival`]), for the simulator thread to apply.
pub(super) struct Arrival {
    pub(super) wall: Instant,
    pub(super) what: Incoming,
}

/// What a control record means for this simulator's heaters.
pub(super) enum Incoming {
    Command(usize, Command),
    Malformed(usize),
    Ignored,
}

/// Maps a record key to a heater index without allocating.
#[derive(Clone)]
pub(super) struct IdLookup {
    pub(super) prefix: Vec<u8>,
    pub(super) width: usize,
    pub(super) count: usize,
}

impl IdLookup {
    fn index(&self, key: &[u8]) -> Option<usize> {
        let digits = key.strip_prefix(self.prefix.as_slice())?;
        if digits.len() != self.width || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let i = digits.iter().try_fold(0usize, |n, d| {
            n.checked_mul(10)?.checked_add(usize::from(d - b'0'))
        })?;
        (i < self.count).then_some(i)
    }
}

/// Control records handed from the consumer's thread to the simulator's:
/// the consumer pushes, the simulator takes them all once a tick.
#[derive(Clone, Default)]
pub(super) struct Inbox(Arc<Mutex<Vec<Arrival>>>);

impl Inbox {
    fn push(&self, arrival: Arrival) {
        // A panicking pusher leaves a valid vector behind: go on with it.
        let mut v = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        v.push(arrival);
    }

    /// Moves everything that arrived into `into` (empty when called),
    /// leaving its allocation here for the next tick.
    pub(super) fn take_into(&self, into: &mut Vec<Arrival>) {
        let mut v = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::swap(into, &mut *v);
    }
}

/// The control consumer's handler: looks the key up, decodes the command,
/// and stamps the arrival for the simulator's thread.
pub(super) fn control_handler(
    inbox: Inbox,
    ids: IdLookup,
) -> impl FnMut(RecordRef<'_>) -> Result<()> + Send + 'static {
    move |record: RecordRef<'_>| {
        let wall = Instant::now();
        let what = match record.key.and_then(|k| ids.index(k)) {
            None => Incoming::Ignored,
            Some(i) => match Command::from_json(record.value) {
                Ok(c) => Incoming::Command(i, c),
                Err(e) => {
                    tracing::debug!(offset = record.offset, "malformed control record: {e}");
                    Incoming::Malformed(i)
                }
            },
        };
        inbox.push(Arrival { wall, what });
        Ok(())
    }
}

/// Where records go and how they look.
pub(super) struct Outlet {
    pub(super) producer: Producer,
    pub(super) sensor_topic: String,
    pub(super) settings_topic: String,
    pub(super) keyless: bool,
    /// The wall clock at simulated time 0, in milliseconds since the Unix
    /// epoch: records carry their simulated time from here in their
    /// [`TIME_HEADER`], so that a controller's event time is the heaters'
    /// own.
    pub(super) epoch_ms: i64,
}

impl Outlet {
    /// Sends `body` for heater `id`, with simulated time `t` (seconds).
    pub(super) fn send(&self, topic: &str, id: &str, body: Vec<u8>, t: f64) -> Result<()> {
        let at = (self.epoch_ms + (t * 1000.0).round() as i64).to_string();
        let headers = [Header::new(TIME_HEADER, Some(at.as_bytes()))];
        let with_id;
        let (key, value) = if self.keyless {
            with_id = self::with_id(id, &body);
            (None, &with_id)
        } else {
            (Some(id.as_bytes()), &body)
        };
        self.producer
            .send_record(OutRecord::new(topic, key, value).with_headers(&headers))
    }
}

/// `{"id":"<id>",...}` from a JSON object body `{...}` (ids are checked to
/// need no escaping).
fn with_id(id: &str, body: &[u8]) -> Vec<u8> {
    let rest = body.strip_prefix(b"{").unwrap_or(body);
    let mut out = Vec::with_capacity(body.len() + id.len() + 8);
    out.extend_from_slice(b"{\"id\":\"");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b"\"");
    if rest != b"}" {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulator::config::SimConfig;

    #[test]
    fn ids_are_padded_and_parsed_back() {
        let mut c = SimConfig::new(200);
        assert_eq!(c.heater_id(7), "heater-0007");
        let ids = IdLookup {
            prefix: b"heater-".to_vec(),
            width: 4,
            count: 200,
        };
        assert_eq!(ids.index(b"heater-0007"), Some(7));
        assert_eq!(ids.index(b"heater-0199"), Some(199));
        assert_eq!(ids.index(b"heater-0200"), None);
        assert_eq!(ids.index(b"heater-007"), None);
        assert_eq!(ids.index(b"heater-00a7"), None);
        assert_eq!(ids.index(b"other-0007"), None);
        c.heaters = 100_001;
        assert_eq!(c.heater_id(5), "heater-000005");
        assert_eq!(
            with_id("h-1", br#"{"measurement":45.2}"#),
            br#"{"id":"h-1","measurement":45.2}"#
        );
    }
}
