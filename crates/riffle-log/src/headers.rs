//! Record headers: Kafka's ordered list of (name, optional value) pairs.
//!
//! Names are UTF-8 strings and may repeat; a value is any bytes, or none at
//! all (null, which is not the same as empty). Most records are read by code
//! that never looks at their headers, so [`Headers`] is a view over wherever
//! the headers already are (librdkafka's message, the embedded log's batch,
//! a caller's slice) and decodes them only while it is iterated: reading a
//! record allocates and copies nothing for its headers.

use std::ffi::CStr;
use std::fmt;

use rdkafka::bindings as rd;
use rdkafka::message::{BorrowedHeaders, BorrowedMessage, Message};

/// One header, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header<'a> {
    pub name: &'a str,
    /// `None` is Kafka's null value, distinct from an empty one.
    pub value: Option<&'a [u8]>,
}

impl<'a> Header<'a> {
    pub fn new(name: &'a str, value: Option<&'a [u8]>) -> Self {
        Self { name, value }
    }

    /// The value as UTF-8, if there is one and it is valid UTF-8.
    pub fn value_str(&self) -> Option<&'a str> {
        self.value.and_then(|v| std::str::from_utf8(v).ok())
    }

    pub fn to_owned(&self) -> OwnedHeader {
        OwnedHeader {
            name: self.name.to_owned(),
            value: self.value.map(<[u8]>::to_vec),
        }
    }
}

/// One header, owned: for records kept beyond the call that read them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OwnedHeader {
    pub name: String,
    pub value: Option<Vec<u8>>,
}

impl OwnedHeader {
    pub fn new(name: impl Into<String>, value: Option<impl Into<Vec<u8>>>) -> Self {
        Self {
            name: name.into(),
            value: value.map(Into::into),
        }
    }

    pub fn as_ref(&self) -> Header<'_> {
        Header {
            name: &self.name,
            value: self.value.as_deref(),
        }
    }
}

/// The headers of a record: a cheap, copyable view that decodes lazily.
///
/// Build one from a slice with `Headers::from(&headers[..])` (or
/// [`Headers::EMPTY`]) to write records; consumers hand out views over the
/// backend's own buffers, which can be passed straight to a producer to
/// forward the headers without copying them first.
#[derive(Clone, Copy)]
pub struct Headers<'a>(Repr<'a>);

#[derive(Clone, Copy)]
enum Repr<'a> {
    Slice(&'a [Header<'a>]),
    Owned(&'a [OwnedHeader]),
    /// The embedded log's encoding (see [`encode`]), checked when written.
    Encoded(&'a [u8]),
    /// A message from librdkafka, whose headers it parses (into a list it
    /// allocates) only when first asked for them: so only when looked at.
    Kafka(&'a BorrowedMessage<'a>),
}

impl Default for Headers<'_> {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl<'a> From<&'a [Header<'a>]> for Headers<'a> {
    fn from(headers: &'a [Header<'a>]) -> Self {
        Headers(Repr::Slice(headers))
    }
}

impl<'a, const N: usize> From<&'a [Header<'a>; N]> for Headers<'a> {
    fn from(headers: &'a [Header<'a>; N]) -> Self {
        Headers(Repr::Slice(headers))
    }
}

impl<'a> From<&'a [OwnedHeader]> for Headers<'a> {
    fn from(headers: &'a [OwnedHeader]) -> Self {
        Headers(Repr::Owned(headers))
    }
}

impl<'a> From<&'a Vec<OwnedHeader>> for Headers<'a> {
    fn from(headers: &'a Vec<OwnedHeader>) -> Self {
        Headers(Repr::Owned(headers))
    }
}

impl<'a> Headers<'a> {
    /// No headers.
    pub const EMPTY: Headers<'static> = Headers(Repr::Slice(&[]));

    /// Headers stored in the embedded log's encoding, already validated.
    pub(crate) fn encoded(bytes: &'a [u8]) -> Self {
        Headers(Repr::Encoded(bytes))
    }

