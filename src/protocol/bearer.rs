//! The token of an HTTP `Authorization: Bearer <token>` header (RFC 6750
//! §2.1), with the scheme matched case-insensitively as RFC 9110 §11.1 asks.
//! Shared by the relay's client authentication, the admin listener and the
//! host agent's metrics listener.

/// The token of `Bearer <token>`, or `None` when the header has another
/// scheme, no token, or more than one word after the scheme. Spaces around
/// the header and between scheme and token are allowed.
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' '))
        .then_some(token)
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn scheme_in_any_case_and_one_token() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("BEARER abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer a b"), None);
        assert_eq!(bearer_token("Bearerabc"), None);
    }
}
