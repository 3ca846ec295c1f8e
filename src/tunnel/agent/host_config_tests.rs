//! Tests of the agent's settings file: the one-service form, `[[services]]`, flags.

use super::*;

fn valid() -> HostConfig {
    HostConfig {
        relay: Some("127.0.0.1:7000".into()),
        service: Some("web".into()),
        token: Some(Secret::new("t0ken")),
        local: Some("127.0.0.1:8080".into()),
        ..HostConfig::default()
    }
}

fn refused(config: HostConfig) -> String {
    match config.into_settings() {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("expected an invalid key, got {other:?}"),
    }
}

#[test]
fn an_array_index_key_is_refused_before_any_array_grows() {
    // The config crate would grow an array `relay` to 10^12 values.
    let text = "\"relay[999999999999]\" = 1\n";
    match HostConfig::parse(text) {
        Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "relay[999999999999]"),
        other => panic!("expected the key named, got {other:?}"),
    }
}

#[test]
fn one_agent_per_relay_node_and_flags_replace_the_files_nodes() {
    let text = "relay = \"10.0.0.1:7000\"\nmore_relays = [\"10.0.0.2:7000\", \"10.0.0.3:7000\"]\n\
                service = \"web\"\ntoken = \"t0ken\"\nlocal = \"127.0.0.1:8080\"\n";
    let file = HostConfig::parse(text).unwrap();
    let relays = |agents: Vec<AgentSettings>| -> Vec<String> {
        agents.into_iter().map(|a| a.relay).collect()
    };
    assert_eq!(
        relays(file.clone().into_agents().unwrap()),
        ["10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"]
    );
    let flags = HostConfig {
        relay: Some("10.0.0.9:7000".into()),
        ..HostConfig::default()
    };
    assert_eq!(
        relays(file.merge(flags).into_agents().unwrap()),
        ["10.0.0.9:7000"]
    );
    let twice = HostConfig {
        more_relays: Some(vec!["127.0.0.1:7000".into()]),
        ..valid()
    };
    assert!(matches!(
        twice.into_agents(),
        Err(ConfigError::Invalid { key, .. }) if key == "relay"
    ));
}

#[test]
fn a_complete_config_fills_in_defaults() {
    let s = valid().into_settings().unwrap();
    assert_eq!(s.pool, defaults::AGENT_POOL);
    assert_eq!(s.local, LocalService::Addr("127.0.0.1:8080".into()));
    assert!(s.tls.is_none() && !s.proxy_protocol);
}

#[test]
fn each_bad_key_is_named() {
    let cases: Vec<(&str, HostConfig)> = vec![
        (
            "relay",
            HostConfig {
                relay: None,
                ..valid()
            },
        ),
        (
            "service",
            HostConfig {
                service: Some("a b".into()),
                ..valid()
            },
        ),
        (
            "token",
            HostConfig {
                token_file: Some("/x".into()),
                ..valid()
            },
        ),
        (
            "token_file",
            HostConfig {
                token: None,
                ..valid()
            },
        ),
        (
            "token_file",
            HostConfig {
                token: Some(Secret::new("")),
                ..valid()
            },
        ),
        (
            "local",
            HostConfig {
                local: Some("nowhere".into()),
                ..valid()
            },
        ),
        (
            "local",
            HostConfig {
                echo: Some(true),
                ..valid()
            },
        ),
        (
            "local",
            HostConfig {
                local: None,
                ..valid()
            },
        ),
        (
            "pool",
            HostConfig {
                pool: Some(0),
                ..valid()
            },
        ),
        (
            "proxy_protocol",
            HostConfig {
                local: None,
                echo: Some(true),
                proxy_protocol: Some(true),
                ..valid()
            },
        ),
        (
            "proxy_protocol",
            HostConfig {
                local: None,
                local_udp: Some("127.0.0.1:53".into()),
                proxy_protocol: Some(true),
                ..valid()
            },
        ),
        (
            "local_udp",
            HostConfig {
                local_udp: Some("127.0.0.1:53".into()),
                ..valid()
            },
        ),
        (
            "local_udp",
            HostConfig {
                local: None,
                local_udp: Some("nowhere".into()),
                ..valid()
            },
        ),
        (
            "heartbeat_timeout_ms",
            HostConfig {
                heartbeat_interval_ms: Some(100),
                heartbeat_timeout_ms: Some(100),
                ..valid()
            },
        ),
        (
            "backoff_max_ms",
            HostConfig {
                backoff_min_ms: Some(0),
                ..valid()
            },
        ),
        (
            "backoff_max_ms",
            HostConfig {
                backoff_min_ms: Some(50),
                backoff_max_ms: Some(10),
                ..valid()
            },
        ),
        (
            "tls_ca_file",
            HostConfig {
                tls_ca_file: Some("/no/such/ca.pem".into()),
                ..valid()
            },
        ),
    ];
    for (key, config) in cases {
        assert_eq!(refused(config.clone()), key, "{config:?}");
    }
}