    /// The headers of a message from librdkafka, left unparsed until used.
    pub(crate) fn kafka(message: &'a BorrowedMessage<'a>) -> Self {
        Headers(Repr::Kafka(message))
    }

    pub fn is_empty(&self) -> bool {
        match self.0 {
            Repr::Slice(s) => s.is_empty(),
            Repr::Owned(s) => s.is_empty(),
            Repr::Encoded(b) => b.is_empty(),
            Repr::Kafka(m) => kafka_has_none(m) || m.headers().is_none_or(|h| kafka_count(h) == 0),
        }
    }

    /// How many headers there are (counting repeated names each time).
    pub fn len(&self) -> usize {
        match self.0 {
            Repr::Slice(s) => s.len(),
            Repr::Owned(s) => s.len(),
            Repr::Encoded(_) => self.iter().count(),
            Repr::Kafka(m) if kafka_has_none(m) => 0,
            Repr::Kafka(m) => m.headers().map_or(0, kafka_count),
        }
    }

    /// The headers in order.
    pub fn iter(&self) -> HeadersIter<'a> {
        HeadersIter(match self.0 {
            Repr::Slice(s) => IterRepr::Slice(s.iter()),
            Repr::Owned(s) => IterRepr::Owned(s.iter()),
            Repr::Encoded(b) => IterRepr::Encoded(b),
            Repr::Kafka(m) if kafka_has_none(m) => IterRepr::Slice([].iter()),
            Repr::Kafka(m) => match m.headers() {
                Some(h) => IterRepr::Kafka {
                    headers: h,
                    next: 0,
                    count: kafka_count(h),
                },
                None => IterRepr::Slice([].iter()),
            },
        })
    }

    /// The last header named `name`: with repeated names the last one is
    /// the current one, as in Kafka's Java client (`lastHeader`).
    pub fn last(&self, name: &str) -> Option<Header<'a>> {
        self.iter().filter(|h| h.name == name).last()
    }

    /// An owned copy, for records kept beyond the call that read them.
    pub fn to_vec(&self) -> Vec<OwnedHeader> {
        if self.is_empty() {
            return Vec::new();
        }
        self.iter().map(|h| h.to_owned()).collect()
    }
}

impl<'a> IntoIterator for Headers<'a> {
    type Item = Header<'a>;
    type IntoIter = HeadersIter<'a>;
    fn into_iter(self) -> HeadersIter<'a> {
        self.iter()
    }
}

impl PartialEq for Headers<'_> {
    /// Same headers in the same order, wherever they are stored.
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Headers<'_> {}

impl fmt::Debug for Headers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Iterates over [`Headers`], decoding each header as it is reached.
pub struct HeadersIter<'a>(IterRepr<'a>);

enum IterRepr<'a> {
    Slice(std::slice::Iter<'a, Header<'a>>),
    Owned(std::slice::Iter<'a, OwnedHeader>),
    Encoded(&'a [u8]),
    Kafka {
        headers: &'a BorrowedHeaders,
        next: usize,
        count: usize,
    },
}

impl<'a> Iterator for HeadersIter<'a> {
    type Item = Header<'a>;

    fn next(&mut self) -> Option<Header<'a>> {
        match &mut self.0 {
            IterRepr::Slice(it) => it.next().copied(),
            IterRepr::Owned(it) => it.next().map(OwnedHeader::as_ref),
            IterRepr::Encoded(rest) => {
                let (header, tail) = decode_one(rest)?;
                *rest = tail;
                Some(header)
            }
            IterRepr::Kafka {
                headers,
                next,
                count,
            } => {
                if *next >= *count {
                    return None;
                }
                let header = kafka_get(headers, *next);
                *next += 1;
                header
            }
        }
    }
}

/// Stands in for a header name that is not UTF-8, which librdkafka accepts
/// from other clients but Kafka's protocol (and this API) do not.
const NOT_UTF8: &str = "\u{FFFD}";

