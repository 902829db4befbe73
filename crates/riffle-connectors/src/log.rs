//! The log as a connector: Kafka, or the embedded log in a data directory.

use riffle::connect::{Delivery, LogSink, LogSource};
use riffle::log::{ConsumerConfig, OffsetReset};
use riffle::Result;

use crate::connector::{Connector, Env, Fallback, LogChoice, Opt, Role};
use crate::Options;

const TOPIC_OPTS: [Opt; 3] = [
    Opt {
        name: "topic",
        role: Role::Both,
        default: Fallback::None,
        help: "topic to write; to read, one or more separated by commas. A sink's topic may use {key} and {topic}",
    },
    Opt {
        name: "group",
        role: Role::Source,
        default: Fallback::Value("riffle-connect"),
        help: "consumer group: members share the partitions, and the group's committed offsets say where a restart resumes",
    },
    Opt {
        name: "from",
        role: Role::Source,
        default: Fallback::Value("earliest"),
        help: "where a group without committed offsets starts: earliest or latest",
    },
];

pub const KAFKA: Connector = Connector {
    name: "kafka",
    summary: "Apache Kafka topics (the cluster of --brokers, or the brokers option)",
    source: Some(Delivery::AtLeastOnce),
    sink: Some(Delivery::AtLeastOnce),
    options: &[
        TOPIC_OPTS[0],
        TOPIC_OPTS[1],
        TOPIC_OPTS[2],
        Opt {
            name: "brokers",
            role: Role::Both,
            default: Fallback::Described("--brokers / RIFFLE_BROKERS"),
            help: "bootstrap servers, host:port,...",
        },
    ],
    tls: false,
    build_source: Some(|o, env| Ok(Box::new(source(o, env, &KAFKA)?))),
    build_sink: Some(|o, env| Ok(Box::new(sink(o, env, &KAFKA)?))),
};

pub const EMBEDDED: Connector = Connector {
    name: "embedded",
    summary: "topics of the embedded log in riffle's data directory (--data-dir)",
    source: Some(Delivery::AtLeastOnce),
    sink: Some(Delivery::AtLeastOnce),
    options: &TOPIC_OPTS,
    tls: false,
    build_source: Some(|o, env| Ok(Box::new(source(o, env, &EMBEDDED)?))),
    build_sink: Some(|o, env| Ok(Box::new(sink(o, env, &EMBEDDED)?))),
};

/// Which log the options ask for: `kafka` with its optional `brokers`,
/// or the embedded log.
fn choice(o: &mut Options, c: &Connector) -> Option<Option<String>> {
    (c.name == "kafka").then(|| o.string("brokers"))
}

fn open(
    env: &Env,
    choice: &Option<Option<String>>,
) -> Result<std::sync::Arc<dyn riffle::log::Log>> {
    (env.log)(match choice {
        Some(brokers) => LogChoice::Kafka(brokers.as_deref()),
        None => LogChoice::Embedded,
    })
}

fn source(mut o: Options, env: &Env, c: &Connector) -> Result<LogSource> {
    let topics = o.required("topic")?;
    let group = c.text(&mut o, Role::Source, "group")?;
    let from = match c.text(&mut o, Role::Source, "from")?.as_str() {
        "earliest" => OffsetReset::Earliest,
        "latest" => OffsetReset::Latest,
        other => {
            return Err(riffle::Error::InvalidInput(format!(
                "{}: option 'from'='{other}': expected earliest or latest",
                c.name
            )))
        }
    };
    let choice = choice(&mut o, c);
    c.finish(o, Role::Source)?;
    let log = open(env, &choice)?;
    let topics: Vec<&str> = topics.split(',').map(str::trim).collect();
    for t in &topics {
        exists(&*log, t)?;
    }
    let mut config = ConsumerConfig::new(group.as_str(), &topics);
    config.offset_reset = from;
    config.client_id = group;
    Ok(LogSource::new(&*log, &config)?.measure_lag(log, &config))
}

fn sink(mut o: Options, env: &Env, c: &Connector) -> Result<LogSink> {
    let topic = o.required("topic")?;
    let choice = choice(&mut o, c);
    c.finish(o, Role::Sink)?;
    let log = open(env, &choice)?;
    if !topic.contains('{') {
        exists(&*log, &topic)?;
    }
    LogSink::new(&*log, &topic)
}

/// Fails with a hint when `topic` does not exist: a pipeline would
/// otherwise wait for it (as a source) or retry forever (as a sink).
fn exists(log: &dyn riffle::log::Log, topic: &str) -> Result<()> {
    match log.describe_topic(topic, std::time::Duration::from_secs(10)) {
        Ok(_) => Ok(()),
        Err(riffle::Error::UnknownTopic(t)) => Err(riffle::Error::InvalidInput(format!(
            "unknown topic '{t}' on {} (riffle topics create {t} --partitions N)",
            log.describe()
        ))),
        Err(e) => Err(e),
    }
}
