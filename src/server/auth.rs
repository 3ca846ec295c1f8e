//! Authentication of WebSocket upgrade requests, checked at registration.
//!
//! - `none`: everyone is the same anonymous user (ProxyStore's default).
//! - `token`: `Authorization: Bearer <token>` looked up in a static table.
//! - `introspection`: the bearer token is checked with an OAuth 2.0 token
//!   introspection endpoint (RFC 7662) using client credentials; the token
//!   must be `active`, carry the configured audience, and the user is `sub`.
//!
//! Missing or malformed headers are [`AuthError::Unauthorized`] (close 4001);
//! a token that is unknown, inactive or for another audience is
//! [`AuthError::Forbidden`] (close 4002).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{AuthMethod, AuthSettings, ConfigError};
use crate::defaults;
use crate::protocol::close;

use super::messages::User;

/// Why a client was not authenticated.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No usable `Authorization` header.
    #[error("UnauthorizedError: {0}")]
    Unauthorized(String),
    /// The credentials were understood and refused.
    #[error("ForbiddenError: {0}")]
    Forbidden(String),
    /// The identity provider could not be asked; the client may retry.
    #[error("Authentication provider unavailable: {0}")]
    Unavailable(String),
}

impl AuthError {
    /// The WebSocket close code for this failure.
    pub fn close_code(&self) -> u16 {
        match self {
            AuthError::Unauthorized(_) => close::UNAUTHORIZED,
            AuthError::Forbidden(_) => close::FORBIDDEN,
            AuthError::Unavailable(_) => close::TRY_AGAIN_LATER,
        }
    }
}

/// Checks credentials from the upgrade request's `Authorization` header.
pub enum Authenticator {
    /// No authentication.
    None,
    /// Static bearer tokens: token → user.
    Token(HashMap<String, Arc<str>>),
    /// OAuth 2.0 token introspection.
    Introspection(Introspector),
}

impl Authenticator {
    /// Builds the authenticator `settings` describe (reads `tokens_file`).
    pub fn from_settings(settings: &AuthSettings) -> Result<Self, ConfigError> {
        match settings.method {
            AuthMethod::None => Ok(Authenticator::None),
            AuthMethod::Token => {
                let mut table = HashMap::new();
                for (user, token) in &settings.tokens {
                    table.insert(token.expose().to_owned(), Arc::from(user.as_str()));
                }
                if let Some(path) = &settings.tokens_file {
                    read_tokens_file(path, &mut table)?;
                }
                Ok(Authenticator::Token(table))
            }
            AuthMethod::Introspection => Ok(Authenticator::Introspection(Introspector {
                url: settings.introspection_url.clone().unwrap_or_default(),
                client_id: settings.client_id.clone().unwrap_or_default(),
                client_secret: settings
                    .client_secret
                    .as_ref()
                    .map(|s| s.expose().to_owned())
                    .unwrap_or_default(),
                audience: settings.audience.clone(),
                timeout: Duration::from_millis(settings.introspection_timeout_ms),
                cache_ttl: Duration::from_secs(settings.introspection_cache_secs),
                cache: Mutex::new(HashMap::new()),
            })),
        }
    }

    /// Authenticates a client from its `Authorization` header value.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<User, AuthError> {
        match self {
            Authenticator::None => Ok(None),
            Authenticator::Token(table) => {
                let token = bearer(authorization)?;
                table
                    .get(token)
                    .map(|user| Some(user.clone()))
                    .ok_or_else(|| AuthError::Forbidden("The bearer token is not valid.".into()))
            }
            Authenticator::Introspection(introspector) => {
                let token = bearer(authorization)?;
                introspector.check(token).await.map(Some)
            }
        }
    }
}

fn read_tokens_file(path: &Path, table: &mut HashMap<String, Arc<str>>) -> Result<(), ConfigError> {
    let bad = |message: String| ConfigError::Invalid {
        key: "auth.tokens_file".into(),
        message,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(user), Some(token), None) => {
                table.insert(token.to_owned(), Arc::from(user));
            }
            _ => {
                return Err(bad(format!(
                    "{} line {}: expected `user token`",
                    path.display(),
                    number + 1
                )))
            }
        }
    }
    Ok(())
}

