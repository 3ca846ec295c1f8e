//! Proves settings loading: every file in config/ and tests/fixtures/config/valid
//! loads, every file in tests/fixtures/config/invalid fails naming the key on its
//! `# key:` line, and layers apply in order defaults → file → env → CLI.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use switchboard::config::{AuthMethod, ConfigError, Overrides, Settings, ENV_PREFIX};

fn no_env() -> config::Environment {
    env_with(&[])
}

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

fn toml_files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .toml files in {}", dir.display());
    files
}

#[test]
fn every_shipped_config_loads() {
    for file in toml_files("config") {
        Settings::load_with_env(Some(&file), &Overrides::default(), no_env())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
    let prod = Settings::load_with_env(
        Some(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/prod.toml"
        ))),
        &Overrides::default(),
        no_env(),
    )
    .unwrap();
    assert_eq!(prod.server.port, 8700, "ProxyStore's port");
    assert_eq!(prod.admin.host, "127.0.0.1", "admin stays on loopback");
}

#[test]
fn valid_fixtures_load() {
    for file in toml_files("tests/fixtures/config/valid") {
        Settings::load_with_env(Some(&file), &Overrides::default(), no_env())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
}

#[test]
fn invalid_fixtures_fail_naming_the_key() {
    for file in toml_files("tests/fixtures/config/invalid") {
        let text = fs::read_to_string(&file).unwrap();
        let key = text
            .lines()
            .find_map(|l| l.strip_prefix("# key: "))
            .unwrap_or_else(|| panic!("{} has no `# key:` line", file.display()))
            .trim()
            .to_string();
        let error = Settings::load_with_env(Some(&file), &Overrides::default(), no_env())
            .err()
            .unwrap_or_else(|| panic!("{} loaded but must fail", file.display()));
        let message = error.to_string();
        assert!(
            message.contains(&key),
            "{}: error {message:?} does not name {key:?}",
            file.display()
        );
    }
}

#[test]
fn defaults_without_any_file() {
    let settings = Settings::load_with_env(None, &Overrides::default(), no_env()).unwrap();
    assert_eq!(settings.server.port, 8700);
    assert_eq!(settings.server.host, "0.0.0.0");
    assert_eq!(settings.server.max_message_bytes, 1024 * 1024);
    assert_eq!(settings.auth.method, AuthMethod::None);
    assert!(settings.admin.enabled);
}

#[test]
fn layers_apply_in_order() {
    let file = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/config/valid/token_auth.toml"
    ));
    // File over defaults.
    let s = Settings::load_with_env(Some(file), &Overrides::default(), no_env()).unwrap();
    assert_eq!(s.server.port, 9000);
    assert_eq!(s.server.max_message_bytes, 65536);
    // Env over file; env can add tokens so they need not sit in the TOML.
    let env = env_with(&[
        ("SWITCHBOARD__SERVER__PORT", "9100"),
        ("SWITCHBOARD__SERVER__HOST", "127.0.0.2"),
        ("SWITCHBOARD__AUTH__TOKENS__CAROL", "carol-secret"),
        ("SWITCHBOARD__ADMIN__TOKEN", "ops-secret"),
    ]);
    let s = Settings::load_with_env(Some(file), &Overrides::default(), env).unwrap();
    assert_eq!(s.server.port, 9100);
    assert_eq!(s.server.host, "127.0.0.2");
    assert_eq!(s.auth.tokens["carol"].expose(), "carol-secret");
    assert_eq!(s.auth.tokens["alice"].expose(), "alice-secret");
    assert_eq!(s.admin.token.as_ref().unwrap().expose(), "ops-secret");
    // CLI over env.
    let env = env_with(&[("SWITCHBOARD__SERVER__PORT", "9100")]);
    let cli = Overrides {
        host: Some("127.0.0.3".into()),
        port: Some(9200),
        log_level: Some("debug".into()),
    };
    let s = Settings::load_with_env(Some(file), &cli, env).unwrap();
    assert_eq!(s.server.port, 9200);
    assert_eq!(s.server.host, "127.0.0.3");
    assert_eq!(s.log.level, "debug");
}

#[test]
fn bad_env_values_name_the_key() {
    let env = env_with(&[("SWITCHBOARD__SERVER__MAX_CLIENTS", "many")]);
    let error = Settings::load_with_env(None, &Overrides::default(), env).unwrap_err();
    assert!(error.to_string().contains("server.max_clients"), "{error}");
    let env = env_with(&[("SWITCHBOARD__SERVER__BOGUS", "1")]);
    let error = Settings::load_with_env(None, &Overrides::default(), env).unwrap_err();
    assert!(error.to_string().contains("bogus"), "{error}");
}

#[test]
fn missing_file_is_an_error() {
    let error = Settings::load_with_env(
        Some(Path::new("/nonexistent.toml")),
        &Overrides::default(),
        no_env(),
    )
    .unwrap_err();
    assert!(matches!(error, ConfigError::Load(_)), "{error}");
}

#[test]
fn secrets_are_masked_in_debug_output() {
    let env = env_with(&[
        ("SWITCHBOARD__AUTH__TOKENS__ALICE", "super-secret-token"),
        ("SWITCHBOARD__ADMIN__TOKEN", "admin-secret"),
    ]);
    let s = Settings::load_with_env(None, &Overrides::default(), env).unwrap();
    let debug = format!("{s:?}");
    assert!(
        !debug.contains("super-secret-token") && !debug.contains("admin-secret"),
        "{debug}"
    );
    assert!(debug.contains("MASKED"));
}

