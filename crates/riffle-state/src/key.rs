//! Keys of state stores: inline when short.
//!
//! A store holds one key per entity it has seen, and most keys (device ids,
//! user ids, names) are short. As a `String`, each would add a heap block of
//! 32 bytes or more to its entry; a million heaters' ids alone would take
//! some 50 MB. A [`Key`] is 24 bytes like a `String`, and holds up to 22
//! bytes of text in place.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

const INLINE: usize = 22;

#[derive(Clone)]
pub struct Key(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

impl Key {
    pub fn new(s: &str) -> Self {
        if s.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            Key(Repr::Inline {
                len: s.len() as u8,
                bytes,
            })
        } else {
            Key(Repr::Heap(s.into()))
        }
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            // SAFETY: the bytes were copied whole from a `&str` in `new`.
            Repr::Inline { len, bytes } => unsafe {
                std::str::from_utf8_unchecked(&bytes[..*len as usize])
            },
            Repr::Heap(s) => s,
        }
    }
}

impl Deref for Key {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

/// Lookups by `&str`, so a probe allocates nothing.
impl Borrow<str> for Key {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

/// Hashes as the `str` it holds, as `Borrow<str>` requires.
impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Key {}

/// Ordered as the `str` it holds.
impl Ord for Key {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn short_and_long_keys_round_trip_and_look_up_by_str() {
        let texts = [
            "",
            "heater-1",
            "é-ünïcødé",
            &"k".repeat(22),
            &"x".repeat(23),
            &"long-".repeat(40),
        ];
        let mut map = HashMap::new();
        for (i, t) in texts.iter().enumerate() {
            let k = Key::new(t);
            assert_eq!(k.as_str(), *t);
            map.insert(k, i);
        }
        for (i, t) in texts.iter().enumerate() {
            assert_eq!(map.get(*t), Some(&i), "{t:?}");
        }
        assert_eq!(map.get("heater-2"), None);
        assert_eq!(std::mem::size_of::<Key>(), 24);
    }
}
