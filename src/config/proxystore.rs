//! ProxyStore's relay configuration, read as is: `switchboard
//! --proxystore-config relay.toml` takes the TOML file `proxystore-relay
//! --config` takes, and ProxyStore's `--host`, `--port`, `--log-dir` and
//! `--log-level` on the same command line.
//!
//! The file is translated into this crate's settings tree, which is then
//! layered as usual (environment `SWITCHBOARD__…`, then the CLI) and
//! validated; an error names ProxyStore's key. Keys ProxyStore ignores are
//! warnings; so are keys this relay cannot honour (`websockets_level`).
//! `[auth]` keys ProxyStore refuses are refused here too. The admin
//! listener is off (ProxyStore's relay has none) unless the environment
//! turns it on (`SWITCHBOARD__ADMIN__ENABLED=true`).

use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::{invalid, ConfigError, Overrides, Settings, ENV_PREFIX};
use crate::defaults;

/// Environment variable with the Globus client id, when `[auth.kwargs]` lacks one.
pub const GLOBUS_CLIENT_ID_ENV: &str = "PROXYSTORE_GLOBUS_CLIENT_ID";
/// Environment variable with the Globus client secret, when `[auth.kwargs]` lacks one.
pub const GLOBUS_CLIENT_SECRET_ENV: &str = "PROXYSTORE_GLOBUS_CLIENT_SECRET";
/// **For tests only**: replaces Globus's introspection endpoint
/// ([`defaults::GLOBUS_INTROSPECT_URL`]) so a stand-in on loopback answers.
pub const GLOBUS_INTROSPECT_URL_ENV: &str = "SWITCHBOARD_GLOBUS_INTROSPECT_URL";

/// `proxystore-relay`'s command-line options (they override the file).
#[derive(Debug, Clone, Default)]
pub struct ProxyStoreCli {
    /// `--host ADDR`.
    pub host: Option<String>,
    /// `--port PORT`.
    pub port: Option<u16>,
    /// `--log-dir PATH`.
    pub log_dir: Option<PathBuf>,
    /// `--log-level` with ProxyStore's names (DEBUG, INFO, WARNING, ERROR,
    /// CRITICAL; any case).
    pub log_level: Option<String>,
}

/// Settings read from a ProxyStore relay file, and what to warn about.
#[derive(Debug)]
pub struct ProxyStoreLoaded {
    /// The effective settings.
    pub settings: Settings,
    /// One line per key ignored or not honoured; log them once logging is up.
    pub warnings: Vec<String>,
}

/// Our key → ProxyStore's, to name ProxyStore's key in errors.
const ORIGIN: &[(&str, &str)] = &[
    ("server.host", "host"),
    ("server.port", "port"),
    ("server.certfile", "certfile"),
    ("server.keyfile", "keyfile"),
    ("server.max_message_bytes", "max_message_bytes"),
    ("auth.client_id", "auth.kwargs.client_id"),
    ("auth.client_secret", "auth.kwargs.client_secret"),
    ("auth.audience", "auth.kwargs.audience"),
    ("auth.introspection_url", GLOBUS_INTROSPECT_URL_ENV),
    ("log.level", "logging.default_level"),
    ("log.dir", "logging.log_dir"),
];

/// Keys ProxyStore's own documentation has used that it does not read,
/// with the key that does what they mean.
const MISNAMED: &[(&str, &str)] = &[
    ("logging.default_log_level", "logging.default_level"),
    ("logging.websockets_log_level", "logging.websockets_level"),
    (
        "logging.connected_client_logging_interval",
        "logging.current_client_interval",
    ),
    (
        "logging.connected_client_logging_limit",
        "logging.current_client_limit",
    ),
    ("serving", "the top-level keys"),
];

/// This crate's log filter for a ProxyStore (Python) level: a name in any
/// case (`WARNING`, `warn`, …) or a number (10 = DEBUG … 50 = CRITICAL).
/// Python has no level under DEBUG that ProxyStore logs, and nothing above
/// ERROR here: `NOTSET` is `trace`, `CRITICAL` is `error`.
pub fn proxystore_level(level: &str) -> Option<&'static str> {
    let named = match level.trim().to_ascii_uppercase().as_str() {
        "NOTSET" => "trace",
        "DEBUG" => "debug",
        "INFO" => "info",
        "WARN" | "WARNING" => "warn",
        "ERROR" => "error",
        "CRITICAL" | "FATAL" => "error",
        number => return number.parse::<i64>().ok().map(numeric_level),
    };
    Some(named)
}

