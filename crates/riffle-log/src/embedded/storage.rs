//! The records of one partition, and the batch a consumer copies them into.
//!
//! Records are packed into segments (one byte buffer plus a fixed-size index
//! entry per record) rather than allocated one by one: an append is a copy
//! without allocation, and a consumer takes a run of records out with one
//! `memcpy`, so the log's lock is held only briefly and the consumer visits
//! its batch after releasing it.
//!
//! In a persistent log each segment maps to one file (see `persist`): an
//! append is written through to the current segment's file before it is
//! added in memory, a new segment starts a new file, and opening the log
//! rebuilds the segments from their files. The segments in memory are then a
//! complete cache of the files, so reads never touch the disk.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use super::frame::scan_segment;
use super::segment::{io_error, segment_base, truncate_segment, SegmentWriter, Syncer};
use crate::error::{Error, Result};
use crate::headers::{encode, encoded_len};
use crate::Headers;

/// A segment is closed once it holds this many bytes of keys and values.
const SEGMENT_BYTES: usize = 64 << 20;

/// Marks a record without a key (as opposed to an empty key) in
/// [`Entry::key_len`]; keys are shorter.
const NO_KEY: u32 = 0x7FFF_FFFF;
/// Set in [`Entry::key_len`] for a record with headers: their length (u32,
/// little-endian) follows the value in the buffer, then the headers. A flag
/// rather than a length field keeps the entry at 24 bytes, as most records
/// have no headers.
const HAS_HEADERS: u32 = 1 << 31;

/// Checks that a record fits the index: a key shorter than 2 GiB - 1, a
/// value and headers shorter than 4 GiB. Returns the headers' encoded size.
pub(super) fn check_sizes(key: Option<&[u8]>, value: &[u8], headers: Headers<'_>) -> Result<usize> {
    let headers_len = encoded_len(headers).filter(|&n| u32::try_from(n).is_ok());
    match headers_len {
        Some(n)
            if key.is_none_or(|k| k.len() < NO_KEY as usize) && value.len() < u32::MAX as usize =>
        {
            Ok(n)
        }
        _ => Err(Error::InvalidInput(
            "record key is 2 GiB or larger, or its value or headers are 4 GiB or larger".into(),
        )),
    }
}

/// Where a record's bytes are in its buffer: the key (if any), the value,
/// then, for a record with headers, their length and encoding.
#[derive(Debug, Clone, Copy)]
struct Entry {
    start: usize,
    /// The key's length or [`NO_KEY`], with [`HAS_HEADERS`].
    key_len: u32,
    value_len: u32,
    timestamp: i64,
}

impl Entry {
    fn key_field(&self) -> u32 {
        self.key_len & !HAS_HEADERS
    }

    fn key_bytes(&self) -> usize {
        match self.key_field() {
            NO_KEY => 0,
            n => n as usize,
        }
    }

    fn value_end(&self) -> usize {
        self.start + self.key_bytes() + self.value_len as usize
    }

    /// The encoded headers' bounds, if there are any.
    fn headers(&self, data: &[u8]) -> Option<(usize, usize)> {
        if self.key_len & HAS_HEADERS == 0 {
            return None;
        }
        let at = self.value_end();
        let len = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"));
        Some((at + 4, at + 4 + len as usize))
    }

    fn end(&self, data: &[u8]) -> usize {
        self.headers(data).map_or(self.value_end(), |(_, end)| end)
    }

    fn split<'a>(&self, data: &'a [u8]) -> (Option<&'a [u8]>, &'a [u8], Headers<'a>) {
        let value_start = self.start + self.key_bytes();
        let key = (self.key_field() != NO_KEY).then(|| &data[self.start..value_start]);
        let headers = match self.headers(data) {
            Some((from, to)) => Headers::encoded(&data[from..to]),
            None => Headers::EMPTY,
        };
        (key, &data[value_start..self.value_end()], headers)
    }
}

#[derive(Debug)]
struct Segment {
    base: i64,
    data: Vec<u8>,
    index: Vec<Entry>,
}

impl Segment {
    fn new(base: i64) -> Self {
        Self {
            base,
            data: Vec::new(),
            index: Vec::new(),
        }
    }

    /// Adds a record whose sizes have been checked with [`check_sizes`];
    /// `headers_len` is the headers' encoded size.
    fn push(
        &mut self,
        key: Option<&[u8]>,
        value: &[u8],
        headers: Headers<'_>,
        headers_len: usize,
        timestamp: i64,
    ) {
        let start = self.data.len();
        let mut key_len = key.map_or(NO_KEY, |k| k.len() as u32);
        if let Some(k) = key {
            self.data.extend_from_slice(k);
        }
        self.data.extend_from_slice(value);
        if headers_len > 0 {
            key_len |= HAS_HEADERS;
            self.data
                .extend_from_slice(&(headers_len as u32).to_le_bytes());
            encode(headers, &mut self.data);
        }
        self.index.push(Entry {
            start,
            key_len,
            value_len: value.len() as u32,
            timestamp,
        });
    }
}

