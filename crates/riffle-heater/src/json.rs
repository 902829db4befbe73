//! A scanner for the members of one JSON object, for the sensor decoder on
//! the controller's hot path.
//!
//! It checks that the whole text is one valid JSON object (RFC 8259) and
//! hands each member's key and value to the caller as it goes, without
//! building a tree: strings without escapes are borrowed from the input,
//! numbers are handed over as written, and values the caller does not use
//! are only checked. Decoding a sensor record this way costs a fraction of
//! a generic deserializer's work, which decided the controller's cost per
//! record (see BENCHMARKS.md).

use std::borrow::Cow;

/// A member's value, as far as a decoder needs to tell it apart.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value<'a> {
    Null,
    /// A number in JSON's syntax, as written.
    Number(&'a str),
    String(Cow<'a, str>),
    /// `true`, `false`, an array or an object, as written.
    Other(&'a str),
}

impl Value<'_> {
    /// A short, one-line description for error messages.
    pub(crate) fn describe(&self) -> String {
        let text: String = match self {
            Value::Null => "null".into(),
            Value::Number(n) => (*n).into(),
            Value::String(s) => format!("{s:?}"),
            Value::Other(t) => t.split_whitespace().collect::<Vec<_>>().join(" "),
        };
        match text.char_indices().nth(40) {
            Some((cut, _)) => format!("{}...", &text[..cut]),
            None => text,
        }
    }
}

/// Arrays and objects nested deeper than this are refused (as by
/// `serde_json`), so that a hostile record cannot exhaust the stack.
const MAX_DEPTH: usize = 128;

/// Calls `member` with each key and value of the JSON object `text`, in
/// order. Fails, with a one-line reason, when `text` is not exactly one
/// JSON object (surrounding whitespace aside) or when `member` fails.
pub(crate) fn for_each_member<'a>(
    text: &'a str,
    mut member: impl FnMut(Cow<'a, str>, Value<'a>) -> Result<(), String>,
) -> Result<(), String> {
    let mut s = Scanner { text, i: 0 };
    s.ws();
    if s.peek() != Some(b'{') {
        return Err(s.expected("an object"));
    }
    s.members(0, &mut member)?;
    s.ws();
    match s.peek() {
        None => Ok(()),
        Some(_) => Err(s.expected("the end of the text")),
    }
}