fn numeric_level(number: i64) -> &'static str {
    match number {
        i64::MIN..=0 => "trace",
        1..=10 => "debug",
        11..=20 => "info",
        21..=30 => "warn",
        _ => "error",
    }
}

impl Settings {
    /// Reads ProxyStore's relay file `path`, applies `cli`, then the
    /// environment (`SWITCHBOARD__…`), and validates.
    ///
    /// Errors: [`ConfigError::Load`] when the file cannot be read or is not
    /// TOML; [`ConfigError::Invalid`] naming ProxyStore's key otherwise.
    pub fn load_proxystore(
        path: &Path,
        cli: &ProxyStoreCli,
    ) -> Result<ProxyStoreLoaded, ConfigError> {
        let env = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true);
        Self::load_proxystore_with(path, cli, env, &|name| std::env::var(name).ok())
    }

    /// Like [`Settings::load_proxystore`] with explicit environment sources:
    /// `env` for `SWITCHBOARD__…`, `vars` for ProxyStore's variables.
    pub fn load_proxystore_with(
        path: &Path,
        cli: &ProxyStoreCli,
        env: config::Environment,
        vars: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ProxyStoreLoaded, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Load(format!("cannot read {}: {e}", path.display())))?;
        let file: Table = text
            .parse()
            .map_err(|e| ConfigError::Load(format!("{} is not TOML: {e}", path.display())))?;
        let mut translation = Translation::default();
        translation.file(&file, vars)?;
        let overrides = translation.cli(cli)?;
        let ours = toml::to_string(&translation.ours)
            .map_err(|e| ConfigError::Load(format!("cannot translate {}: {e}", path.display())))?;
        let mut settings = Settings::load_layers(Some(&ours), &overrides, env).map_err(theirs)?;
        if let Some(dir) = &cli.log_dir {
            settings.log.dir = Some(dir.clone());
            settings.log.validate().map_err(theirs)?;
        }
        check_tls(&settings, !file.contains_key("keyfile"))?;
        Ok(ProxyStoreLoaded {
            settings,
            warnings: translation.warnings,
        })
    }
}

/// Renames our key in `error` to ProxyStore's, where it has one, and our
/// keys its message mentions (`required with server.keyfile`) too.
fn theirs(error: ConfigError) -> ConfigError {
    match error {
        ConfigError::Invalid { key, message } => {
            let key = match ORIGIN.iter().find(|(ours, _)| *ours == key) {
                Some((_, theirs)) => (*theirs).to_owned(),
                None => key,
            };
            let message = ORIGIN
                .iter()
                .fold(message, |m, (ours, theirs)| m.replace(ours, theirs));
            ConfigError::Invalid { key, message }
        }
        other => other,
    }
}

/// Loads the certificate and key now, so that an unusable pair is refused
/// naming ProxyStore's key (`certfile` or `keyfile`) rather than ours.
/// `key_from_cert`: the file has no `keyfile`, so (as in ProxyStore) the key
/// is read from the certfile, and a missing key is the certfile's fault.
fn check_tls(settings: &Settings, key_from_cert: bool) -> Result<(), ConfigError> {
    let (Some(cert), Some(key)) = (&settings.server.certfile, &settings.server.keyfile) else {
        return Ok(());
    };
    let Err(blamed) = crate::tls::server_config_blamed(cert, key) else {
        return Ok(());
    };
    let (key, message) = match blamed.file {
        crate::tls::TlsFile::Key if key_from_cert && cert == key => (
            "certfile",
            format!(
                "{} (with no keyfile, the private key is read from the certfile)",
                blamed.error
            ),
        ),
        crate::tls::TlsFile::Key => ("keyfile", blamed.error.to_string()),
        crate::tls::TlsFile::Cert => ("certfile", blamed.error.to_string()),
    };
    Err(ConfigError::Invalid {
        key: key.to_owned(),
        message,
    })
}

/// ProxyStore's file turned into this crate's tree, with the warnings.
#[derive(Default)]
struct Translation {
    ours: Table,
    warnings: Vec<String>,
}

impl Translation {
    /// Sets `section.key` in our tree.
    fn set(&mut self, section: &str, key: &str, value: impl Into<Value>) {
        let table = self
            .ours
            .entry(section)
            .or_insert_with(|| Value::Table(Table::new()));
        if let Value::Table(table) = table {
            table.insert(key.to_owned(), value.into());
        }
    }

