//! Secrets a server checks (bearer tokens), compared in a time that does
//! not depend on where they differ, so that timing the answers does not
//! reveal a token byte after byte.

use subtle::ConstantTimeEq;

/// Whether `given` equals `expected`. Only the length may show in the time
/// taken, and a token's length is no secret worth keeping.
pub fn same(given: &[u8], expected: &[u8]) -> bool {
    given.ct_eq(expected).into()
}

/// The token of an `Authorization: Bearer <token>` header value; None for
/// any other scheme.
pub fn bearer(authorization: &[u8]) -> Option<&[u8]> {
    // The scheme is case-insensitive (RFC 9110, section 11.1).
    let (scheme, token) = authorization.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| token.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_only_when_equal() {
        assert!(same(b"s3cret", b"s3cret"));
        assert!(!same(b"s3cret", b"s3creT"));
        assert!(!same(b"s3cre", b"s3cret"));
        assert!(!same(b"", b"s3cret"));
    }

    #[test]
    fn bearer_tokens_are_found_in_their_header() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic YTpi"), None);
        assert_eq!(bearer(b"Bear"), None);
    }
}
