//! Files of one record per line: read (and followed, like `tail -f`) as a
//! source, appended to as a sink.
//!
//! As a source, the position after the last acknowledged line is kept in
//! an offsets file next to the input (written to a temporary file and
//! renamed, so a crash leaves the old position or the new one), so a
//! restarted pipeline resumes where the last one was confirmed. A file
//! that shrinks (truncated) or is replaced (rotated) is read again from its
//! start. As a sink, a flush writes and syncs the lines to disk.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use riffle::connect::{Delivery, Record, Sink, Source};
use riffle::{Error, Result};

use crate::connector::{Connector, Fallback, Opt, Role};
pub use crate::lines::Format;
use crate::lines::{self, FORMAT_OPT};

pub const FILE: Connector = Connector {
    name: "file",
    summary: "a file of one record per line (JSON lines): read or followed, or appended to",
    source: Some(Delivery::AtLeastOnce),
    sink: Some(Delivery::AtLeastOnce),
    options: &[
        Opt {
            name: "path",
            role: Role::Both,
            default: Fallback::None,
            help: "the file",
        },
        FORMAT_OPT,
        Opt {
            name: "follow",
            role: Role::Source,
            default: Fallback::Value("false"),
            help:
                "keep reading lines appended after the end (like tail -f) instead of stopping there",
        },
        Opt {
            name: "offsets",
            role: Role::Source,
            default: Fallback::Described("<path>.offset"),
            help: "where the position of the last acknowledged line is kept",
        },
    ],
    tls: false,
    build_source: Some(|mut o, _| {
        let path = PathBuf::from(o.required("path")?);
        let format: Format = FILE.get(&mut o, Role::Source, "format")?;
        let follow = FILE.get(&mut o, Role::Source, "follow")?;
        let offsets = o.string("offsets").map(PathBuf::from);
        FILE.finish(o, Role::Source)?;
        Ok(Box::new(FileSource::open(&path, format, follow, offsets)?))
    }),
    build_sink: Some(|mut o, _| {
        let path = PathBuf::from(o.required("path")?);
        let format: Format = FILE.get(&mut o, Role::Sink, "format")?;
        FILE.finish(o, Role::Sink)?;
        Ok(Box::new(FileSink::open(&path, format)?))
    }),
};

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::io(format!("{what} {}", path.display()), &e)
}

/// Reads a file a line at a time from the last acknowledged position.
pub struct FileSource {
    path: PathBuf,
    topic: String,
    format: Format,
    follow: bool,
    offsets: PathBuf,
    reader: BufReader<File>,
    inode: u64,
    /// After the last complete line handed out.
    read: u64,
    /// After the last acknowledged line.
    acked: u64,
    at_end: bool,
    partial: Vec<u8>,
}

impl FileSource {
    /// Opens `path`, resuming after the position saved in `offsets`
    /// (default `<path>.offset`) if it is for this same file.
    pub fn open(
        path: &Path,
        format: Format,
        follow: bool,
        offsets: Option<PathBuf>,
    ) -> Result<Self> {
        let offsets = offsets.unwrap_or_else(|| {
            let mut p = path.as_os_str().to_owned();
            p.push(".offset");
            PathBuf::from(p)
        });
        let file = File::open(path).map_err(|e| io_error("cannot open", path, e))?;
        let meta = file
            .metadata()
            .map_err(|e| io_error("cannot read", path, e))?;
        let inode = meta.ino();
        let start = match std::fs::read_to_string(&offsets) {
            Ok(text) => match text.split_whitespace().collect::<Vec<_>>()[..] {
                [ino, pos] if ino.parse() == Ok(inode) => pos.parse().unwrap_or(0),
                _ => 0,
            },
            Err(_) => 0,
        }
        .min(meta.len());
        let mut reader = BufReader::new(file);
        reader
            .seek(SeekFrom::Start(start))
            .map_err(|e| io_error("cannot seek", path, e))?;
        Ok(Self {
            topic: path.display().to_string(),
            path: path.to_owned(),
            format,
            follow,
            offsets,
            reader,
            inode,
            read: start,
            acked: start,
            at_end: false,
            partial: Vec::new(),
        })
    }

