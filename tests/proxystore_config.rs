//! Proves ProxyStore's relay TOML is read as is (`--proxystore-config`):
//! ProxyStore's own example configs (tests/fixtures/proxystore/valid, copied
//! from its docs) load and map onto our settings key by key; keys ProxyStore
//! ignores come back as warnings (with the right name when the docs used a
//! wrong one), `websockets_level` as a warning that it is not honoured;
//! every file in tests/fixtures/proxystore/invalid fails naming ProxyStore's
//! key from its `# key:` line (and saying its `# says:` line; TLS files that
//! hold no key, no certificate or a key of another certificate among them); Globus credentials come from the environment
//! as in ProxyStore; ProxyStore's CLI options override the file.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use switchboard::config::{
    AuthMethod, ConfigError, ProxyStoreCli, ProxyStoreLoaded, Settings, ENV_PREFIX,
    GLOBUS_CLIENT_ID_ENV, GLOBUS_CLIENT_SECRET_ENV,
};
use switchboard::defaults;

fn env_with(vars: &[(&str, &str)]) -> config::Environment {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    config::Environment::with_prefix(ENV_PREFIX)
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true)
        .source(Some(map))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/proxystore")
        .join(name)
}

fn toml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(fixture(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {dir}");
    files
}

/// Loads `path` with ProxyStore's variables `vars` and no `SWITCHBOARD__` ones.
fn load_vars(
    path: &Path,
    cli: &ProxyStoreCli,
    vars: &[(&str, &str)],
) -> Result<ProxyStoreLoaded, ConfigError> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::load_proxystore_with(path, cli, env_with(&[]), &|name| vars.get(name).cloned())
}

