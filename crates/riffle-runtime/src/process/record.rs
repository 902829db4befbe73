//! The record a connector source reads and a sink writes, here because a
//! processor's [`Context`](super::Context) collects what it sends as these
//! when it runs in a pipeline (`riffle::connect` re-exports it, its home
//! for users).

use crate::log::Headers;

/// One record crossing a connector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Where the record came from: the topic, subject, queue, stream or path
    /// the source read it on. For a sink, where the processor sent it (a
    /// sink configured with a fixed destination, or a template such as
    /// `heaters/{key}/command`, uses that instead).
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    /// Name and value pairs, for systems that carry them (MQTT 5 user
    /// properties, NATS and HTTP headers, AMQP headers, Redis stream fields).
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Record {
    pub fn new(topic: impl Into<String>, key: Option<&[u8]>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            topic: topic.into(),
            key: key.map(<[u8]>::to_vec),
            value: value.into(),
            headers: Vec::new(),
        }
    }

    /// The key as UTF-8, if there is a key and it is valid UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        self.key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
    }
}

/// Headers as a connector record holds them: a null value (which connector
/// systems have no notion of) becomes an empty one.
pub fn connect_headers(headers: Headers<'_>) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|h| (h.name.to_owned(), h.value.unwrap_or_default().to_vec()))
        .collect()
}
