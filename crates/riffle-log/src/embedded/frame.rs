//! The frame of one record in a segment file, little-endian:
//!
//! ```text
//! u32  length of the rest after the CRC: 16 + key + value + header bytes
//! u32  CRC-32/IEEE of those `length` bytes
//! i64  timestamp, ms since the Unix epoch
//! u32  key length, or 0xFFFF_FFFF for no key (an empty key is 0)
//! u32  value length
//!      key bytes, value bytes
//!      header bytes: whatever the length leaves after the value, in the
//!      encoding of `log::headers` (per header: u32 name length, name,
//!      u32 value length or 0xFFFF_FFFF for null, value)
//! ```
//!
//! Format 1 (before headers) had no header bytes: its frames are exactly the
//! frames of format 2 for records without headers, so a format-1 segment
//! reads as records without headers and header-less records cost no bytes.
//!
//! A record's offset is not stored: it is the segment's base offset (the file
//! name) plus the frame's position in the file.

use std::fmt;

use crate::headers::{encode, encoded_len, valid_encoding};
use crate::Headers;
use riffle_base::crc32::crc32;

/// Bytes before the key: length, CRC, timestamp, key length, value length.
pub(super) const FRAME_HEADER: usize = 24;
/// Bytes of a frame covered by its length field (after length and CRC).
const BODY_HEADER: usize = FRAME_HEADER - 8;
/// Key length of a record without a key (as opposed to an empty key).
const NO_KEY: u32 = u32::MAX;