fn load(name: &str) -> ProxyStoreLoaded {
    load_vars(&fixture(name), &ProxyStoreCli::default(), &[])
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn invalid_key(result: Result<ProxyStoreLoaded, ConfigError>) -> String {
    match result {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("expected an invalid key, got {other:?}"),
    }
}

#[test]
fn proxystore_examples_load_or_name_their_missing_certificate() {
    for path in toml_files("valid") {
        let text = fs::read_to_string(&path).unwrap();
        let result = load_vars(&path, &ProxyStoreCli::default(), &[]);
        // Certificate paths are relative to the working directory (as in
        // ProxyStore) or made up (its docstring): the file is then named.
        let table: toml::Table = text.parse().unwrap();
        if table.contains_key("certfile") {
            assert_eq!(invalid_key(result), "certfile", "{}", path.display());
        } else if let Err(e) = result {
            panic!("{}: {e}", path.display());
        }
    }
}

#[test]
fn every_invalid_fixture_names_proxystores_key() {
    for path in toml_files("invalid") {
        let text = fs::read_to_string(&path).unwrap();
        let want = text
            .lines()
            .find_map(|l| l.strip_prefix("# key: "))
            .unwrap_or_else(|| panic!("{} has no `# key:` line", path.display()));
        let result = load_vars(&path, &ProxyStoreCli::default(), &[]);
        let message = match &result {
            Err(ConfigError::Invalid { message, .. }) => message.clone(),
            _ => String::new(),
        };
        assert_eq!(invalid_key(result), want, "{}", path.display());
        // The message speaks ProxyStore's keys too, never ours (`server.…`)
        // nor a library's variant name.
        for ours in ["server.", "KeyMismatch", "InconsistentKeys"] {
            assert!(!message.contains(ours), "{}: {message}", path.display());
        }
        if let Some(says) = text.lines().find_map(|l| l.strip_prefix("# says: ")) {
            assert!(message.contains(says), "{}: {message}", path.display());
        }
    }
}

#[test]
fn defaults_are_proxystores() {
    let empty = tempfile::NamedTempFile::new().unwrap();
    let loaded = load_vars(empty.path(), &ProxyStoreCli::default(), &[]).unwrap();
    let s = loaded.settings;
    assert_eq!((s.server.host.as_str(), s.server.port), ("0.0.0.0", 8700));
    assert_eq!(s.auth.method, AuthMethod::None);
    assert_eq!(s.log.level, "info");
    assert_eq!(s.log.dir, None);
    assert_eq!(s.log.clients_interval_secs, 60);
    assert_eq!(s.log.clients_limit, 32);
    assert!(!s.admin.enabled, "ProxyStore's relay has no admin listener");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn every_key_maps_onto_our_settings() {
    // every_key.toml has no certfile: its mapping is checked by the
    // fixture-wide test (it names `certfile`) and by the wss process test.
    let loaded = load("valid/every_key.toml");
    let s = &loaded.settings;
    assert_eq!(s.server.host, "127.0.0.1");
    assert_eq!(s.server.port, 9870);
    assert_eq!(s.server.max_message_bytes, 2 * 1024 * 1024);
    assert_eq!(s.auth.method, AuthMethod::Introspection);
    assert_eq!(
        s.auth.introspection_url.as_deref(),
        Some(defaults::GLOBUS_INTROSPECT_URL)
    );
    assert_eq!(s.auth.client_id.as_deref(), Some("relay-app"));
    assert_eq!(s.auth.client_secret.as_ref().unwrap().expose(), "s3cret");
    assert_eq!(s.auth.audience.as_deref(), Some("my-relay-resource-server"));
    assert_eq!(s.log.dir.as_deref(), Some(Path::new("relay-logs")));
    assert_eq!(s.log.level, "warn");
    assert_eq!(s.log.clients_interval_secs, 5);
    assert_eq!(s.log.clients_limit, 4);
    assert!(
        !format!("{s:?}").contains("s3cret"),
        "the secret is masked in Debug"
    );
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert!(
        loaded.warnings[0].contains("`logging.websockets_level` is not honoured"),
        "{:?}",
        loaded.warnings
    );
}

#[test]
fn keys_proxystore_ignores_are_warnings() {
    let loaded = load("valid/unknown_keys.toml");
    let w = loaded.warnings.join("\n");
    for key in ["`workers`", "`serving`", "`logging.colour`"] {
        assert!(
            w.contains(&format!(
                "{key} is not a setting of ProxyStore's relay; ignored"
            )),
            "{key}: {w}"
        );
    }
    assert!(w.contains("`serving`") && w.contains("did you mean the top-level keys?"));
    // The docstring's logging key names are ones ProxyStore does not read.
    let loaded = load("valid/docstring_minimal.toml");
    let w = loaded.warnings.join("\n");
    for (wrong, right) in [
        ("default_log_level", "default_level"),
        ("websockets_log_level", "websockets_level"),
        (
            "connected_client_logging_interval",
            "current_client_interval",
        ),
        ("connected_client_logging_limit", "current_client_limit"),
    ] {
        assert!(
            w.contains(&format!("`logging.{wrong}`"))
                && w.contains(&format!("did you mean logging.{right}?")),
            "{wrong}: {w}"
        );
    }
    assert_eq!(loaded.warnings.len(), 4, "{w}");
    // ...so ProxyStore's defaults hold, as they do in proxystore-relay.
    assert_eq!(loaded.settings.log.level, "info");
    assert_eq!(loaded.settings.log.clients_interval_secs, 60);
    assert_eq!(
        loaded.settings.log.dir.as_deref(),
        Some(Path::new("/path/to/log/dir"))
    );
}

#[test]
fn globus_uses_the_docs_kwargs_or_proxystores_environment_variables() {
    let docs = load("valid/docs_globus.toml").settings;
    assert_eq!(docs.auth.method, AuthMethod::Introspection);
    assert_eq!(docs.auth.client_id.as_deref(), Some("..."));
    assert_eq!(docs.auth.audience.as_deref(), Some("..."));

    // Without credentials in the file, both come from the environment, and
    // the audience is ProxyStore's relay's.
    let file = fixture("invalid/globus_without_credentials.toml");
    let vars = [
        (GLOBUS_CLIENT_ID_ENV, "env-app"),
        (GLOBUS_CLIENT_SECRET_ENV, "env-secret"),
    ];
    let s = load_vars(&file, &ProxyStoreCli::default(), &vars)
        .unwrap()
        .settings;
    assert_eq!(s.auth.client_id.as_deref(), Some("env-app"));
    assert_eq!(
        s.auth.client_secret.as_ref().unwrap().expose(),
        "env-secret"
    );
    assert_eq!(
        s.auth.audience.as_deref(),
        Some(defaults::PROXYSTORE_RELAY_AUDIENCE)
    );
    // One of the two is not enough (ProxyStore needs both).
    let half = [(GLOBUS_CLIENT_ID_ENV, "env-app")];
    let result = load_vars(&file, &ProxyStoreCli::default(), &half);
    assert_eq!(invalid_key(result), "auth.kwargs.client_id");
}

#[test]
fn proxystore_cli_options_override_the_file_and_environment() {
    let cli = ProxyStoreCli {
        host: Some("127.0.0.2".into()),
        port: Some(9000),
        log_dir: Some("/tmp/elsewhere".into()),
        log_level: Some("critical".into()),
    };
    let env = env_with(&[
        ("SWITCHBOARD__SERVER__PORT", "9100"),
        ("SWITCHBOARD__SERVER__MAX_CLIENTS", "7"),
    ]);
    let path = fixture("valid/every_key.toml");
    let s = Settings::load_proxystore_with(&path, &cli, env, &|_| None)
        .unwrap()
        .settings;
    assert_eq!((s.server.host.as_str(), s.server.port), ("127.0.0.2", 9000));
    assert_eq!(s.server.max_clients, 7, "the environment still layers");
    assert_eq!(s.log.dir.as_deref(), Some(Path::new("/tmp/elsewhere")));
    assert_eq!(s.log.level, "error", "CRITICAL is our error");
    let bad = ProxyStoreCli {
        log_level: Some("LOUD".into()),
        ..ProxyStoreCli::default()
    };
    let result = load_vars(&path, &bad, &[]);
    assert_eq!(invalid_key(result), "--log-level");
}

#[test]
fn not_toml_is_a_load_error() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut file, b"port = = 8700\n").unwrap();
    let result = load_vars(file.path(), &ProxyStoreCli::default(), &[]);
    assert!(
        matches!(&result, Err(ConfigError::Load(m)) if m.contains("is not TOML")),
        "{result:?}"
    );
}
