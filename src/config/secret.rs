//! Secrets in the settings: [`Secret`] (tokens, client secrets) and the
//! passwords of URLs. `Debug` prints `MASKED`; serializing (what
//! `switchboard check-config` prints) gives [`MASK`]; only `expose` gives
//! the value, where it is used.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A value that must never be printed (tokens, client secrets).
#[derive(Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret string.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself; call only where it is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// What [`Secret`] and the passwords of URLs serialize as: settings printed
/// by `switchboard check-config` never show a secret.
pub const MASK: &str = "***";

/// Serializes as [`MASK`], never as the secret (`switchboard check-config`).
impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(MASK)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MASKED")
    }
}

/// `url` with the password of its `user:password@` part replaced by `mask`
/// (the whole part when it has no `:`); unchanged when it has none.
pub(super) fn mask_url_password(url: &str, mask: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let shown = match rest[..at].split_once(':') {
        Some((user, _)) => format!("{user}:{mask}"),
        None => mask.to_owned(),
    };
    format!("{}{shown}{}", &url[..start], &rest[at..])
}

/// Serializes an optional URL with its password masked as [`MASK`].
pub(crate) fn serialize_masked_url<S: serde::Serializer>(
    url: &Option<String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match url {
        Some(url) => serializer.serialize_some(&mask_url_password(url, MASK)),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_serialize_masked() {
        let secret = Secret::new("hunter2");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"***\"");
        assert_eq!(format!("{secret:?}"), "MASKED");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn url_passwords_are_masked_and_nothing_else() {
        for (url, shown) in [
            ("http://u:p@h:1/x", "http://u:***@h:1/x"),
            ("http://token@h", "http://***@h"),
            ("http://h/a@b", "http://h/a@b"),
            ("https://u:p:q@h?x=@", "https://u:***@h?x=@"),
            ("no-scheme:p@h", "no-scheme:p@h"),
        ] {
            assert_eq!(mask_url_password(url, MASK), shown, "{url}");
        }
    }
}
