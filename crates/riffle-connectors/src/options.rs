//! A connector's options: `key=value` pairs from flags or a pipeline file,
//! read once each, with unknown keys refused; and their descriptions
//! ([`Opt`]) for `--list`.
//!
//! A value may name a secret rather than hold it, so that passwords and
//! tokens need not be written into a pipeline file or a command line:
//! `${NAME}` is replaced by the environment variable `NAME`, and
//! `${file:PATH}` by the contents of the file at `PATH` (without its
//! trailing newline). `$${` stands for a literal `${`.

use std::collections::BTreeMap;
use std::str::FromStr;

use riffle::{Error, Result};

/// Which end of a pipeline an option applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Source,
    Sink,
    Both,
}

/// One option of a connector, for `--list`, for refusing unknown keys,
/// and for its default value.
#[derive(Debug, Clone, Copy)]
pub struct Opt {
    pub name: &'static str,
    pub role: Role,
    pub default: Fallback,
    pub help: &'static str,
}

/// What an option is when it is not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Nothing: the option is required, or optional without a value (a
    /// password).
    None,
    /// This value, as a user would write it. The connector reads it from
    /// here ([`Connector::get`](crate::connector::Connector::get)), so that
    /// each default is written once, where `--list` shows it.
    Value(&'static str),
    /// Something that depends on other options, described for `--list`;
    /// the connector works it out.
    Described(&'static str),
}

impl Fallback {
    /// The text `--list` shows, if any.
    pub fn text(self) -> Option<&'static str> {
        match self {
            Fallback::None => None,
            Fallback::Value(t) | Fallback::Described(t) => Some(t),
        }
    }
}

/// The options given to one connector. Each getter takes its key out, so
/// that [`Options::finish`] can name any key nobody asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    connector: String,
    values: BTreeMap<String, String>,
}

impl Options {
    pub fn new(connector: &str) -> Self {
        Self {
            connector: connector.to_owned(),
            values: BTreeMap::new(),
        }
    }

    /// Options from pairs; a key given twice keeps the last value.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        connector: &str,
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let mut o = Self::new(connector);
        for (k, v) in pairs {
            o.set(k, v);
        }
        o
    }

    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.values.insert(key.into(), value.into());
    }

    /// The options with every `${NAME}` and `${file:PATH}` replaced by the
    /// secret it names; an unset variable or unreadable file is an error
    /// naming the option (never the secret).
    pub fn resolve_secrets(mut self) -> Result<Self> {
        for (key, value) in self.values.iter_mut() {
            *value = expand(value).map_err(|why| {
                Error::InvalidInput(format!("{}: option '{key}': {why}", self.connector))
            })?;
        }
        Ok(self)
    }

    /// The connector these options are for.
    pub fn connector(&self) -> &str {
        &self.connector
    }

    /// Whether an option was given (and not read yet).
    pub fn has(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }

    /// A text option, if given.
    pub fn string(&mut self, key: &str) -> Option<String> {
        self.values.remove(key)
    }

    /// A text option that must be given.
    pub fn required(&mut self, key: &str) -> Result<String> {
        self.string(key).ok_or_else(|| {
            Error::InvalidInput(format!("{}: option '{key}' is required", self.connector))
        })
    }

    /// A text option with a default.
    pub fn string_or(&mut self, key: &str, default: &str) -> String {
        self.string(key).unwrap_or_else(|| default.to_owned())
    }

    /// A parsed option with a default; a value that does not parse is an
    /// error naming the key.
    pub fn parse_or<T: FromStr>(&mut self, key: &str, default: T) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.string(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e| {
                Error::InvalidInput(format!("{}: option '{key}'='{v}': {e}", self.connector))
            }),
        }
    }

    /// Option `name` of `role`: as given, else its [`Fallback::Value`] in
    /// `table` (the option descriptions), both parsed with `parse`.
    pub fn read<T>(
        &mut self,
        table: impl IntoIterator<Item = &'static Opt>,
        role: Role,
        name: &str,
        parse: impl Fn(&str) -> std::result::Result<T, String>,
    ) -> Result<T> {
        let (text, given) = match self.string(name) {
            Some(v) => (v, true),
            None => (default_of(table, role, name, &self.connector)?, false),
        };
        parse(&text).map_err(|e| {
            let what = if given { "" } else { " (its default)" };
            Error::InvalidInput(format!(
                "{}: option '{name}'='{text}'{what}: {e}",
                self.connector
            ))
        })
    }

    /// Fails if any option was not read: a misspelt key must not be
    /// silently ignored. `known` lists the valid keys for the message.
    pub fn finish(self, known: &[&str]) -> Result<()> {
        match self.values.keys().next() {
            None => Ok(()),
            Some(k) => Err(Error::InvalidInput(format!(
                "{}: unknown option '{k}' (options: {})",
                self.connector,
                known.join(", ")
            ))),
        }
    }
}