    fn ignored(&mut self, key: &str) {
        let hint = MISNAMED
            .iter()
            .find(|(wrong, _)| *wrong == key)
            .map(|(_, right)| format!(" (did you mean {right}?)"))
            .unwrap_or_default();
        self.warnings.push(format!(
            "`{key}` is not a setting of ProxyStore's relay; ignored, as proxystore-relay ignores it{hint}"
        ));
    }

    fn file(
        &mut self,
        file: &Table,
        vars: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        self.set("admin", "enabled", false);
        self.set("log", "level", defaults::LOG_LEVEL);
        let interval = defaults::PROXYSTORE_CLIENT_INTERVAL_SECS as i64;
        self.set("log", "clients_interval_secs", interval);
        self.set(
            "log",
            "clients_limit",
            defaults::PROXYSTORE_CLIENT_LIMIT as i64,
        );
        for (key, value) in file {
            match key.as_str() {
                "host" => self.set("server", "host", string(key, value)?),
                "port" => self.set("server", "port", integer(key, value, 0, 65_535)?),
                "certfile" => self.set("server", "certfile", string(key, value)?),
                "keyfile" => self.set("server", "keyfile", string(key, value)?),
                "max_message_bytes" => {
                    let most = i64::MAX;
                    self.set("server", "max_message_bytes", integer(key, value, 1, most)?)
                }
                "auth" => self.auth(table(key, value)?, vars)?,
                "logging" => self.logging(table(key, value)?)?,
                other => self.ignored(other),
            }
        }
        // ProxyStore: "If [keyfile is] not specified, the key will be taken
        // from the certfile."
        if let (Some(cert), None) = (file.get("certfile"), file.get("keyfile")) {
            self.set("server", "keyfile", cert.clone());
        }
        Ok(())
    }

    fn auth(
        &mut self,
        auth: &Table,
        vars: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        if let Some(key) = auth
            .keys()
            .find(|k| !["method", "kwargs"].contains(&k.as_str()))
        {
            return Err(invalid(
                &format!("auth.{key}"),
                "not a key of [auth] (ProxyStore refuses it too): only method and kwargs",
            ));
        }
        let kwargs = match auth.get("kwargs") {
            Some(value) => table("auth.kwargs", value)?.clone(),
            None => Table::new(),
        };
        let method = auth
            .get("method")
            .map(|m| string("auth.method", m))
            .transpose()?;
        match method.as_deref() {
            None => {
                if !kwargs.is_empty() {
                    self.warnings.push(
                        "`auth.kwargs` is ignored: [auth] has no method, so clients are not authenticated"
                            .into(),
                    );
                }
                Ok(())
            }
            Some("globus") => self.globus(&kwargs, vars),
            Some(other) => Err(invalid(
                "auth.method",
                format!("{other:?} is not an authentication method of ProxyStore's relay: \"globus\", or no method for none"),
            )),
        }
    }

