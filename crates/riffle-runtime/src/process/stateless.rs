//! Stateless steps: each record becomes zero or more records on one output
//! topic, whatever came before it.
//!
//! ```
//! use riffle_runtime::process::stateless;
//! // Upper-case every value of the input into `shout`.
//! let step = stateless::map("shout", |value: &[u8]| Ok(value.to_ascii_uppercase()));
//! // Keep only records whose key starts with "eu-".
//! let eu = stateless::filter("eu", |r| r.key.is_some_and(|k| k.starts_with(b"eu-")));
//! // Copy each record with a header naming its topic in place of its own.
//! use riffle_log::OwnedHeader;
//! let tagged = stateless::flat_map("tagged", |r, out| {
//!     let copy = stateless::Output::new(r.key.map(<[u8]>::to_vec), r.value.to_vec());
//!     out.push(copy.with_headers(vec![OwnedHeader::new("from", Some(r.topic))]));
//!     Ok(())
//! });
//! ```
//!
//! Outputs keep the input record's headers unless the step sets others
//! ([`Output::headers`]): the input's are then passed to the producer as
//! they are, never copied on the way.

use std::sync::Arc;

use super::{Context, KeyedProcessor};
use crate::error::Result;
use crate::log::{Headers, OwnedHeader, RecordRef};

/// A record a stateless step emits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    /// `None` keeps the input record's headers; `Some` replaces them
    /// (`Some(Vec::new())` drops them).
    pub headers: Option<Vec<OwnedHeader>>,
}

impl Output {
    /// An output with the input's headers.
    pub fn new(key: Option<Vec<u8>>, value: Vec<u8>) -> Self {
        Self {
            key,
            value,
            headers: None,
        }
    }

    /// The same output with `headers` instead of the input's.
    pub fn with_headers(self, headers: Vec<OwnedHeader>) -> Self {
        Self {
            headers: Some(headers),
            ..self
        }
    }
}

type Step = dyn Fn(&RecordRef<'_>, &mut Vec<Output>) -> Result<()> + Send + Sync;

/// A stateless step as a [`KeyedProcessor`] with no state, so that it runs
/// in an [`App`](super::App) like any other processor.
#[derive(Clone)]
pub struct Stateless {
    to: Arc<str>,
    step: Arc<Step>,
}

/// Zero or more output records per input record.
pub fn flat_map(
    to: &str,
    f: impl Fn(&RecordRef<'_>, &mut Vec<Output>) -> Result<()> + Send + Sync + 'static,
) -> Stateless {
    Stateless {
        to: to.into(),
        step: Arc::new(f),
    }
}

/// One output per input: the value transformed, the key kept.
pub fn map(to: &str, f: impl Fn(&[u8]) -> Result<Vec<u8>> + Send + Sync + 'static) -> Stateless {
    flat_map(to, move |r, out| {
        out.push(Output::new(r.key.map(<[u8]>::to_vec), f(r.value)?));
        Ok(())
    })
}

/// The records for which `keep` is true, unchanged.
pub fn filter(
    to: &str,
    keep: impl Fn(&RecordRef<'_>) -> bool + Send + Sync + 'static,
) -> Stateless {
    flat_map(to, move |r, out| {
        if keep(r) {
            out.push(Output::new(r.key.map(<[u8]>::to_vec), r.value.to_vec()));
        }
        Ok(())
    })
}

impl KeyedProcessor for Stateless {
    type Input = Vec<Output>;
    type State = ();
    const STATEFUL: bool = false;

    fn decode(&self, record: &RecordRef<'_>) -> Result<(String, Vec<Output>)> {
        // Most steps emit one record: room for one, not the four of a
        // first push.
        let mut out = Vec::with_capacity(1);
        (self.step)(record, &mut out)?;
        let key = match record.key.map(std::str::from_utf8) {
            Some(Ok(k)) => k.to_owned(),
            Some(Err(_)) => String::from_utf8_lossy(record.key.unwrap_or_default()).into_owned(),
            None => String::new(),
        };
        Ok((key, out))
    }

    fn process(
        &mut self,
        _: &str,
        outputs: &Vec<Output>,
        _: &mut (),
        ctx: &mut Context<'_>,
    ) -> Result<()> {
        for o in outputs {
            let headers = o.headers.as_ref().map_or(ctx.headers(), Headers::from);
            ctx.send_bytes(&self.to, o.key.as_deref(), &o.value, headers)?;
        }
        Ok(())
    }
}