/// The default value of option `name` of `role` in `table`.
fn default_of(
    table: impl IntoIterator<Item = &'static Opt>,
    role: Role,
    name: &str,
    connector: &str,
) -> Result<String> {
    let opt = table
        .into_iter()
        .find(|o| o.name == name && (o.role == role || o.role == Role::Both || role == Role::Both));
    match opt.map(|o| o.default) {
        Some(Fallback::Value(v)) => Ok(v.to_owned()),
        _ => Err(Error::InvalidInput(format!(
            "{connector}: option '{name}' has no default value in the connector's table"
        ))),
    }
}

/// `value` with its `${NAME}` and `${file:PATH}` references replaced.
fn expand(value: &str) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find("${") {
        if rest[..i].ends_with('$') {
            out.push_str(&rest[..i - 1]);
            out.push_str("${");
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let end = rest[i..]
            .find('}')
            .ok_or_else(|| format!("'{}' has no closing brace", &rest[i..]))?;
        let name = &rest[i + 2..i + end];
        match name.strip_prefix("file:") {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read secret file {path}: {e}"))?;
                out.push_str(text.strip_suffix('\n').unwrap_or(&text));
            }
            None if name.is_empty() => return Err("'${}' names no variable".into()),
            None => out.push_str(
                &std::env::var(name)
                    .map_err(|_| format!("environment variable {name} is not set"))?,
            ),
        }
        rest = &rest[i + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A duration option's value: `riffle::duration`'s grammar, the one every
/// flag reads too.
pub fn parse_duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    riffle::duration::parse(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn options_are_taken_once_and_unknown_ones_refused() {
        let mut o = Options::from_pairs(
            "mqtt",
            [("url", "mqtt://h:1"), ("qos", "x"), ("tpoic", "a")],
        );
        assert_eq!(o.required("url").unwrap(), "mqtt://h:1");
        assert!(o
            .required("url")
            .unwrap_err()
            .to_string()
            .contains("'url' is required"));
        let e = o.parse_or("qos", 1u8).unwrap_err().to_string();
        assert!(e.contains("mqtt: option 'qos'='x'"), "{e}");
        let e = o.finish(&["url", "qos", "topic"]).unwrap_err().to_string();
        assert!(
            e.contains("unknown option 'tpoic'") && e.contains("topic"),
            "{e}"
        );
    }

    #[test]
    fn secrets_come_from_the_environment_and_files() {
        let dir = std::env::temp_dir().join(format!("riffle-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("password");
        std::fs::write(&file, "s3cret\n").unwrap();
        std::env::set_var("RIFFLE_TEST_SECRET_USER", "alice");
        let url = format!(
            "mqtt://${{RIFFLE_TEST_SECRET_USER}}:${{file:{}}}@host",
            file.display()
        );
        let mut o = Options::from_pairs("mqtt", [("url", url.as_str()), ("topic", "$${x}")])
            .resolve_secrets()
            .unwrap();
        assert_eq!(o.string("url").unwrap(), "mqtt://alice:s3cret@host");
        assert_eq!(o.string("topic").unwrap(), "${x}");
        let e = Options::from_pairs("nats", [("token", "${RIFFLE_TEST_SECRET_UNSET}")])
            .resolve_secrets()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "nats: option 'token': environment variable RIFFLE_TEST_SECRET_UNSET is not set"
            ),
            "{e}"
        );
        let e = Options::from_pairs("nats", [("token", "${file:/nonexistent/x}")])
            .resolve_secrets()
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read secret file /nonexistent/x"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        const TABLE: [Opt; 3] = [
            Opt {
                name: "keep_alive",
                role: Role::Both,
                default: Fallback::Value("30s"),
                help: "",
            },
            Opt {
                name: "password",
                role: Role::Both,
                default: Fallback::None,
                help: "",
            },
            Opt {
                name: "broken",
                role: Role::Sink,
                default: Fallback::Value("soon"),
                help: "",
            },
        ];
        let mut o = Options::from_pairs("mqtt", [("keep_alive", "5 parsecs")]);
        let e = o
            .read(&TABLE, Role::Source, "keep_alive", parse_duration)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mqtt: option 'keep_alive'='5 parsecs': '5 parsecs' is not a duration"),
            "{e}"
        );
        let mut none = Options::new("mqtt");
        assert_eq!(
            none.read(&TABLE, Role::Source, "keep_alive", parse_duration),
            Ok(Duration::from_secs(30)),
            "the table's default"
        );
        let e = none
            .read(&TABLE, Role::Source, "password", parse_duration)
            .unwrap_err()
            .to_string();
        assert!(e.contains("'password' has no default value"), "{e}");
        let e = none
            .read(&TABLE, Role::Sink, "broken", parse_duration)
            .unwrap_err()
            .to_string();
        assert!(e.contains("'broken'='soon' (its default)"), "{e}");
    }
}