    fn globus(
        &mut self,
        kwargs: &Table,
        vars: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let known = ["client_id", "client_secret", "audience"];
        if let Some(key) = kwargs.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(invalid(
                &format!("auth.kwargs.{key}"),
                "not an argument of ProxyStore's Globus authenticator: client_id, client_secret, audience",
            ));
        }
        let get = |key: &str| {
            kwargs
                .get(key)
                .map(|v| string(&format!("auth.kwargs.{key}"), v))
                .transpose()
        };
        let (id, secret) = match (get("client_id")?, get("client_secret")?) {
            (Some(id), Some(secret)) => (id, secret),
            // As ProxyStore: unless both are given, both come from the environment.
            _ => match (vars(GLOBUS_CLIENT_ID_ENV), vars(GLOBUS_CLIENT_SECRET_ENV)) {
                (Some(id), Some(secret)) => (id, secret),
                _ => {
                    return Err(invalid(
                        "auth.kwargs.client_id",
                        format!("method \"globus\" needs client_id and client_secret in [auth.kwargs], or {GLOBUS_CLIENT_ID_ENV} and {GLOBUS_CLIENT_SECRET_ENV} in the environment"),
                    ))
                }
            },
        };
        let audience =
            get("audience")?.unwrap_or_else(|| defaults::PROXYSTORE_RELAY_AUDIENCE.into());
        let url = match vars(GLOBUS_INTROSPECT_URL_ENV) {
            Some(url) => {
                self.warnings.push(format!(
                    "Globus introspection goes to {url}, not Globus: {GLOBUS_INTROSPECT_URL_ENV} is set (it is for tests only)"
                ));
                url
            }
            None => defaults::GLOBUS_INTROSPECT_URL.into(),
        };
        self.set("auth", "method", "introspection");
        self.set("auth", "introspection_url", url);
        self.set("auth", "client_id", id);
        self.set("auth", "client_secret", secret);
        self.set("auth", "audience", audience);
        Ok(())
    }

    fn logging(&mut self, logging: &Table) -> Result<(), ConfigError> {
        for (key, value) in logging {
            let named = format!("logging.{key}");
            match key.as_str() {
                "log_dir" => self.set("log", "dir", string(&named, value)?),
                "default_level" => self.set("log", "level", level(&named, value)?),
                "websockets_level" => {
                    level(&named, value)?;
                    self.warnings.push(format!(
                        "`{named}` is not honoured: Switchboard has no Python `websockets` logger; its WebSocket layer logs at logging.default_level (or per target with RUST_LOG, e.g. actix_http=warn)"
                    ));
                }
                "current_client_interval" => {
                    let secs = integer(&named, value, 1, i64::from(u32::MAX))?;
                    self.set("log", "clients_interval_secs", secs)
                }
                "current_client_limit" => {
                    let limit = integer(&named, value, 0, i64::from(u32::MAX))?;
                    self.set("log", "clients_limit", limit)
                }
                _ => self.ignored(&named),
            }
        }
        Ok(())
    }

    /// ProxyStore's CLI options: `--log-dir` is applied by the caller,
    /// the others become [`Overrides`].
    fn cli(&mut self, cli: &ProxyStoreCli) -> Result<Overrides, ConfigError> {
        // ProxyStore's level names, or one of ours (a level or a filter spec).
        let log_level = match &cli.log_level {
            Some(name) => Some(
                match proxystore_level(name).filter(|_| name.parse::<i64>().is_err()) {
                    Some(level) => level.to_owned(),
                    None => {
                        super::logs::check_log_level(name).map_err(|_| {
                            invalid(
                                "--log-level",
                                format!(
                                    "{name:?} is neither one of ProxyStore's DEBUG, INFO, \
                                     WARNING, ERROR, CRITICAL nor off, error, warn, info, \
                                     debug, trace or an env_logger filter spec"
                                ),
                            )
                        })?;
                        name.clone()
                    }
                },
            ),
            None => None,
        };
        Ok(Overrides {
            host: cli.host.clone(),
            port: cli.port,
            log_level,
        })
    }
}

fn table<'a>(key: &str, value: &'a Value) -> Result<&'a Table, ConfigError> {
    value
        .as_table()
        .ok_or_else(|| invalid(key, format!("expected a table, found {}", value.type_str())))
}

fn string(key: &str, value: &Value) -> Result<String, ConfigError> {
    value.as_str().map(str::to_owned).ok_or_else(|| {
        invalid(
            key,
            format!("expected a string, found {}", value.type_str()),
        )
    })
}

/// An integer in `least..=most`; like ProxyStore (pydantic), a string of
/// digits is taken too.
fn integer(key: &str, value: &Value, least: i64, most: i64) -> Result<i64, ConfigError> {
    let number = match value {
        Value::Integer(n) => Some(*n),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| invalid(key, format!("expected an integer, found {value}")))?;
    if (least..=most).contains(&number) {
        Ok(number)
    } else {
        Err(invalid(
            key,
            format!("{number} is out of range {least}..={most}"),
        ))
    }
}

/// A Python logging level (name or number) as this crate's filter.
fn level(key: &str, value: &Value) -> Result<String, ConfigError> {
    let found = match value {
        Value::String(name) => proxystore_level(name),
        Value::Integer(number) => Some(numeric_level(*number)),
        _ => None,
    };
    found.map(str::to_owned).ok_or_else(|| {
        invalid(
            key,
            format!(
                "{value} is not a logging level: DEBUG, INFO, WARNING, ERROR, CRITICAL or a number"
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_levels() {
        assert_eq!(proxystore_level("WARNING"), Some("warn"));
        assert_eq!(proxystore_level("critical"), Some("error"));
        assert_eq!(proxystore_level("20"), Some("info"));
        assert_eq!(proxystore_level("LOUD"), None);
        assert_eq!(numeric_level(10), "debug");
        assert_eq!(numeric_level(50), "error");
    }
}
