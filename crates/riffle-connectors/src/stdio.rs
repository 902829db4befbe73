//! Standard input and output, one record per line.
//!
//! Neither end can take anything back: what was read from stdin is gone if
//! the pipeline dies before confirming it, and a line written to stdout is
//! lost if the reader dies. Both are at-most-once.

use std::io::{BufRead, Write};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

use riffle::connect::{Delivery, Record, Sink, Source};
use riffle::{Error, Result};

use crate::connector::{Connector, Role};
use crate::lines::{self, Format, FORMAT_OPT};

pub const STDIO: Connector = Connector {
    name: "stdio",
    summary: "standard input as a source, standard output as a sink, one record per line",
    source: Some(Delivery::AtMostOnce),
    sink: Some(Delivery::AtMostOnce),
    options: &[FORMAT_OPT],
    tls: false,
    build_source: Some(|mut o, _| {
        let format: Format = STDIO.get(&mut o, Role::Source, "format")?;
        STDIO.finish(o, Role::Source)?;
        Ok(Box::new(Stdin::new(format)))
    }),
    build_sink: Some(|mut o, _| {
        let format: Format = STDIO.get(&mut o, Role::Sink, "format")?;
        STDIO.finish(o, Role::Sink)?;
        Ok(Box::new(Stdout { format }))
    }),
};

/// Lines of stdin, read on a thread of their own so that a poll can time
/// out.
pub struct Stdin {
    format: Format,
    lines: Receiver<std::io::Result<Vec<u8>>>,
    done: bool,
}

impl Stdin {
    pub fn new(format: Format) -> Self {
        let (tx, lines) = mpsc::sync_channel(1024);
        std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || {
                let mut input = std::io::stdin().lock();
                loop {
                    let mut line = Vec::new();
                    match input.read_until(b'\n', &mut line) {
                        Ok(0) => return,
                        Ok(_) => {
                            if line.last() == Some(&b'\n') {
                                line.pop();
                            }
                            if tx.send(Ok(line)).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                }
            })
            .expect("a thread starts");
        Self {
            format,
            lines,
            done: false,
        }
    }
}

impl Source for Stdin {
    fn describe(&self) -> String {
        "stdin".into()
    }

    fn delivery(&self) -> Delivery {
        Delivery::AtMostOnce
    }

    fn poll(&mut self, out: &mut Vec<Record>, max: usize, timeout: Duration) -> Result<usize> {
        let mut n = 0;
        while n < max && !self.done {
            let next = if n == 0 {
                self.lines.recv_timeout(timeout)
            } else {
                self.lines.try_recv().map_err(|_| RecvTimeoutError::Timeout)
            };
            match next {
                Ok(Ok(line)) if line.is_empty() => {}
                Ok(Ok(line)) => {
                    out.push(
                        lines::decode(&line, self.format, "stdin").unwrap_or_else(|e| {
                            tracing::warn!("stdin: {e}; passing the line on as it is");
                            Record::new("stdin", None, line)
                        }),
                    );
                    n += 1;
                }
                Ok(Err(e)) => return Err(Error::io("cannot read stdin", &e)),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => self.done = true,
            }
        }
        Ok(n)
    }

    fn ack(&mut self) -> Result<()> {
        Ok(())
    }

    fn finished(&self) -> bool {
        self.done
    }
}

/// Lines on stdout.
pub struct Stdout {
    format: Format,
}

impl Sink for Stdout {
    fn describe(&self) -> String {
        "stdout".into()
    }

    fn delivery(&self) -> Delivery {
        Delivery::AtMostOnce
    }

    fn send(&mut self, record: &Record) -> Result<()> {
        std::io::stdout()
            .lock()
            .write_all(&lines::encode(record, self.format))
            .map_err(|e| Error::io("cannot write stdout", &e))
    }

    fn flush(&mut self, _timeout: Duration) -> Result<()> {
        std::io::stdout()
            .flush()
            .map_err(|e| Error::io("cannot write stdout", &e))
    }
}
