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
use super::persist::{io_error, segment_base, truncate_segment, SegmentWriter, Syncer};
use crate::error::{Error, Result};
use crate::log::headers::{encode, encoded_len};
use crate::log::Headers;

/// A segment is closed once it holds this many bytes of keys and values.
const SEGMENT_BYTES: usize = 64 << 20;

/// Marks a record without a key (as opposed to an empty key).
const NO_KEY: u32 = u32::MAX;

/// Where a record's bytes are in its buffer: the key (if any), the value,
/// then its encoded headers (none for most records).
#[derive(Debug, Clone, Copy)]
struct Entry {
    start: usize,
    key_len: u32,
    value_len: u32,
    headers_len: u32,
    timestamp: i64,
}

impl Entry {
    fn key_bytes(&self) -> usize {
        if self.key_len == NO_KEY {
            0
        } else {
            self.key_len as usize
        }
    }

    fn end(&self) -> usize {
        self.start + self.key_bytes() + self.value_len as usize + self.headers_len as usize
    }

    fn split<'a>(&self, data: &'a [u8]) -> (Option<&'a [u8]>, &'a [u8], Headers<'a>) {
        let value_start = self.start + self.key_bytes();
        let headers_start = value_start + self.value_len as usize;
        let key = (self.key_len != NO_KEY).then(|| &data[self.start..value_start]);
        let headers = Headers::encoded(&data[headers_start..self.end()]);
        (key, &data[value_start..headers_start], headers)
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

    /// Adds a record whose lengths have been checked.
    fn push(
        &mut self,
        key: Option<&[u8]>,
        key_len: u32,
        value: &[u8],
        headers: Headers<'_>,
        timestamp: i64,
    ) {
        let start = self.data.len();
        if let Some(k) = key {
            self.data.extend_from_slice(k);
        }
        self.data.extend_from_slice(value);
        let headers_start = self.data.len();
        if !headers.is_empty() {
            encode(headers, &mut self.data);
        }
        self.index.push(Entry {
            start,
            key_len,
            value_len: value.len() as u32,
            headers_len: (self.data.len() - headers_start) as u32,
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
                return Err(Error::Backend(format!(
                    "embedded log: segment {} starts at offset {base}, but the segment before it ends at {}",
                    path.display(),
                    log.high
                )));
            }
            let bytes = fs::read(&path).map_err(|e| io_error("read", &path, e))?;
            let mut seg = Segment::new(base);
            seg.data.reserve(bytes.len());
            let (valid, damage) = scan_segment(&bytes, |f| {
                let key_len = f.key.map_or(NO_KEY, |k| k.len() as u32);
                seg.push(
                    f.key,
                    key_len,
                    f.value,
                    Headers::encoded(f.headers),
                    f.timestamp,
                );
            });
            drop(bytes);
            if let Some(damage) = damage {
                if !last {
                    return Err(Error::Backend(format!(
                        "embedded log: segment {} is damaged at byte {valid} ({damage}), and it is not the last segment of its partition",
                        path.display()
                    )));
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
        let key_len = match key {
            Some(k) => u32::try_from(k.len()).ok().filter(|&n| n != NO_KEY),
            None => Some(NO_KEY),
        };
        let headers_len = encoded_len(headers).filter(|&n| u32::try_from(n).is_ok());
        let (Some(key_len), Ok(_), Some(headers_len)) =
            (key_len, u32::try_from(value.len()), headers_len)
        else {
            return Err(Error::InvalidInput(
                "record key, value or headers are 4 GiB or larger".into(),
            ));
        };
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
        seg.push(key, key_len, value, headers, timestamp);
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
        let to = seg.index[last - 1].end();
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