fn kafka_ptr(h: &BorrowedHeaders) -> *const rd::rd_kafka_headers_t {
    // `BorrowedHeaders` is rdkafka's zero-sized stand-in for librdkafka's
    // `rd_kafka_headers_t`: a reference to it is the native pointer (rdkafka
    // makes one by casting that pointer, and casts it back the same way).
    h as *const BorrowedHeaders as *const rd::rd_kafka_headers_t
}

/// Whether a consumed record certainly has no headers, told without asking
/// librdkafka: asking parses them, and for a record without any that means
/// a parse buffer allocated, zeroed and freed each time (librdkafka keeps
/// nothing to say "none"), some 100 ns: a tenth of the work of passing a
/// record on.
///
/// A Kafka record (format v2) is `key length, key, value length, value,
/// header count, headers`, the lengths and the count as zigzag varints, and
/// librdkafka hands out keys and values where they lie in the fetched batch.
/// When the bytes between the end of the key and the start of the value are
/// exactly the varint of the value's length, the record lies there in that
/// layout, and the byte after the value starts its header count: 0 is none.
/// Anything else (no key, a null value, older formats, whose lengths are
/// 4-byte integers) is left to librdkafka.
fn kafka_has_none(m: &BorrowedMessage<'_>) -> bool {
    // SAFETY: the message librdkafka handed out, alive while borrowed.
    let raw = unsafe { &*m.ptr() };
    if raw.key.is_null() || raw.payload.is_null() {
        return false;
    }
    let key_end = raw.key as usize + raw.key_len;
    let value = raw.payload as *const u8;
    let gap = (value as usize).wrapping_sub(key_end);
    // A varint of a length takes 1 to 5 bytes; two separate allocations
    // never lie that close (an allocator's own header is longer), nor do
    // key and value copied side by side (no gap).
    if !(1..=5).contains(&gap) {
        return false;
    }
    // SAFETY: the `gap` bytes between the key and the value, in one buffer
    // (see above).
    let between = unsafe { std::slice::from_raw_parts(key_end as *const u8, gap) };
    let mut n = 0u64;
    for (i, b) in between.iter().enumerate() {
        n |= u64::from(b & 0x7f) << (7 * i);
        if (b & 0x80 == 0) != (i == gap - 1) {
            return false;
        }
    }
    let length = (n >> 1) as i64 ^ -((n & 1) as i64);
    if length != raw.len as i64 {
        return false;
    }
    // SAFETY: the record's header count follows its value (checked to lie
    // in place in a v2 record just above).
    unsafe { *value.add(raw.len) == 0 }
}

fn kafka_count(h: &BorrowedHeaders) -> usize {
    // SAFETY: a valid header list, alive as long as `h` borrows the message.
    unsafe { rd::rd_kafka_header_cnt(kafka_ptr(h)) }
}

/// One header of a librdkafka header list. Not rdkafka's own `try_get`: it
/// panics on a name that is not UTF-8, which a record from another client
/// can have; this reads such a name as U+FFFD.
fn kafka_get(h: &BorrowedHeaders, idx: usize) -> Option<Header<'_>> {
    let mut name = std::ptr::null();
    let mut value = std::ptr::null();
    let mut size = 0usize;
    // SAFETY: librdkafka fills the pointers with data owned by the header
    // list, which lives as long as the message `h` is borrowed from.
    let err =
        unsafe { rd::rd_kafka_header_get_all(kafka_ptr(h), idx, &mut name, &mut value, &mut size) };
    if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
        return None;
    }
    // SAFETY: librdkafka keeps names NUL-terminated.
    let name = unsafe { CStr::from_ptr(name) }.to_bytes();
    let value = if value.is_null() {
        None
    } else if size == 0 {
        Some(&[][..])
    } else {
        // SAFETY: `value` points at `size` bytes owned by the header list.
        Some(unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) })
    };
    Some(Header {
        name: std::str::from_utf8(name).unwrap_or(NOT_UTF8),
        value,
    })
}