#[test]
fn parse_toml_reads_files_as_load_does() {
    // Same settings, or an error naming the same key (the file's error
    // message also names the file).
    fn outcome(result: Result<Settings, ConfigError>) -> String {
        match result {
            Ok(settings) => format!("{settings:?}"),
            Err(ConfigError::Invalid { key, .. }) => format!("invalid {key}"),
            Err(ConfigError::Load(_)) => "not loaded".into(),
        }
    }
    let dirs = [
        "config",
        "tests/fixtures/config/valid",
        "tests/fixtures/config/invalid",
    ];
    for file in dirs.iter().flat_map(|d| toml_files(d)) {
        let text = fs::read_to_string(&file).unwrap();
        let loaded = Settings::load_with_env(Some(&file), &Overrides::default(), no_env());
        let parsed = Settings::parse_toml(&text).and_then(|s| s.validate().map(|()| s));
        assert_eq!(outcome(parsed), outcome(loaded), "{}", file.display());
    }
}

#[test]
fn array_index_keys_are_refused_before_any_array_grows() {
    // The config crate reads `a[N]` in a top-level key (or an environment
    // variable) as "element N of array a" and grows the array to N + 1
    // values before anything is checked: here 96 TB, or the same again in
    // front for a negative N. Found by the fuzz target host_config.
    let huge = "999999999999";
    let named = |error: ConfigError, want: &str| match error {
        ConfigError::Invalid { key, .. } => assert_eq!(key, want),
        other => panic!("{other} does not name {want}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("index.toml");
    fs::write(&file, format!("\"server[{huge}]\" = 1\n")).unwrap();
    let loaded = Settings::load_with_env(Some(&file), &Overrides::default(), no_env());
    named(loaded.unwrap_err(), &format!("server[{huge}]"));
    let parsed = Settings::parse_toml(&format!("\"log[-{huge}]\" = 1\n"));
    named(parsed.unwrap_err(), &format!("log[-{huge}]"));
    let env = env_with(&[(&format!("SWITCHBOARD__SERVER[{huge}]"), "1")]);
    let from_env = Settings::load_with_env(None, &Overrides::default(), env);
    named(from_env.unwrap_err(), &format!("server[{huge}]"));
}

#[test]
fn keys_deeper_than_any_setting_are_refused_before_layering() {
    // The config crate builds one nested table per `.` of a top-level key
    // (quoted in TOML, or `__` in an environment variable) and copies them
    // over and over: 1 000 segments took 300 MB. No setting is deeper than
    // `auth.tokens.<user>`. Found by the fuzz target host_config.
    let named = |result: Result<Settings, ConfigError>, want: &str| match result {
        Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, want),
        other => panic!("{other:?} does not name {want}"),
    };
    named(
        Settings::parse_toml("\"server.a.b.c\" = 1\n"),
        "server.a.b.c",
    );
    let env = env_with(&[("SWITCHBOARD__AUTH__TOKENS__A__B", "x")]);
    named(
        Settings::load_with_env(None, &Overrides::default(), env),
        "auth.tokens.a.b",
    );
    // Up to that depth, quoted and environment keys work as before.
    let s = Settings::parse_toml("\"auth.tokens.alice\" = \"a-secret\"\n").unwrap();
    assert_eq!(s.auth.tokens["alice"].expose(), "a-secret");
    let env = env_with(&[("SWITCHBOARD__AUTH__TOKENS__BOB", "b-secret")]);
    let s = Settings::load_with_env(None, &Overrides::default(), env).unwrap();
    assert_eq!(s.auth.tokens["bob"].expose(), "b-secret");
}

#[test]
fn cluster_is_off_by_default_and_its_passwords_never_print() {
    let s = Settings::load_with_env(None, &Overrides::default(), no_env()).unwrap();
    assert!(!s.cluster.enabled);
    assert_eq!(s.cluster.redis_url.expose(), "redis://127.0.0.1:6379");
    assert_eq!(
        (s.cluster.heartbeat_ms, s.cluster.node_ttl_ms),
        (2000, 6000)
    );
    let url = "redis://:url-secret@127.0.0.1:6379/1";
    let env = env_with(&[("SWITCHBOARD__CLUSTER__REDIS_URL", url)]);
    let s = Settings::load_with_env(None, &Overrides::default(), env).unwrap();
    assert_eq!(s.cluster.redis_url.expose(), url);
    let shown = format!("{s:?} {}", s.cluster.redis_url);
    assert!(
        !shown.contains("url-secret") && shown.contains("MASKED"),
        "{shown}"
    );
    // From a file: its first line.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("redis.pass");
    fs::write(&file, "file-secret\n").unwrap();
    let toml = format!(
        "[cluster]\nenabled = true\npassword_file = {:?}\n",
        file.display().to_string()
    );
    let s = Settings::parse_toml(&toml).unwrap();
    s.validate().unwrap();
    let password = s.cluster.load_password().unwrap().unwrap();
    assert_eq!(password.expose(), "file-secret");
    assert!(!format!("{s:?} {password:?}").contains("file-secret"));
    // From the environment, checked only when the cluster is enabled.
    let toml = "[cluster]\npassword_env = \"SWITCHBOARD_TEST_NO_SUCH_VARIABLE\"\n";
    Settings::parse_toml(toml).unwrap().validate().unwrap();
    let enabled = format!("{toml}enabled = true\n");
    let error = Settings::parse_toml(&enabled)
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(
        error.to_string().contains("cluster.password_env"),
        "{error}"
    );
}