/// Appends the frame of one record to `out`. The caller has checked with
/// [`frame_fits`] that the frame's length fits in a `u32`.
pub(super) fn encode_frame(
    out: &mut Vec<u8>,
    key: Option<&[u8]>,
    value: &[u8],
    headers: Headers<'_>,
    timestamp: i64,
) {
    let start = out.len();
    let key_bytes = key.map_or(0, <[u8]>::len);
    let header_bytes = encoded_len(headers).expect("checked by frame_fits");
    let body = BODY_HEADER + key_bytes + value.len() + header_bytes;
    out.reserve(8 + body);
    out.extend_from_slice(&(body as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&timestamp.to_le_bytes());
    out.extend_from_slice(&key.map_or(NO_KEY, |k| k.len() as u32).to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    if let Some(k) = key {
        out.extend_from_slice(k);
    }
    out.extend_from_slice(value);
    encode(headers, out);
    let crc = crc32(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Whether a record of this size can be framed (its length fits in a u32).
pub(super) fn frame_fits(key: Option<&[u8]>, value: &[u8], headers: Headers<'_>) -> bool {
    let Some(header_bytes) = encoded_len(headers) else {
        return false;
    };
    let body = BODY_HEADER as u64
        + key.map_or(0, |k| k.len() as u64)
        + value.len() as u64
        + header_bytes as u64;
    body <= u64::from(u32::MAX)
}

/// A record decoded from a segment file, borrowing the file's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Frame<'a> {
    pub(super) key: Option<&'a [u8]>,
    pub(super) value: &'a [u8],
    /// Encoded headers, checked; empty for none.
    pub(super) headers: &'a [u8],
    pub(super) timestamp: i64,
}

/// Why the bytes at some position are not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Damage {
    /// The file ends inside the frame.
    Partial { have: usize, need: usize },
    /// The length fields contradict each other.
    BadLength,
    /// The checksum does not match.
    BadCrc,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::Partial { have, need } => {
                write!(f, "partial frame ({have} of {need} bytes)")
            }
            Damage::BadLength => f.write_str("frame lengths are inconsistent"),
            Damage::BadCrc => f.write_str("CRC mismatch"),
        }
    }
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Decodes the frame at the start of `buf` and returns it with its length.
pub(super) fn decode_frame(buf: &[u8]) -> std::result::Result<(Frame<'_>, usize), Damage> {
    if buf.len() < FRAME_HEADER {
        // Too short for a header; a length that cannot be valid is damage
        // rather than a partial frame.
        if buf.len() >= 4 && (le_u32(buf) as usize) < BODY_HEADER {
            return Err(Damage::BadLength);
        }
        return Err(Damage::Partial {
            have: buf.len(),
            need: FRAME_HEADER,
        });
    }
    let body = le_u32(buf) as usize;
    if body < BODY_HEADER {
        return Err(Damage::BadLength);
    }
    let total = 8 + body;
    if buf.len() < total {
        return Err(Damage::Partial {
            have: buf.len(),
            need: total,
        });
    }
    if crc32(&buf[8..total]) != le_u32(&buf[4..]) {
        return Err(Damage::BadCrc);
    }
    let timestamp = i64::from_le_bytes(buf[8..16].try_into().expect("8 bytes"));
    let key_len = le_u32(&buf[16..]);
    let value_len = le_u32(&buf[20..]) as usize;
    let key_bytes = if key_len == NO_KEY {
        0
    } else {
        key_len as usize
    };
    let Some(header_bytes) = body.checked_sub(BODY_HEADER + key_bytes + value_len) else {
        return Err(Damage::BadLength);
    };
    let value_start = FRAME_HEADER + key_bytes;
    let headers_start = value_start + value_len;
    let headers = &buf[headers_start..headers_start + header_bytes];
    if !valid_encoding(headers) {
        return Err(Damage::BadLength);
    }
    let key = (key_len != NO_KEY).then(|| &buf[FRAME_HEADER..value_start]);
    let frame = Frame {
        key,
        value: &buf[value_start..headers_start],
        headers,
        timestamp,
    };
    Ok((frame, total))
}

/// Decodes the frames of a segment file's bytes, stopping at the first that
/// is damaged.
pub(super) fn scan_segment(
    bytes: &[u8],
    mut each: impl FnMut(Frame<'_>),
) -> (usize, Option<Damage>) {
    let mut pos = 0;
    while pos < bytes.len() {
        match decode_frame(&bytes[pos..]) {
            Ok((frame, n)) => {
                each(frame);
                pos += n;
            }
            Err(damage) => return (pos, Some(damage)),
        }
    }
    (pos, None)
}

/// The bytes format 1 wrote for a record, spelled out by hand: a data
/// directory written before headers existed must still read.
#[cfg(test)]
pub(super) fn format1_frame(key: Option<&[u8]>, value: &[u8], timestamp: i64) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&timestamp.to_le_bytes());
    body.extend_from_slice(&key.map_or(u32::MAX, |k| k.len() as u32).to_le_bytes());
    body.extend_from_slice(&(value.len() as u32).to_le_bytes());
    body.extend_from_slice(key.unwrap_or_default());
    body.extend_from_slice(value);
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&crc32(&body).to_le_bytes());
    frame.extend_from_slice(&body);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Header;

    #[test]
    fn frames_round_trip_and_damage_is_classified() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, Some(b"key"), b"value", Headers::EMPTY, 42);
        encode_frame(&mut buf, None, b"", Headers::EMPTY, -1);
        encode_frame(&mut buf, Some(b""), b"v", Headers::EMPTY, 7);
        let mut frames = Vec::new();
        let (valid, damage) = scan_segment(&buf, |f| {
            assert!(f.headers.is_empty());
            frames.push((f.key.map(<[u8]>::to_vec), f.value.to_vec(), f.timestamp))
        });
        assert_eq!((valid, damage), (buf.len(), None));
        assert_eq!(
            frames,
            [
                (Some(b"key".to_vec()), b"value".to_vec(), 42),
                (None, Vec::new(), -1),
                (Some(Vec::new()), b"v".to_vec(), 7),
            ]
        );
        let first = FRAME_HEADER + 3 + 5;
        assert_eq!(
            decode_frame(&buf[..first - 1]).unwrap_err(),
            Damage::Partial {
                have: first - 1,
                need: first
            }
        );
        let mut flipped = buf.clone();
        flipped[first - 1] ^= 0x20;
        assert_eq!(decode_frame(&flipped).unwrap_err(), Damage::BadCrc);
        assert_eq!(
            decode_frame(&[0u8; 30]).unwrap_err(),
            Damage::BadLength,
            "zero-filled space is not a frame"
        );
    }

    #[test]
    fn frames_carry_headers_and_format_1_frames_read_without_them() {
        let old = format1_frame(Some(b"k"), b"old", 5);
        let mut plain = Vec::new();
        encode_frame(&mut plain, Some(b"k"), b"old", Headers::EMPTY, 5);
        assert_eq!(plain, old, "a record without headers is framed as before");

        let list = [
            Header::new("trace", Some(b"abc")),
            Header::new("trace", None),
            Header::new("bin", Some(&[0, 0xff])),
        ];
        let mut buf = old.clone();
        encode_frame(&mut buf, None, b"new", Headers::from(&list), 6);
        let mut seen = Vec::new();
        let (valid, damage) = scan_segment(&buf, |f| {
            seen.push((f.value.to_vec(), Headers::encoded(f.headers).to_vec()))
        });
        assert_eq!((valid, damage), (buf.len(), None));
        assert_eq!(seen[0], (b"old".to_vec(), Vec::new()));
        assert_eq!(seen[1].0, b"new");
        assert_eq!(Headers::from(&seen[1].1), Headers::from(&list));

        // Header bytes that do not parse are damage, even with a good CRC.
        let mut bad = Vec::new();
        encode_frame(&mut bad, None, b"v", Headers::from(&list[..1]), 1);
        let body_len = bad.len() - 8;
        bad.truncate(bad.len() - 1);
        bad[..4].copy_from_slice(&((body_len - 1) as u32).to_le_bytes());
        let crc = crc32(&bad[8..]);
        bad[4..8].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_frame(&bad).unwrap_err(), Damage::BadLength);
    }
}