// ---------------------------------------------------------------------------
// The embedded log's encoding: per header, little-endian
//
//   u32  name length, name bytes (UTF-8)
//   u32  value length, or 0xFFFF_FFFF for a null value; value bytes
//
// with nothing before or after: the block's own length is kept by its
// container (a frame, an index entry).

const NULL_VALUE: u32 = u32::MAX;

/// Bytes `headers` take encoded, or `None` if a length does not fit in the
/// encoding's `u32` fields.
pub(crate) fn encoded_len(headers: Headers<'_>) -> Option<usize> {
    if let Repr::Encoded(bytes) = headers.0 {
        return Some(bytes.len());
    }
    let mut n = 0usize;
    for h in headers.iter() {
        let value = h.value.map_or(0, <[u8]>::len);
        if h.name.len() >= NULL_VALUE as usize || value >= NULL_VALUE as usize {
            return None;
        }
        n = n.checked_add(8 + h.name.len() + value)?;
    }
    Some(n)
}

/// Appends the encoding of `headers` (checked with [`encoded_len`]).
pub(crate) fn encode(headers: Headers<'_>, out: &mut Vec<u8>) {
    if let Repr::Encoded(bytes) = headers.0 {
        out.extend_from_slice(bytes);
        return;
    }
    for h in headers.iter() {
        out.extend_from_slice(&(h.name.len() as u32).to_le_bytes());
        out.extend_from_slice(h.name.as_bytes());
        match h.value {
            Some(v) => {
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                out.extend_from_slice(v);
            }
            None => out.extend_from_slice(&NULL_VALUE.to_le_bytes()),
        }
    }
}

/// Whether `bytes` are a whole number of well-formed headers.
pub(crate) fn valid_encoding(mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        match decode_one(bytes) {
            Some((_, rest)) => bytes = rest,
            None => return false,
        }
    }
    true
}

fn split_u32(b: &[u8]) -> Option<(u32, &[u8])> {
    let (n, rest) = b.split_first_chunk::<4>()?;
    Some((u32::from_le_bytes(*n), rest))
}

fn decode_one(b: &[u8]) -> Option<(Header<'_>, &[u8])> {
    let (name_len, rest) = split_u32(b)?;
    let (name, rest) = rest.split_at_checked(name_len as usize)?;
    let name = std::str::from_utf8(name).ok()?;
    let (value_len, rest) = split_u32(rest)?;
    let (value, rest) = if value_len == NULL_VALUE {
        (None, rest)
    } else {
        let (v, rest) = rest.split_at_checked(value_len as usize)?;
        (Some(v), rest)
    };
    Some((Header { name, value }, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_order_repeats_nulls_and_binary() {
        let list = [
            Header::new("a", Some(b"1")),
            Header::new("a", Some(b"2")),
            Header::new("null", None),
            Header::new("empty", Some(b"")),
            Header::new("bin", Some(&[0, 255, 10, 13])),
            Header::new("", Some(b"unnamed")),
        ];
        let headers = Headers::from(&list);
        let mut buf = Vec::new();
        encode(headers, &mut buf);
        assert_eq!(encoded_len(headers), Some(buf.len()));
        assert!(valid_encoding(&buf));
        let decoded = Headers::encoded(&buf);
        assert_eq!(decoded, headers);
        assert_eq!(decoded.len(), 6);
        assert_eq!(decoded.last("a").and_then(|h| h.value), Some(&b"2"[..]));
        assert_eq!(decoded.last("null"), Some(Header::new("null", None)));
        assert_eq!(decoded.last("missing"), None);
        let owned = decoded.to_vec();
        assert_eq!(Headers::from(&owned), headers);
        assert!(
            !valid_encoding(&buf[..buf.len() - 1]),
            "a cut block is refused"
        );
        assert!(Headers::EMPTY.is_empty() && Headers::EMPTY.to_vec().is_empty());
        assert_ne!(Headers::EMPTY, headers);
    }
}