/// Extracts the token of `Bearer <token>` (scheme case-insensitive).
fn bearer(authorization: Option<&str>) -> Result<&str, AuthError> {
    let header = authorization.ok_or_else(|| {
        AuthError::Unauthorized("Request headers do not contain an Authorization header.".into())
    })?;
    let malformed = || {
        AuthError::Unauthorized(
            "The Authorization header is not of the form `Bearer <token>`.".into(),
        )
    };
    crate::protocol::bearer::bearer_token(header).ok_or_else(malformed)
}

/// An RFC 7662 token introspection client with a small positive-result cache.
pub struct Introspector {
    url: String,
    client_id: String,
    client_secret: String,
    audience: Option<String>,
    timeout: Duration,
    cache_ttl: Duration,
    cache: Mutex<HashMap<String, (Arc<str>, Instant)>>,
}

impl Introspector {
    fn cached(&self, token: &str) -> Option<Arc<str>> {
        let cache = self.cache.lock().ok()?;
        let (user, at) = cache.get(token)?;
        (at.elapsed() < self.cache_ttl).then(|| user.clone())
    }

    fn remember(&self, token: &str, user: &Arc<str>) {
        if self.cache_ttl.is_zero() {
            return;
        }
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= defaults::INTROSPECTION_CACHE_ENTRIES {
                let ttl = self.cache_ttl;
                cache.retain(|_, (_, at)| at.elapsed() < ttl);
                if cache.len() >= defaults::INTROSPECTION_CACHE_ENTRIES {
                    cache.clear();
                }
            }
            cache.insert(token.to_owned(), (user.clone(), Instant::now()));
        }
    }

    async fn check(&self, token: &str) -> Result<Arc<str>, AuthError> {
        if let Some(user) = self.cached(token) {
            return Ok(user);
        }
        let client = awc::Client::builder().timeout(self.timeout).finish();
        let mut response = client
            .post(&self.url)
            .basic_auth(&self.client_id, &self.client_secret)
            .insert_header(("Accept", "application/json"))
            .send_form(&[("token", token)])
            .await
            .map_err(|e| AuthError::Unavailable(format!("introspection request failed: {e}")))?;
        if !response.status().is_success() {
            return Err(AuthError::Unavailable(format!(
                "introspection endpoint answered HTTP {}",
                response.status().as_u16()
            )));
        }
        let body: serde_json::Value = response.json().limit(64 * 1024).await.map_err(|e| {
            AuthError::Unavailable(format!("introspection answer is not JSON: {e}"))
        })?;
        let user = self.judge(&body)?;
        self.remember(token, &user);
        Ok(user)
    }

    /// Applies RFC 7662's rules to an introspection answer.
    fn judge(&self, body: &serde_json::Value) -> Result<Arc<str>, AuthError> {
        if body.get("active").and_then(|v| v.as_bool()) != Some(true) {
            return Err(AuthError::Forbidden(
                "The token is not active (expired or revoked).".into(),
            ));
        }
        if let Some(want) = &self.audience {
            let matches = match body.get("aud") {
                Some(serde_json::Value::String(aud)) => aud == want,
                Some(serde_json::Value::Array(auds)) => {
                    auds.iter().any(|a| a.as_str() == Some(want))
                }
                _ => false,
            };
            if !matches {
                return Err(AuthError::Forbidden(format!(
                    "The token's audience does not include {want}."
                )));
            }
        }
        match body.get("sub").and_then(|v| v.as_str()) {
            Some(sub) if !sub.is_empty() => Ok(Arc::from(sub)),
            _ => Err(AuthError::Forbidden(
                "The introspected token has no subject (sub).".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Ok("abc"));
        assert!(matches!(bearer(None), Err(AuthError::Unauthorized(_))));
        for bad in ["abc", "Basic abc", "Bearer", "Bearer ", "Bearer a b"] {
            assert!(
                matches!(bearer(Some(bad)), Err(AuthError::Unauthorized(_))),
                "{bad}"
            );
        }
    }
}