const TWO: &str = "relay = \"10.0.0.1:7000\"\nmore_relays = [\"10.0.0.2:7000\"]\npool = 3\n";

fn parse(text: &str) -> HostConfig {
    HostConfig::parse(text).unwrap()
}

fn refused_text(text: &str) -> String {
    match parse(text).into_agents() {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("expected an invalid key, got {other:?}"),
    }
}

#[test]
fn each_service_gets_an_agent_per_relay_with_shared_keys() {
    let text = "relay = \"10.0.0.1:7000\"\nmore_relays = [\"10.0.0.2:7000\"]\n\
                heartbeat_interval_ms = 700\n\
                [[services]]\nname = \"web\"\ntoken = \"a\"\nlocal = \"127.0.0.1:80\"\npool = 4\n\
                [[services]]\nname = \"echo\"\ntoken = \"b\"\necho = true\n";
    let agents = parse(text).into_agents().unwrap();
    let got: Vec<(String, String, usize)> = agents
        .iter()
        .map(|a| (a.service.clone(), a.relay.clone(), a.pool))
        .collect();
    assert_eq!(
        got,
        [
            ("web".into(), "10.0.0.1:7000".into(), 4),
            ("web".into(), "10.0.0.2:7000".into(), 4),
            ("echo".into(), "10.0.0.1:7000".into(), 10),
            ("echo".into(), "10.0.0.2:7000".into(), 10),
        ]
    );
    assert_eq!(agents[2].local, LocalService::Echo);
    assert_eq!(agents[2].token.expose(), "b");
    assert!(agents
        .iter()
        .all(|a| a.heartbeat_interval.as_millis() == 700));
}

#[test]
fn bad_entries_are_named() {
    let entry = |body: &str| format!("relay = \"10.0.0.1:7000\"\n[[services]]\n{body}\n");
    assert_eq!(
        refused_text(&format!(
            "{TWO}[[services]]\nname = \"a\"\ntoken = \"t\"\necho = true\n"
        )),
        "pool"
    );
    assert_eq!(
        refused_text(&entry("token = \"t\"\necho = true")),
        "services[0].name"
    );
    assert_eq!(
        refused_text(&format!(
            "{}[[services]]\nname = \"a\"\ntoken = \"u\"\necho = true\n",
            entry("name = \"a\"\ntoken = \"t\"\necho = true")
        )),
        "services[1].name"
    );
    assert_eq!(
        refused_text(&entry("name = \"a b\"\ntoken = \"t\"\necho = true")),
        "services[0].name"
    );
    assert_eq!(
        refused_text(&entry("name = \"a\"\necho = true")),
        "services[0].token_file"
    );
    assert_eq!(
        refused_text(&entry("name = \"a\"\ntoken = \"t\"\nlocal = \"x\"")),
        "services[0].local"
    );
    assert_eq!(
        refused_text(&entry(
            "name = \"a\"\ntoken = \"t\"\necho = true\nproxy_protocol = true"
        )),
        "services[0].proxy_protocol"
    );
    assert_eq!(
        refused_text("relay = \"10.0.0.1:7000\"\nservices = []\n"),
        "services"
    );
    match HostConfig::parse(&entry("name = \"a\"\nrelay = \"x:1\"")) {
        Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "services[0].relay"),
        other => panic!("expected services[0].relay named, got {other:?}"),
    }
}