/// One partition: an append-only sequence of records with dense offsets.
#[derive(Debug, Default)]
pub(super) struct PartitionLog {
    segments: Vec<Segment>,
    high: i64,
    /// Where appends are written through to, in a persistent log.
    files: Option<SegmentWriter>,
}

impl PartitionLog {
    /// An empty partition of a persistent log, whose segment files go to
    /// `dir` (which exists).
    pub(super) fn persistent(dir: PathBuf, sync: Arc<Syncer>) -> Self {
        Self {
            files: Some(SegmentWriter::new(dir, sync)),
            ..Self::default()
        }
    }

    /// Loads a partition of a persistent log from its segment files, in
    /// offset order. Every frame's CRC is checked. A damaged tail of the last
    /// segment (a write torn by a crash) is cut off with a warning; damage
    /// anywhere else, or segments whose offsets do not follow on, is an
    /// error, since records after it would be lost.
    pub(super) fn recover(dir: PathBuf, sync: Arc<Syncer>) -> Result<Self> {
        let mut files = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| io_error("read", &dir, e))? {
            let entry = entry.map_err(|e| io_error("read", &dir, e))?;
            let name = entry.file_name();
            match name.to_str().and_then(segment_base) {
                Some(base) => files.push((base, entry.path())),
                None => {
                    tracing::warn!(path = %entry.path().display(), "embedded log: ignoring a file that is not a segment")
                }
            }
        }
        files.sort_unstable();
        let mut log = Self::default();
        let mut writer = None;
        let count = files.len();
        for (i, (base, path)) in files.into_iter().enumerate() {
            let last = i + 1 == count;
            if i == 0 {
                log.high = base;
            } else if base != log.high {
                return Err(Error::Corrupt {
                    message: format!(
                        "embedded log: segment {} starts at offset {base}, but the segment before it ends at {}",
                        path.display(),
                        log.high
                    ),
                    path,
                });
            }
            let bytes = fs::read(&path).map_err(|e| io_error("read", &path, e))?;
            let mut seg = Segment::new(base);
            seg.data.reserve(bytes.len());
            let mut too_large = None;
            let (valid, damage) = scan_segment(&bytes, |f| {
                let headers = Headers::encoded(f.headers);
                match check_sizes(f.key, f.value, headers) {
                    Ok(n) => seg.push(f.key, f.value, headers, n, f.timestamp),
                    // Only a key of 2 GiB or more, which the frame format
                    // allows and the index does not.
                    Err(e) => {
                        too_large.get_or_insert(e);
                    }
                }
            });
            drop(bytes);
            if let Some(e) = too_large {
                return Err(Error::Corrupt {
                    message: format!("embedded log: segment {}: {e}", path.display()),
                    path,
                });
            }
            if let Some(damage) = damage {
                if !last {
                    return Err(Error::Corrupt {
                        message: format!(
                            "embedded log: segment {} is damaged at byte {valid} ({damage}), and it is not the last segment of its partition",
                            path.display()
                        ),
                        path,
                    });
                }
                tracing::warn!(file = %path.display(), offset = valid, %damage,
                    "embedded log: truncating a torn or corrupt tail left by a crash");
                truncate_segment(&sync, &path, valid as u64)?;
            }
            seg.data.shrink_to_fit();
            log.high += seg.index.len() as i64;
            if last {
                writer = Some(SegmentWriter::resume(
                    dir.clone(),
                    Arc::clone(&sync),
                    path,
                    valid as u64,
                )?);
            }
            // An empty segment is kept only last, where appends continue.
            if last || !seg.index.is_empty() {
                log.segments.push(seg);
            }
        }
        log.files = Some(writer.unwrap_or_else(|| SegmentWriter::new(dir, sync)));
        Ok(log)
    }

    /// Offset of the first record still held.
    pub(super) fn low(&self) -> i64 {
        self.segments.first().map_or(self.high, |s| s.base)
    }

    /// Offset the next record will get.
    pub(super) fn high(&self) -> i64 {
        self.high
    }

    /// Appends a record and returns its offset. In a persistent log the
    /// record is written to its segment file first, and not added if that
    /// fails.
    pub(super) fn append(
        &mut self,
        key: Option<&[u8]>,
        value: &[u8],
        headers: Headers<'_>,
        timestamp: i64,
    ) -> Result<i64> {
        let headers_len = check_sizes(key, value, headers)?;
        let size = key.map_or(0, <[u8]>::len) + value.len() + headers_len;
        let roll = match self.segments.last() {
            None => true,
            Some(s) => !s.index.is_empty() && s.data.len() + size > SEGMENT_BYTES,
        };
        if roll {
            if let Some(files) = &mut self.files {
                files.roll(self.high)?;
            }
            self.segments.push(Segment::new(self.high));
        }
        if let Some(files) = &mut self.files {
            files.append(key, value, headers, timestamp)?;
        }
        let seg = self
            .segments
            .last_mut()
            .expect("a segment was just ensured");
        seg.push(key, value, headers, headers_len, timestamp);
        let offset = self.high;
        self.high += 1;
        Ok(offset)
    }

    /// The offset of the first record with a timestamp at or after
    /// `timestamp`, as Kafka's ListOffsets by time answers; a linear scan,
    /// since it serves administration, not the hot path.
    pub(super) fn offset_for_time(&self, timestamp: i64) -> Option<i64> {
        self.segments.iter().find_map(|seg| {
            seg.index
                .iter()
                .position(|e| e.timestamp >= timestamp)
                .map(|i| seg.base + i as i64)
        })
    }

    /// Copies up to `max` records from `offset` on into `out`, tagged with
    /// `slot` (the consumer's index of this partition), and returns how many.
    pub(super) fn read(&self, offset: i64, max: usize, out: &mut Batch, slot: usize) -> usize {
        if max == 0 || offset < self.low() || offset >= self.high {
            return 0;
        }
        let mut seg_idx = self.segments.partition_point(|s| s.base <= offset) - 1;
        let mut offset = offset;
        let mut copied = 0;
        while copied < max && seg_idx < self.segments.len() {
            let seg = &self.segments[seg_idx];
            let first = (offset - seg.base) as usize;
            let last = seg.index.len().min(first + (max - copied));
            if first < last {
                copied += out.copy_run(seg, first, last, offset, slot);
                offset += (last - first) as i64;
            }
            seg_idx += 1;
        }
        copied
    }
}

