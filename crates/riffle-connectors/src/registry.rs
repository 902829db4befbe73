//! Every connector by name, with its options, for `riffle connect` and its
//! `--list`.

use riffle::connect::{Delivery, Sink, Source};
use riffle::{Error, Result};

pub use crate::connector::{Connector, Env, LogChoice, OpenLog, Opt, Role};
use crate::options::Options;

/// Every connector, in the order `--list` shows them.
pub fn all() -> &'static [Connector] {
    ALL
}

/// The network connectors are each behind the cargo feature of their name.
static ALL: &[Connector] = &[
    crate::log::KAFKA,
    crate::log::EMBEDDED,
    crate::file::FILE,
    crate::stdio::STDIO,
    #[cfg(feature = "mqtt")]
    crate::mqtt::MQTT,
    #[cfg(feature = "nats")]
    crate::nats::NATS,
    #[cfg(feature = "amqp")]
    crate::amqp::AMQP,
    #[cfg(feature = "redis")]
    crate::redis::REDIS,
    #[cfg(feature = "http")]
    crate::http::HTTP,
];

/// The connector named `name`.
pub fn find(name: &str) -> Result<&'static Connector> {
    all().iter().find(|c| c.name == name).ok_or_else(|| {
        let names: Vec<_> = all().iter().map(|c| c.name).collect();
        Error::InvalidInput(format!(
            "no connector '{name}' (connectors: {})",
            names.join(", ")
        ))
    })
}

/// Builds the source `options` describe (their connector's name and its
/// options).
pub fn source(options: Options, env: &Env) -> Result<Box<dyn Source>> {
    let c = find(options.connector())?;
    let options = options.resolve_secrets()?;
    let build = c
        .build_source
        .ok_or_else(|| Error::InvalidInput(format!("connector '{}' cannot be a source", c.name)))?;
    build(options, env)
}

/// Builds the sink `options` describe.
pub fn sink(options: Options, env: &Env) -> Result<Box<dyn Sink>> {
    let c = find(options.connector())?;
    let options = options.resolve_secrets()?;
    let build = c
        .build_sink
        .ok_or_else(|| Error::InvalidInput(format!("connector '{}' cannot be a sink", c.name)))?;
    build(options, env)
}

/// The text of `riffle connect --list`: each connector, what it promises
/// at each end, and its options.
pub fn describe_all() -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for c in all() {
        let ends = |d: Option<Delivery>| d.map_or("no".to_owned(), |d| d.to_string());
        let _ = writeln!(
            s,
            "{}: {}\n  as a source: {}; as a sink: {}",
            c.name,
            c.summary,
            ends(c.source),
            ends(c.sink)
        );
        for o in c.all_options() {
            let role = match o.role {
                Role::Source => " (source)",
                Role::Sink => " (sink)",
                Role::Both => "",
            };
            let default = o.default.text().map_or_else(String::new, |d| match d {
                "" => " [default: empty]".to_owned(),
                d => format!(" [default: {d}]"),
            });
            let _ = writeln!(s, "    {}{role}: {}{default}", o.name, o.help);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connector built with its required options only, against
    /// a port nobody listens on: whatever fails, it is not one of its own
    /// default values, which each is read from its table.
    #[test]
    fn the_defaults_in_the_tables_read_as_their_options() {
        let dir = std::env::temp_dir().join(format!("riffle-defaults-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("in.jsonl");
        std::fs::write(&file, "").unwrap();
        let file = file.to_str().unwrap();
        let env = Env {
            log: Box::new(|_| Err(Error::InvalidInput("no log here".into()))),
        };
        // (connector, as a source, options)
        type Case<'a> = (&'a str, bool, Vec<(&'a str, &'a str)>);
        let mut cases: Vec<Case> = vec![
            ("file", true, vec![("path", file)]),
            ("file", false, vec![("path", file)]),
            ("stdio", false, vec![]),
            ("kafka", true, vec![("topic", "t")]),
            ("kafka", false, vec![("topic", "t")]),
        ];
        #[cfg(feature = "mqtt")]
        cases.extend([
            (
                "mqtt",
                true,
                vec![("url", "mqtt://127.0.0.1:1"), ("topic", "a")],
            ),
            ("mqtt", false, vec![("url", "mqtt://127.0.0.1:1")]),
        ]);
        #[cfg(feature = "nats")]
        cases.extend([
            (
                "nats",
                true,
                vec![("url", "nats://127.0.0.1:1"), ("subject", "a")],
            ),
            ("nats", false, vec![("url", "nats://127.0.0.1:1")]),
        ]);
        #[cfg(feature = "amqp")]
        cases.extend([
            (
                "amqp",
                true,
                vec![("url", "amqp://127.0.0.1:1"), ("queue", "q")],
            ),
            ("amqp", false, vec![("url", "amqp://127.0.0.1:1")]),
        ]);
        #[cfg(feature = "redis")]
        cases.extend([
            (
                "redis",
                true,
                vec![("url", "redis://127.0.0.1:1"), ("stream", "s")],
            ),
            ("redis", false, vec![("url", "redis://127.0.0.1:1")]),
        ]);
        #[cfg(feature = "http")]
        cases.extend([
            ("http", true, vec![("listen", "127.0.0.1:0")]),
            ("http", false, vec![("url", "http://127.0.0.1:1/")]),
        ]);
        for (name, as_source, pairs) in cases {
            let o = Options::from_pairs(name, pairs);
            let built = match as_source {
                true => source(o, &env).map(drop),
                false => sink(o, &env).map(drop),
            };
            if let Err(e) = built {
                let e = e.to_string();
                assert!(
                    !e.contains("(its default)") && !e.contains("no default value"),
                    "{name}: {e}"
                );
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_connector_is_listed_with_its_options() {
        let text = describe_all();
        for c in all() {
            assert!(text.contains(&format!("{}: ", c.name)), "{text}");
            assert!(c.build_source.is_some() == c.source.is_some(), "{}", c.name);
            assert!(c.build_sink.is_some() == c.sink.is_some(), "{}", c.name);
            for o in c.all_options() {
                assert!(text.contains(&format!("    {}", o.name)), "{}", o.name);
            }
        }
    }

    #[test]
    fn unknown_connectors_are_named_with_the_known_ones() {
        let e = find("mqqt").err().unwrap().to_string();
        assert!(
            e.contains("no connector 'mqqt'") && e.contains("file"),
            "{e}"
        );
    }
}
