//! Chooses the log a command runs on: Kafka with `--brokers` (or a client
//! config file naming `bootstrap.servers`), otherwise the embedded log, kept
//! in a data directory unless `--in-memory`.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use riffle::log::embedded::{EmbeddedLog, FsyncPolicy};
use riffle::log::kafka::{KafkaLog, KafkaSettings, BOOTSTRAP_SERVERS};
use riffle::log::Log;
use riffle::{Error, Result};

use crate::util;

/// The global flags that pick and configure the log.
#[derive(Args, Clone, Debug)]
pub struct LogArgs {
    /// Kafka bootstrap servers (host:port,...). Without it, commands use the embedded log.
    #[arg(
        long,
        short = 'b',
        env = "RIFFLE_BROKERS",
        global = true,
        value_name = "HOST:PORT"
    )]
    pub brokers: Option<String>,

    /// A librdkafka property for every client (repeatable), e.g. -X security.protocol=SASL_SSL.
    /// Overrides the same property in the --command-config file.
    #[arg(short = 'X', value_name = "KEY=VALUE", global = true, value_parser = parse_property)]
    pub property: Vec<(String, String)>,

    /// A properties file of librdkafka settings for every client (key=value
    /// lines, # comments), as Kafka's tools' --command-config and kcat -F
    /// read: credentials stay off the command line. Its bootstrap.servers
    /// makes --brokers unnecessary; --brokers and -X override its entries
    /// [env: RIFFLE_CLIENT_CONFIG].
    // Read from the environment by hand rather than with `env`, so that an
    // empty variable means no file, as for RIFFLE_DATA_DIR.
    #[arg(
        long = "command-config",
        short = 'F',
        global = true,
        value_name = "FILE"
    )]
    pub command_config: Option<PathBuf>,

    /// The settings read from `command_config` (see [`LogArgs::load_client_config`]),
    /// `bootstrap.servers` apart.
    #[arg(skip)]
    pub file_properties: Vec<(String, String)>,

    /// Where the embedded log keeps topics, records and committed offsets, and
    /// where controller state goes [env: RIFFLE_DATA_DIR; default:
    /// $XDG_DATA_HOME/riffle, else ~/.local/share/riffle].
    // Read from the environment by hand rather than with `env`: clap would
    // count the variable as an explicit --data-dir and refuse --in-memory
    // whenever it is set.
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Keep the embedded log in memory only: nothing is read from or left on disk.
    #[arg(long, global = true, conflicts_with = "data_dir")]
    pub in_memory: bool,

    /// When the embedded log forces writes to stable storage: always (each
    /// write), interval (every second), never (the kernel decides), or an
    /// interval such as 200ms. Whatever the policy, a killed process loses
    /// nothing it acknowledged; this only matters if the machine fails.
    #[arg(long, global = true, value_name = "POLICY", default_value = "interval", value_parser = parse_fsync)]
    pub fsync: FsyncPolicy,
}

fn parse_property(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got '{s}'")),
    }
}

fn parse_fsync(s: &str) -> std::result::Result<FsyncPolicy, String> {
    match s {
        "always" => Ok(FsyncPolicy::Always),
        "never" => Ok(FsyncPolicy::Never),
        "interval" => Ok(FsyncPolicy::default()),
        _ => util::parse_duration(s)
            .map(FsyncPolicy::Interval)
            .map_err(|_| {
                format!("expected always, interval, never or a duration such as 200ms, got '{s}'")
            }),
    }
}