    /// At the end of the file: switches to a new file at the path (rotated)
    /// or back to the start (truncated).
    fn check_replaced(&mut self) -> Result<()> {
        let Ok(meta) = std::fs::metadata(&self.path) else {
            return Ok(()); // Gone for now; a new one may appear.
        };
        if meta.ino() != self.inode {
            tracing::info!("{} was replaced; reading the new file", self.path.display());
            let file =
                File::open(&self.path).map_err(|e| io_error("cannot open", &self.path, e))?;
            self.reader = BufReader::new(file);
            self.inode = meta.ino();
        } else if meta.len() < self.read + self.partial.len() as u64 {
            tracing::warn!(
                "{} was truncated; reading it from the start",
                self.path.display()
            );
            self.reader
                .seek(SeekFrom::Start(0))
                .map_err(|e| io_error("cannot seek", &self.path, e))?;
        } else {
            return Ok(());
        }
        (self.read, self.acked) = (0, 0);
        self.partial.clear();
        Ok(())
    }
}

impl Source for FileSource {
    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    fn delivery(&self) -> Delivery {
        Delivery::AtLeastOnce
    }

    fn poll(&mut self, out: &mut Vec<Record>, max: usize, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        let mut n = 0;
        while n < max {
            let got = self
                .reader
                .read_until(b'\n', &mut self.partial)
                .map_err(|e| io_error("cannot read", &self.path, e))?;
            let complete = self.partial.last() == Some(&b'\n');
            if got == 0 || !complete {
                // The end: a line without its newline may still be being
                // written, unless the file is read once.
                if !self.follow && !self.partial.is_empty() {
                    self.partial.push(b'\n');
                } else {
                    self.at_end = !self.follow;
                    if n > 0 || Instant::now() >= deadline {
                        break;
                    }
                    if self.follow {
                        self.check_replaced()?;
                        std::thread::sleep(Duration::from_millis(20).min(timeout));
                    }
                    continue;
                }
            }
            self.read += self.partial.len() as u64;
            let line = &self.partial[..self.partial.len() - 1];
            if !line.is_empty() && line != b"\r" {
                let record = lines::decode(line, self.format, &self.topic).unwrap_or_else(|e| {
                    // Kept whole, as the value: the pipeline's stage decides.
                    tracing::warn!("{}: {e}; passing the line on as it is", self.path.display());
                    Record::new(self.topic.clone(), None, line)
                });
                out.push(record);
                n += 1;
            }
            self.partial.clear();
        }
        Ok(n)
    }

    fn ack(&mut self) -> Result<()> {
        if self.acked == self.read {
            return Ok(());
        }
        let tmp = self.offsets.with_extension("offset.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            writeln!(f, "{} {}", self.inode, self.read)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.offsets)
        };
        write().map_err(|e| io_error("cannot save the position to", &self.offsets, e))?;
        self.acked = self.read;
        Ok(())
    }

    fn finished(&self) -> bool {
        self.at_end
    }
}

/// Appends one line per record; a flush writes and syncs them.
pub struct FileSink {
    path: PathBuf,
    format: Format,
    file: File,
    buffer: Vec<u8>,
}

impl FileSink {
    pub fn open(path: &Path, format: Format) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| io_error("cannot open", path, e))?;
        Ok(Self {
            path: path.to_owned(),
            format,
            file,
            buffer: Vec::new(),
        })
    }
}

impl Sink for FileSink {
    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    fn delivery(&self) -> Delivery {
        Delivery::AtLeastOnce
    }

    fn send(&mut self, record: &Record) -> Result<()> {
        self.buffer.extend(lines::encode(record, self.format));
        if self.buffer.len() >= 1 << 20 {
            self.file
                .write_all(&self.buffer)
                .map_err(|e| io_error("cannot write", &self.path, e))?;
            self.buffer.clear();
        }
        Ok(())
    }

    fn flush(&mut self, _timeout: Duration) -> Result<()> {
        let buffer = std::mem::take(&mut self.buffer);
        self.file
            .write_all(&buffer)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| io_error("cannot write", &self.path, e))
    }
}
