//! State versions: each stored state carries the version of its type, so
//! that a program whose state type changed still reads what an older one
//! wrote, through an upgrade it provides, and tells a state it cannot read
//! (damaged bytes, a change without an upgrade) from one it can.
//!
//! Encoding, in the changelog and in snapshots alike: a state of version 0
//! is its JSON alone, exactly as states were stored before versions
//! existed, so those load as version 0 and a type that never changes pays
//! nothing. A state of version N ≥ 1 is `@N ` (an at sign, N in decimal,
//! a space) followed by its JSON: three or four bytes, still text for any
//! Kafka tool, and never mistaken for JSON, which cannot begin with `@`.

use serde::de::DeserializeOwned;

use riffle_base::error::{Error, Result};

/// A state as it was stored: the version of the type that wrote it, and
/// its JSON. What an upgrade is given.
#[derive(Debug, Clone, Copy)]
pub struct StoredState<'a> {
    pub version: u32,
    pub json: &'a [u8],
}

impl StoredState<'_> {
    /// The JSON decoded as `T`, the type of that version.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(self.json)
            .map_err(|e| Error::Decode(format!("state of version {}: {e}", self.version)))
    }

    /// The error for a version no upgrade knows.
    pub fn unknown(&self) -> Error {
        Error::Decode(format!("no upgrade from state version {}", self.version))
    }
}

/// How states are stored and read back: the version written now, and how
/// a state of an older version becomes one of the current type.
pub trait Upgrade<S> {
    /// The version of the state type written now; 0 until it first
    /// changes.
    fn version(&self) -> u32;

    /// `old`, stored by an older version, as a state of the current type.
    /// An error makes the state damaged: it goes to the dead-letter topic
    /// and its key starts afresh.
    fn upgrade(&self, old: StoredState<'_>) -> Result<S>;
}

/// A state type that never changed: version 0, nothing to upgrade.
pub struct Unversioned;

impl<S> Upgrade<S> for Unversioned {
    fn version(&self) -> u32 {
        0
    }

    fn upgrade(&self, old: StoredState<'_>) -> Result<S> {
        Err(old.unknown())
    }
}

/// A stored state that does not decode: what its key held, and why it
/// does not decode. Its key starts afresh; the runtime sends it to the
/// dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damaged {
    pub key: Vec<u8>,
    /// The stored bytes, version prefix and all.
    pub value: Vec<u8>,
    pub reason: String,
    /// The changelog partition and offset it was read at; `None` when it
    /// came from a snapshot.
    pub position: Option<(i32, i64)>,
}

/// Why a stored state does not decode.
pub(crate) enum Unreadable {
    /// Bad bytes, a type changed without an upgrade, a failed upgrade.
    Damaged(String),
    /// Written by a newer version of the state type than this program's.
    Newer(u32),
}

/// The version prefix for `version`, into `buf` (nothing for 0).
pub(crate) fn write_prefix(version: u32, buf: &mut Vec<u8>) {
    if version > 0 {
        buf.push(b'@');
        buf.extend_from_slice(version.to_string().as_bytes());
        buf.push(b' ');
    }
}

/// A stored state's version and its JSON.
pub(crate) fn split(value: &[u8]) -> std::result::Result<StoredState<'_>, String> {
    let Some(rest) = value.strip_prefix(b"@") else {
        return Ok(StoredState {
            version: 0,
            json: value,
        });
    };
    let space = rest
        .iter()
        .position(|&b| b == b' ')
        .ok_or("a version prefix without its end")?;
    let version = std::str::from_utf8(&rest[..space])
        .ok()
        .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|d| d.parse().ok())
        .ok_or("a malformed version prefix")?;
    Ok(StoredState {
        version,
        json: &rest[space + 1..],
    })
}

/// Decodes a stored state as the current type, upgrading an older one;
/// `true` with it when it was upgraded.
pub(crate) fn decode_state<S: DeserializeOwned>(
    value: &[u8],
    upgrade: &dyn Upgrade<S>,
) -> std::result::Result<(S, bool), Unreadable> {
    let stored = split(value).map_err(|e| Unreadable::Damaged(e.to_owned()))?;
    let current = upgrade.version();
    if stored.version == current {
        return serde_json::from_slice(stored.json)
            .map(|s| (s, false))
            .map_err(|e| Unreadable::Damaged(e.to_string()));
    }
    if stored.version > current {
        return Err(Unreadable::Newer(stored.version));
    }
    upgrade
        .upgrade(stored)
        .map(|s| (s, true))
        .map_err(|e| Unreadable::Damaged(format!("upgrade from version {}: {e}", stored.version)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unprefixed_states_are_version_0_and_prefixes_round_trip() {
        let s = split(br#"{"a":1}"#).unwrap();
        assert_eq!((s.version, s.json), (0, &br#"{"a":1}"#[..]));
        for v in [1, 7, 12, u32::MAX] {
            let mut buf = Vec::new();
            write_prefix(v, &mut buf);
            buf.extend_from_slice(b"[1]");
            let s = split(&buf).unwrap();
            assert_eq!((s.version, s.json), (v, &b"[1]"[..]));
        }
        let mut buf = Vec::new();
        write_prefix(0, &mut buf);
        assert!(buf.is_empty(), "version 0 is stored as before");
        for bad in [&b"@"[..], b"@1", b"@ {}", b"@x {}", b"@99999999999 {}"] {
            assert!(split(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    /// Version 2 stores a count; version 1 stored it as text, version 0
    /// in an object.
    struct Counts;
    impl Upgrade<u64> for Counts {
        fn version(&self) -> u32 {
            2
        }
        fn upgrade(&self, old: StoredState<'_>) -> Result<u64> {
            #[derive(serde::Deserialize)]
            struct V0 {
                n: u64,
            }
            match old.version {
                0 => Ok(old.decode::<V0>()?.n),
                1 => old
                    .decode::<String>()?
                    .parse()
                    .map_err(|e| Error::Decode(format!("{e}"))),
                _ => Err(old.unknown()),
            }
        }
    }

    #[test]
    fn older_versions_are_upgraded_newer_refused_and_bad_ones_damaged() {
        let ok = |v: &[u8]| match decode_state(v, &Counts) {
            Ok(r) => Ok(r),
            Err(Unreadable::Damaged(why)) => Err(why),
            Err(Unreadable::Newer(n)) => Err(format!("newer {n}")),
        };
        assert_eq!(ok(b"@2 5"), Ok((5, false)));
        assert_eq!(ok(br#"{"n":6}"#), Ok((6, true)));
        assert_eq!(ok(br#"@1 "7""#), Ok((7, true)));
        assert_eq!(ok(b"@3 8"), Err("newer 3".into()));
        let why = ok(br#"@1 "seven""#).unwrap_err();
        assert!(why.starts_with("upgrade from version 1"), "{why}");
        assert!(ok(b"@2 {").is_err());
        assert!(ok(br#"{"m":1}"#).unwrap_err().contains("missing field"));
        let unversioned = decode_state::<u64>(b"@1 5", &Unversioned);
        assert!(matches!(unversioned, Err(Unreadable::Newer(1))));
        let old = decode_state::<u64>(b"5", &Unversioned);
        assert!(matches!(old, Ok((5, false))));
    }
}