#[test]
fn one_node_in_two_spellings_is_given_twice() {
    let agents = |first: &str, second: &str| HostConfig {
        relay: Some(first.into()),
        more_relays: Some(vec![second.into()]),
        ..valid()
    };
    for (first, second) in [
        ("relay.example:7000", "RELAY.Example:7000"),
        ("relay.example:7000", "relay.example.:7000"),
        ("127.0.0.1:7000", "127.0.0.1:07000"),
        ("[::1]:7000", "[0:0:0:0:0:0:0:1]:7000"),
        ("[2001:db8::1]:7000", "[2001:DB8:0::1]:7000"),
    ] {
        match agents(first, second).into_agents() {
            Err(ConfigError::Invalid { key, message }) => {
                assert_eq!(key, "relay");
                assert!(message.contains("twice"), "{message}");
            }
            other => panic!("{first} and {second} both accepted: {other:?}"),
        }
    }
    // Different addresses, or names not resolved, stay two nodes.
    for (first, second) in [
        ("127.0.0.1:7000", "localhost:7000"),
        ("127.0.0.1:7000", "127.0.0.1:7001"),
        ("[::1]:7000", "127.0.0.1:7000"),
    ] {
        assert_eq!(agents(first, second).into_agents().unwrap().len(), 2);
    }
    // What a TCP connect would not take is refused now, naming the key.
    for bad in [
        "127.0.0.1:7000/",
        "127.0.0.1",
        "relay.example:0",
        "relay.example:70000",
        "::1:7000",
        "tcp://relay.example:7000",
        ":7000",
        "relay.example:+7000",
    ] {
        let one = HostConfig {
            relay: Some(bad.into()),
            ..valid()
        };
        assert!(
            matches!(one.into_agents(), Err(ConfigError::Invalid { key, .. }) if key == "relay"),
            "{bad} accepted"
        );
    }
}

#[test]
fn a_services_entry_may_serve_udp() {
    let text = "relay = \"10.0.0.1:7000\"\n\
                [[services]]\nname = \"dns\"\ntoken = \"d\"\nlocal_udp = \"127.0.0.1:53\"\n\
                [[services]]\nname = \"bad\"\ntoken = \"d\"\nlocal_udp = \"127.0.0.1:53\"\nproxy_protocol = true\n";
    assert_eq!(refused_text(text), "services[1].proxy_protocol");
    let ok = text.split("[[services]]\nname = \"bad\"").next().unwrap();
    let agents = HostConfig::parse(ok).unwrap().into_agents().unwrap();
    assert_eq!(agents[0].local, LocalService::Udp("127.0.0.1:53".into()));
}

#[test]
fn the_metrics_listener_is_the_process_s_and_its_flag_wins() {
    let text = "relay = \"10.0.0.1:7000\"\nmetrics_listen = \"127.0.0.1:9101\"\n\
                metrics_token = \"s\"\n[[services]]\nname = \"a\"\ntoken = \"t\"\necho = true\n";
    let file = HostConfig::parse(text).unwrap();
    let listen = file.metrics().unwrap().unwrap();
    assert_eq!(listen.addr.to_string(), "127.0.0.1:9101");
    assert_eq!(listen.token.as_ref().map(Secret::expose), Some("s"));
    // Not part of an agent's source: changing it restarts no agent.
    let agents = file.clone().into_agents_with_sources().unwrap();
    assert!(agents[0].1.metrics_listen.is_none() && agents[0].1.metrics_token.is_none());
    let flags = HostConfig {
        metrics_listen: Some("[::1]:0".into()),
        ..HostConfig::default()
    };
    let merged = file.merge(flags).metrics().unwrap().unwrap();
    assert_eq!(merged.addr.to_string(), "[::1]:0");
    assert_eq!(HostConfig::default().metrics().unwrap(), None);
}