impl LogArgs {
    /// Reads the `--command-config` file, once, before any command runs: a
    /// malformed file is refused before anything is contacted. Its
    /// `bootstrap.servers` becomes the broker list unless `--brokers` (or
    /// `-X bootstrap.servers`) names one, so that every command, and every
    /// clone of these flags (`riffle connect`'s Kafka ends), sees Kafka.
    pub fn load_client_config(&mut self) -> Result<()> {
        if self.command_config.is_none() {
            self.command_config = std::env::var_os("RIFFLE_CLIENT_CONFIG")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from);
        }
        let mut file = match &self.command_config {
            Some(path) => KafkaSettings::from_file(path)?,
            None => KafkaSettings::new(),
        };
        let from_flags = self
            .property
            .iter()
            .rev()
            .find(|(k, _)| k == BOOTSTRAP_SERVERS)
            .map(|(_, v)| v.clone());
        let from_file = file.remove(BOOTSTRAP_SERVERS);
        if self.brokers.is_none() {
            self.brokers = from_flags.or(from_file).filter(|b| !b.trim().is_empty());
        }
        self.file_properties = file.into_vec();
        Ok(())
    }

    /// Every librdkafka setting for Kafka at `brokers`: the file's, then the
    /// `-X` flags', then the broker list.
    fn kafka_settings(&self, brokers: &str) -> KafkaSettings {
        let mut settings: KafkaSettings = self.file_properties.iter().cloned().collect();
        settings.extend(self.property.iter().cloned());
        settings.set(BOOTSTRAP_SERVERS, brokers);
        settings
    }

    /// The data directory, or `None` with `--in-memory`.
    pub fn data_dir(&self) -> Result<Option<PathBuf>> {
        if self.in_memory {
            return Ok(None);
        }
        if let Some(dir) = &self.data_dir {
            return Ok(Some(dir.clone()));
        }
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        if let Some(dir) = var("RIFFLE_DATA_DIR") {
            return Ok(Some(dir.into()));
        }
        // The XDG base directory rules ignore relative paths.
        if let Some(xdg) = var("XDG_DATA_HOME").map(PathBuf::from) {
            if xdg.is_absolute() {
                return Ok(Some(xdg.join("riffle")));
            }
        }
        match var("HOME") {
            Some(home) => Ok(Some(PathBuf::from(home).join(".local/share/riffle"))),
            None => Err(Error::InvalidInput(
                "no data directory: HOME is not set; pass --data-dir DIR or --in-memory".into(),
            )),
        }
    }

    /// Kafka, checked to be reachable; a one-line error when no broker is
    /// given. For commands that run in several processes at once, which the
    /// embedded log (one process at a time) cannot serve.
    pub fn kafka(&self, command: &str, alternative: &str) -> Result<Arc<dyn Log>> {
        match &self.brokers {
            Some(brokers) => self.connect(brokers),
            None => Err(Error::InvalidInput(format!(
                "`riffle {command}` needs a Kafka broker: pass --brokers HOST:PORT, set RIFFLE_BROKERS \
                 or give bootstrap.servers in --command-config FILE \
                 (the embedded log serves one process at a time; {alternative})"
            ))),
        }
    }

    /// Kafka when a broker is given, otherwise the embedded log in the data
    /// directory. For commands that look at or change what is stored, which
    /// an in-memory log would start without and forget on exit.
    pub fn stored(&self, command: &str) -> Result<Arc<dyn Log>> {
        if self.brokers.is_none() && self.in_memory {
            return Err(Error::InvalidInput(format!(
                "`riffle {command}` with --in-memory would start from nothing and keep nothing: \
                 drop --in-memory, or pass --brokers HOST:PORT (or -F FILE naming bootstrap.servers)"
            )));
        }
        self.any()
    }

    /// Kafka when a broker is given, the embedded log otherwise (in the data
    /// directory, or in memory with `--in-memory`).
    pub fn any(&self) -> Result<Arc<dyn Log>> {
        if let Some(brokers) = &self.brokers {
            return self.connect(brokers);
        }
        match self.data_dir()? {
            None => Ok(Arc::new(EmbeddedLog::new())),
            // A locked directory (`Error::Locked`) gets its hint where it
            // is printed, in `main`.
            Some(dir) => Ok(Arc::new(EmbeddedLog::open(&dir, self.fsync)?)),
        }
    }

    fn connect(&self, brokers: &str) -> Result<Arc<dyn Log>> {
        Ok(Arc::new(KafkaLog::connect_settings(
            self.kafka_settings(brokers),
        )?))
    }

    /// Whether the log is Kafka.
    pub fn is_kafka(&self) -> bool {
        self.brokers.is_some()
    }
}
