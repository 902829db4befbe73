//! librdkafka settings as users keep them: a Java-style properties file.
//!
//! Kafka's own tools (`--command-config`), kcat (`-F`) and managed clouds
//! (Confluent Cloud's "client.properties") all hand out client settings as a
//! properties file. Reading the same file lets credentials stay in a file
//! with tight permissions instead of on a command line, where `ps` and shell
//! history would show them.

use std::path::Path;

use crate::error::{Error, Result};

/// The librdkafka property naming the cluster.
pub const BOOTSTRAP_SERVERS: &str = "bootstrap.servers";

/// Ordered librdkafka settings (`key=value`), later values replacing earlier
/// ones, so that layers (a file, then `-X` flags) can be applied in turn.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KafkaSettings {
    entries: Vec<(String, String)>,
}

impl KafkaSettings {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`, replacing an earlier value in place.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        let (key, value) = (key.into(), value.into());
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((key, value)),
        }
        self
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let i = self.entries.iter().position(|(k, _)| k == key)?;
        Some(self.entries.remove(i).1)
    }

    /// The cluster's bootstrap servers, when set.
    pub fn bootstrap_servers(&self) -> Option<&str> {
        self.get(BOOTSTRAP_SERVERS).filter(|v| !v.trim().is_empty())
    }

    /// Applies every entry of `other` on top of these.
    pub fn extend(&mut self, other: impl IntoIterator<Item = (String, String)>) -> &mut Self {
        for (k, v) in other {
            self.set(k, v);
        }
        self
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn into_vec(self) -> Vec<(String, String)> {
        self.entries
    }

    /// Reads a properties file (see [`KafkaSettings::parse`]); an unreadable
    /// file is one line naming it.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::InvalidInput(format!("cannot read client config {}: {e}", path.display()))
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses the text of a properties file, `origin` naming it in errors.
    ///
    /// The subset of Java's `Properties` format that client configs use:
    /// `key=value` or `key: value` (the first `=` or `:` splits, so values
    /// may hold either, as JAAS lines and URLs do), whitespace around keys
    /// and values trimmed, blank lines and lines starting with `#` or `!`
    /// skipped, a trailing `\` joining the next line. Other backslashes are
    /// kept as written (librdkafka's own config files and kcat do not
    /// unescape either, and paths stay readable). A line without a
    /// separator or with an empty key is an error naming `origin:line`,
    /// rather than a setting silently lost.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let mut settings = Self::new();
        let mut lines = text.lines().enumerate();
        while let Some((i, raw)) = lines.next() {
            let number = i + 1;
            let mut line = raw.trim().to_owned();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            // Java joins a line ending in an odd number of backslashes with
            // the next one, leading whitespace of the continuation dropped.
            while line.ends_with('\\') && (line.len() - line.trim_end_matches('\\').len()) % 2 == 1
            {
                line.pop();
                match lines.next() {
                    Some((_, next)) => line.push_str(next.trim_start()),
                    None => break,
                }
            }
            let Some(at) = line.find(['=', ':']) else {
                return Err(Error::InvalidInput(format!(
                    "{origin}:{number}: expected key=value, got '{}'",
                    line
                )));
            };
            let (key, value) = (line[..at].trim(), line[at + 1..].trim());
            if key.is_empty() {
                return Err(Error::InvalidInput(format!(
                    "{origin}:{number}: no key before '{}'",
                    &line[at..at + 1]
                )));
            }
            settings.set(key, value);
        }
        Ok(settings)
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for KafkaSettings {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut s = Self::new();
        for (k, v) in iter {
            s.set(k, v);
        }
        s
    }
}

impl IntoIterator for KafkaSettings {
    type Item = (String, String);
    type IntoIter = std::vec::IntoIter<(String, String)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<(String, String)>> {
        KafkaSettings::parse(text, "client.properties").map(KafkaSettings::into_vec)
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_both_separators_comments_and_blank_lines() {
        let text = "# Confluent Cloud\n\
                    ! also a comment\n\
                    \n\
                    bootstrap.servers=pkc-1.example.com:9092\n\
                    \tsecurity.protocol :  SASL_SSL  \n\
                    sasl.mechanisms: PLAIN\n";
        assert_eq!(
            parse(text).unwrap(),
            pairs(&[
                ("bootstrap.servers", "pkc-1.example.com:9092"),
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanisms", "PLAIN"),
            ])
        );
    }

    #[test]
    fn the_first_separator_splits_so_values_keep_theirs() {
        let text = "sasl.oauthbearer.token.endpoint.url=https://idp.example.com:8443/token?a=b\n\
                    sasl.password=se=cr:et\n\
                    empty=\n";
        assert_eq!(
            parse(text).unwrap(),
            pairs(&[
                (
                    "sasl.oauthbearer.token.endpoint.url",
                    "https://idp.example.com:8443/token?a=b"
                ),
                ("sasl.password", "se=cr:et"),
                ("empty", ""),
            ])
        );
    }

    #[test]
    fn a_later_line_replaces_an_earlier_one() {
        let s = KafkaSettings::parse("a=1\nb=2\na=3\n", "f").unwrap();
        assert_eq!(s.get("a"), Some("3"));
        assert_eq!(s.into_vec(), pairs(&[("a", "3"), ("b", "2")]));
    }

    #[test]
    fn a_trailing_backslash_continues_the_line() {
        let text = "sasl.jaas.config=one \\\n    two\nnext=1\nliteral=ends\\\\\n";
        assert_eq!(
            parse(text).unwrap(),
            pairs(&[
                ("sasl.jaas.config", "one two"),
                ("next", "1"),
                ("literal", "ends\\\\")
            ])
        );
    }

    #[test]
    fn a_line_without_separator_names_file_and_line() {
        let e = parse("a=1\n\n  just words  \n").unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid input: client.properties:3: expected key=value, got 'just words'"
        );
        let e = parse("=value\n").unwrap_err().to_string();
        assert_eq!(e, "invalid input: client.properties:1: no key before '='");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn an_unreadable_file_is_one_line_naming_it() {
        let e = KafkaSettings::from_file("/nonexistent/riffle/client.properties")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "invalid input: cannot read client config /nonexistent/riffle/client.properties: "
            ),
            "{e}"
        );
        assert!(!e.contains('\n'));
    }

    #[test]
    fn reads_a_file_and_finds_the_bootstrap_servers() {
        let dir = std::env::temp_dir().join(format!("riffle-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("client.properties");
        std::fs::write(&path, "bootstrap.servers = 10.0.0.1:9093\nacks=all\n").unwrap();
        let s = KafkaSettings::from_file(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(s.bootstrap_servers(), Some("10.0.0.1:9093"));
        assert_eq!(s.get("acks"), Some("all"));
        assert_eq!(KafkaSettings::new().bootstrap_servers(), None);
    }

    #[test]
    fn later_layers_override_earlier_ones() {
        let mut s: KafkaSettings = [("a", "file"), ("b", "file")].into_iter().collect();
        s.extend(pairs(&[("b", "flag"), ("c", "flag")]));
        assert_eq!(
            s.into_vec(),
            pairs(&[("a", "file"), ("b", "flag"), ("c", "flag")])
        );
    }
}