/// A record in a [`Batch`]; the partition is known from the consumer's slot.
#[derive(Debug, Clone, Copy)]
pub(super) struct BatchRecord {
    pub(super) slot: usize,
    pub(super) offset: i64,
    entry: Entry,
}

/// Records copied out of the log, to be visited without holding its lock.
/// Reused across polls, so steady-state consuming does not allocate.
#[derive(Debug, Default)]
pub(super) struct Batch {
    data: Vec<u8>,
    records: Vec<BatchRecord>,
}

impl Batch {
    pub(super) fn clear(&mut self) {
        self.data.clear();
        self.records.clear();
    }

    pub(super) fn len(&self) -> usize {
        self.records.len()
    }

    /// Copies the records `first..last` of `seg` with one `memcpy`.
    fn copy_run(
        &mut self,
        seg: &Segment,
        first: usize,
        last: usize,
        offset: i64,
        slot: usize,
    ) -> usize {
        let from = seg.index[first].start;
        let to = seg.index[last - 1].end(&seg.data);
        let shift = self.data.len() as isize - from as isize;
        self.data.extend_from_slice(&seg.data[from..to]);
        self.records.extend(
            seg.index[first..last]
                .iter()
                .enumerate()
                .map(|(i, e)| BatchRecord {
                    slot,
                    offset: offset + i as i64,
                    entry: Entry {
                        start: (e.start as isize + shift) as usize,
                        ..*e
                    },
                }),
        );
        last - first
    }

    /// Each record with its key, value, headers and timestamp.
    pub(super) fn iter(
        &self,
    ) -> impl Iterator<Item = (&BatchRecord, Option<&[u8]>, &[u8], Headers<'_>, i64)> {
        self.records.iter().map(|r| {
            let (key, value, headers) = r.entry.split(&self.data);
            (r, key, value, headers, r.entry.timestamp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Header;

    /// Records with and without headers, keys and values side by side in
    /// one buffer, come out of any run of a batch as they went in; the
    /// index entry stays the size it was before headers.
    #[test]
    fn runs_of_records_with_and_without_headers_read_back() {
        assert_eq!(std::mem::size_of::<Entry>(), 24);
        let rich = [
            Header::new("a", Some(b"1")),
            Header::new("a", None),
            Header::new("", Some(b"")),
        ];
        let mut log = PartitionLog::default();
        type In<'a> = (Option<&'a [u8]>, &'a [u8], Headers<'a>);
        let records: Vec<In<'_>> = vec![
            (Some(b"k0"), b"v0", Headers::EMPTY),
            (None, b"v1", Headers::from(&rich)),
            (Some(b""), b"", Headers::from(&rich[..1])),
            (None, b"v3", Headers::EMPTY),
            (Some(b"k4"), b"v4", Headers::from(&rich[1..])),
        ];
        for (i, (key, value, headers)) in records.iter().enumerate() {
            assert_eq!(log.append(*key, value, *headers, i as i64), Ok(i as i64));
        }
        for (from, max) in [(0, 5), (1, 3), (2, 1), (4, 9)] {
            let mut batch = Batch::default();
            let n = log.read(from, max, &mut batch, 0);
            let got: Vec<_> = batch
                .iter()
                .map(|(r, key, value, headers, ts)| (r.offset, key, value, headers, ts))
                .collect();
            let want: Vec<_> = records
                .iter()
                .enumerate()
                .skip(from as usize)
                .take(max)
                .map(|(i, (key, value, headers))| (i as i64, *key, *value, *headers, i as i64))
                .collect();
            assert_eq!(n, want.len());
            assert_eq!(got, want, "from {from}, at most {max}");
        }
    }
}