struct Scanner<'a> {
    text: &'a str,
    i: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.i).copied()
    }

    fn expected(&self, what: &str) -> String {
        match self.peek() {
            None => format!("expected {what} at the end of the text"),
            Some(_) => format!("expected {what} at byte {}", self.i),
        }
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// The object starting here (at `{`), each member handed to `member`.
    fn members(
        &mut self,
        depth: usize,
        member: &mut impl FnMut(Cow<'a, str>, Value<'a>) -> Result<(), String>,
    ) -> Result<(), String> {
        self.i += 1;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return Err(self.expected("a string key"));
            }
            let key = self.string()?;
            self.ws();
            if self.peek() != Some(b':') {
                return Err(self.expected("':'"));
            }
            self.i += 1;
            self.ws();
            let value = self.value(depth)?;
            member(key, value)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(self.expected("',' or '}'")),
            }
        }
    }

    /// The value starting here, inside containers `depth` deep.
    fn value(&mut self, depth: usize) -> Result<Value<'a>, String> {
        let start = self.i;
        let nested = |s: &mut Self| {
            if depth + 1 >= MAX_DEPTH {
                return Err(format!("nested more than {MAX_DEPTH} deep at byte {}", s.i));
            }
            Ok(depth + 1)
        };
        match self.peek() {
            Some(b'"') => return self.string().map(Value::String),
            Some(b'-' | b'0'..=b'9') => {
                self.number()?;
                return Ok(Value::Number(&self.text[start..self.i]));
            }
            Some(b'n') => {
                self.literal("null")?;
                return Ok(Value::Null);
            }
            Some(b't') => self.literal("true")?,
            Some(b'f') => self.literal("false")?,
            Some(b'{') => {
                let depth = nested(self)?;
                self.members(depth, &mut |_, _| Ok(()))?;
            }
            Some(b'[') => {
                let depth = nested(self)?;
                self.elements(depth)?;
            }
            _ => return Err(self.expected("a value")),
        }
        Ok(Value::Other(&self.text[start..self.i]))
    }

    /// The array starting here (at `[`), checked and skipped.
    fn elements(&mut self, depth: usize) -> Result<(), String> {
        self.i += 1;
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            self.value(depth)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(self.expected("',' or ']'")),
            }
        }
    }

    fn literal(&mut self, word: &str) -> Result<(), String> {
        if self.text[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.expected("a value"))
        }
    }

    fn digits(&mut self) -> bool {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i > start
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Result<(), String> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.expected("a digit")),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !self.digits() {
                return Err(self.expected("a digit"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !self.digits() {
                return Err(self.expected("a digit"));
            }
        }
        Ok(())
    }

    /// The string starting here (at `"`): borrowed unless it has escapes.
    fn string(&mut self) -> Result<Cow<'a, str>, String> {
        self.i += 1;
        let start = self.i;
        let mut owned: Option<String> = None;
        loop {
            // Runs of plain characters; the text is UTF-8 and every byte
            // this stops at is ASCII, so each cut is at a char boundary.
            let run = self.i;
            self.i += self.text.as_bytes()[run..]
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .unwrap_or(self.text.len() - run);
            if let Some(o) = owned.as_mut() {
                o.push_str(&self.text[run..self.i]);
            }
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(match owned {
                        Some(o) => Cow::Owned(o),
                        None => Cow::Borrowed(&self.text[start..self.i - 1]),
                    });
                }
                Some(b'\\') => {
                    let o = owned.get_or_insert_with(|| self.text[start..self.i].to_string());
                    let c = Self::escape(self.text.as_bytes(), &mut self.i)?;
                    o.push(c);
                }
                Some(_) => return Err(format!("control character in a string at byte {}", self.i)),
                None => return Err("unterminated string".into()),
            }
        }
    }

    /// The escape sequence at `b[*i]` (a backslash), decoded; `*i` moves
    /// past it.
    fn escape(b: &[u8], i: &mut usize) -> Result<char, String> {
        let at = *i;
        let bad = || format!("invalid escape at byte {at}");
        let simple = match b.get(at + 1) {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                let hex4 = |from: usize| -> Option<u32> {
                    let h = std::str::from_utf8(b.get(from..from + 4)?).ok()?;
                    if !h.bytes().all(|c| c.is_ascii_hexdigit()) {
                        return None;
                    }
                    u32::from_str_radix(h, 16).ok()
                };
                let hi = hex4(at + 2).ok_or_else(bad)?;
                *i = at + 6;
                let code = match hi {
                    0xD800..=0xDBFF => {
                        // A surrogate pair: the low half must follow.
                        let lo = (b.get(*i..*i + 2) == Some(b"\\u"))
                            .then(|| hex4(*i + 2))
                            .flatten()
                            .filter(|lo| (0xDC00..=0xDFFF).contains(lo))
                            .ok_or_else(|| format!("lone surrogate at byte {at}"))?;
                        *i += 6;
                        0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                    }
                    0xDC00..=0xDFFF => return Err(format!("lone surrogate at byte {at}")),
                    c => c,
                };
                return char::from_u32(code).ok_or_else(bad);
            }
            _ => return Err(bad()),
        };
        *i = at + 2;
        Ok(simple)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn members(text: &str) -> Result<Vec<(String, Value<'_>)>, String> {
        let mut out = Vec::new();
        for_each_member(text, |k, v| {
            out.push((k.into_owned(), v));
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn hands_over_members_as_written() {
        let m = members(
            r#" {"measurement": -45.25e1, "unit": "C", "id": "h-1", "ts": 1.5,
                "n": null, "ok": true, "list": [1, {"a": [ ]}], "o": {}} "#,
        )
        .unwrap();
        let keys: Vec<&str> = m.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["measurement", "unit", "id", "ts", "n", "ok", "list", "o"]
        );
        assert_eq!(m[0].1, Value::Number("-45.25e1"));
        assert_eq!(m[2].1, Value::String(Cow::Borrowed("h-1")));
        assert_eq!(m[4].1, Value::Null);
        assert_eq!(m[6].1, Value::Other(r#"[1, {"a": [ ]}]"#));
        assert_eq!(members("{}").unwrap(), vec![]);
    }

    #[test]
    fn decodes_escapes() {
        let m = members(r#"{"a\"b\\\/\n\u00e9\ud83d\ude00": "x\ty"}"#).unwrap();
        assert_eq!(m[0].0, "a\"b\\/\né\u{1F600}");
        assert_eq!(m[0].1, Value::String(Cow::Owned("x\ty".into())));
    }

    #[test]
    fn refuses_what_is_not_one_object() {
        for bad in [
            "",
            "[1]",
            "1",
            r#"{"a":1} {}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":-}"#,
            r#"{"a":1e}"#,
            r#"{"a":tru}"#,
            r#"{"a":1,}"#,
            r#"{a:1}"#,
            r#"{"a" 1}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\udc00x"}"#,
            "{\"a\":\"\n\"}",
            r#"{"a":"open"#,
            r#"{"a":[1,2}"#,
        ] {
            let err = members(bad).expect_err(bad);
            assert!(!err.contains('\n'), "{err:?}");
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert!(members(&deep).unwrap_err().contains("nested"));
    }

    /// Text that is often almost JSON: objects built from a small grammar,
    /// then with a few bytes changed.
    fn jsonish() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            (-1e6f64..1e6).prop_map(|x| format!("{x}")),
            (-99i64..99, -20i32..20).prop_map(|(m, e)| format!("{m}e{e}")),
            "[a-z\\\\\"é ]{0,6}".prop_map(|s| format!("\"{s}\"")),
        ];
        let value = leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec(("[a-z]{1,3}", inner), 0..4).prop_map(|v| {
                    let m: Vec<String> = v.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
                    format!("{{{}}}", m.join(", "))
                }),
            ]
        });
        let object = prop::collection::vec(("[a-z_]{1,11}", value), 0..5).prop_map(|v| {
            let m: Vec<String> = v.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            format!(" {{{}}}", m.join(","))
        });
        let edit = (
            any::<prop::sample::Index>(),
            prop::sample::select(&b"{}[]\",:\\ .-0e1tn"[..]),
        );
        (object, prop::collection::vec((edit, 0u8..3), 0..3)).prop_map(|(text, edits)| {
            let mut b = text.into_bytes();
            for ((at, byte), kind) in edits {
                let at = at.index(b.len() + 1);
                match kind {
                    0 => b.insert(at, byte),
                    1 if at < b.len() => b[at] = byte,
                    _ if at < b.len() => {
                        b.remove(at);
                    }
                    _ => {}
                }
            }
            String::from_utf8_lossy(&b).into_owned()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        /// Agrees with serde_json on what is a JSON object (numbers out of
        /// f64's range aside), on its keys and
        /// on the strings and numbers of its members.
        #[test]
        fn agrees_with_serde_json(text in jsonish()) {
            let ours = members(&text);
            let theirs = serde_json::from_str::<serde_json::Value>(&text);
            match (&ours, &theirs) {
                (Ok(ours), Ok(serde_json::Value::Object(map))) => {
                    let mut keys: Vec<&str> = ours.iter().map(|(k, _)| k.as_str()).collect();
                    keys.sort_unstable();
                    keys.dedup();
                    prop_assert_eq!(keys.len(), map.len());
                    for (i, (k, v)) in ours.iter().enumerate() {
                        // serde_json keeps the last of duplicate keys.
                        if ours[i + 1..].iter().any(|(later, _)| later == k) {
                            continue;
                        }
                        let expected = &map[k];
                        match v {
                            Value::Null => prop_assert!(expected.is_null()),
                            Value::Number(n) => {
                                // serde_json's default float parsing may be
                                // a unit in the last place off.
                                let (a, b) = (n.parse::<f64>().unwrap(), expected.as_f64().unwrap());
                                prop_assert!((a - b).abs() <= f64::EPSILON * a.abs(), "{} vs {}", a, b);
                            }
                            Value::String(s) => prop_assert_eq!(Some(&**s), expected.as_str()),
                            Value::Other(t) => prop_assert_eq!(
                                &serde_json::from_str::<serde_json::Value>(t).unwrap(),
                                expected
                            ),
                        }
                    }
                }
                // RFC 8259 sets no range on numbers; serde_json refuses
                // those beyond f64's (and so does the sensor decoder, for
                // the members it reads).
                (Ok(_), Err(e)) if e.to_string().starts_with("number out of range") => {}
                (Err(_), Err(_)) | (Err(_), Ok(_)) if !matches!(theirs, Ok(serde_json::Value::Object(_))) => {}
                _ => prop_assert!(false, "{text:?}: ours {ours:?}, serde_json {theirs:?}"),
            }
        }
    }
}
