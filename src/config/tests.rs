use clap::Parser;

use super::*;

fn cli(args: &[&str]) -> Cli {
    let mut v = vec!["xmpp-gateway"];
    v.extend_from_slice(args);
    Cli::parse_from(v)
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn route_flag_with_endpoints_and_srv() {
    let c = Config::from_sources(
        "",
        &[],
        &cli(&[
            "--route",
            "example.com=xmpp.example.com:5222,[::1]:5223",
            "--route",
            "Other.org",
        ]),
    )
    .unwrap();
    assert_eq!(c.routes.len(), 2);
    assert_eq!(c.routes[0].domain, "example.com");
    assert_eq!(
        c.routes[0].endpoints,
        vec!["xmpp.example.com:5222", "[::1]:5223"]
    );
    assert_eq!(c.routes[1].domain, "other.org");
    assert!(
        c.routes[1].endpoints.is_empty(),
        "no endpoints means DNS SRV"
    );
    assert_eq!(c.routes[0].tls, TlsPolicy::Required);
}

#[test]
fn bad_route_flag_is_rejected() {
    for bad in ["=h:1", "example.com=host", "example.com=host:0", "a b"] {
        let err = Config::from_sources("", &[], &cli(&["--route", bad])).unwrap_err();
        assert!(matches!(err, ConfigError::Route(_)), "{bad}: {err}");
    }
}

#[test]
fn unknown_file_key_is_named() {
    let err = Config::from_sources("lissten = \"1.2.3.4:5\"", &[], &cli(&[])).unwrap_err();
    assert!(err.to_string().contains("lissten"), "{err}");
    let err = Config::from_sources("[limits]\nmax_dept = 3", &[], &cli(&[])).unwrap_err();
    assert!(err.to_string().contains("max_dept"), "{err}");
}

#[test]
fn unknown_env_key_is_named() {
    let err = Config::from_sources("", &env(&[("XMPP_GATEWAY_LIMITS__NOPE", "1")]), &cli(&[]))
        .unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn env_overrides_file_and_flags_override_env() {
    let file = "listen = \"127.0.0.1:1000\"\n[limits]\nmax_depth = 10\n[[route]]\ndomain = \"a.example\"\nendpoints = [\"h:5222\"]\ntls = \"opportunistic\"\n";
    let e = env(&[
        ("XMPP_GATEWAY_LISTEN", "127.0.0.1:2000"),
        ("XMPP_GATEWAY_LIMITS__MAX_DEPTH", "12"),
        ("XMPP_GATEWAY_ADMIN_LISTEN", "127.0.0.1:3000"),
        (
            "XMPP_GATEWAY_WEBSOCKET__ALLOWED_ORIGINS",
            "[\"https://x.example\"]",
        ),
        ("HOME", "/root"),
    ]);
    let c = Config::from_sources(file, &e, &cli(&["--listen", "127.0.0.1:4000"])).unwrap();
    assert_eq!(c.listen.port(), 4000);
    assert_eq!(c.admin_listen.port(), 3000);
    assert_eq!(c.limits.max_depth, 12);
    assert_eq!(c.websocket.allowed_origins, vec!["https://x.example"]);
    assert_eq!(c.routes[0].tls, TlsPolicy::Opportunistic);
}

#[test]
fn flag_route_keeps_file_tls_policy() {
    let file = "[[route]]\ndomain = \"a.example\"\ntls = \"disabled\"\n";
    let c =
        Config::from_sources(file, &[], &cli(&["--route", "a.example=127.0.0.1:5222"])).unwrap();
    assert_eq!(c.routes[0].tls, TlsPolicy::Disabled);
    assert_eq!(c.routes[0].endpoints, vec!["127.0.0.1:5222"]);
}

#[test]
fn env_route_uses_flag_syntax() {
    let e = env(&[("XMPP_GATEWAY_ROUTE", "a.example=127.0.0.1:5222 b.example")]);
    let c = Config::from_sources("", &e, &cli(&[])).unwrap();
    assert_eq!(c.routes.len(), 2);
    assert_eq!(c.routes[1].domain, "b.example");
}

#[test]
fn env_variables_naming_no_option_are_ignored_and_reported() {
    let e = env(&[
        ("XMPP_GATEWAY_BIN", "/usr/bin/x"),
        ("XMPP_GATEWAY_LISTEN", "127.0.0.1:7"),
    ]);
    let c = Config::from_sources("", &e, &cli(&[])).unwrap();
    assert_eq!(c.listen.port(), 7);
    assert_eq!(c.ignored_env, vec!["XMPP_GATEWAY_BIN"]);
}

#[test]
fn every_top_level_option_can_be_set_from_the_environment() {
    // serde names every field it knows when it meets one it does not.
    let err = Config::from_sources("no_such_option = 1", &[], &cli(&[])).unwrap_err();
    let msg = err.to_string();
    let known: Vec<&str> = msg
        .split("expected one of ")
        .nth(1)
        .expect("serde lists the fields")
        .split(", ")
        .map(|f| f.trim_matches(|c| c == '`' || c == ' '))
        .collect();
    let mut known = known;
    known.sort_unstable();
    let mut listed = load::TOP_LEVEL.to_vec();
    listed.sort_unstable();
    assert_eq!(known, listed);
}

#[test]
fn duplicate_route_is_rejected() {
    let err = Config::from_sources(
        "",
        &[],
        &cli(&["--route", "a.example", "--route", "A.example"]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("twice"), "{err}");
}

#[test]
fn example_config_in_deploy_is_valid() {
    let text = include_str!("../../deploy/xmpp-gateway.toml");
    let c = Config::from_sources(text, &[], &cli(&[])).unwrap();
    assert!(!c.routes.is_empty());
}

#[test]
fn upstream_stanza_limit_defaults_to_a_mebibyte_and_has_a_floor() {
    let c = Config::from_sources("", &[], &cli(&[])).unwrap();
    assert_eq!(c.limits.max_upstream_stanza_bytes, 1024 * 1024);
    let err = Config::from_sources("[limits]\nmax_upstream_stanza_bytes = 100", &[], &cli(&[]))
        .unwrap_err();
    assert!(
        err.to_string().contains("max_upstream_stanza_bytes"),
        "{err}"
    );
}

#[test]
fn http_deadlines_and_admin_cap_have_defaults_and_can_be_set() {
    let c = Config::from_sources("", &[], &cli(&[])).unwrap();
    assert_eq!(c.limits.body_read_timeout_secs, 30);
    assert_eq!(c.limits.http_idle_timeout_secs, 60);
    assert_eq!(c.limits.http2_keep_alive_interval_secs, 20);
    assert_eq!(c.limits.http2_keep_alive_timeout_secs, 20);
    assert_eq!(c.limits.admin_max_connections, 64);
    let file = "[limits]\nbody_read_timeout_secs = 5\nadmin_max_connections = 4\n";
    let e = env(&[
        ("XMPP_GATEWAY_LIMITS__HTTP_IDLE_TIMEOUT_SECS", "7"),
        ("XMPP_GATEWAY_LIMITS__HTTP2_KEEP_ALIVE_INTERVAL_SECS", "8"),
        ("XMPP_GATEWAY_LIMITS__HTTP2_KEEP_ALIVE_TIMEOUT_SECS", "9"),
    ]);
    let c = Config::from_sources(file, &e, &cli(&[])).unwrap();
    assert_eq!(c.limits.body_read_timeout_secs, 5);
    assert_eq!(c.limits.admin_max_connections, 4);
    assert_eq!(c.limits.http_idle_timeout_secs, 7);
    assert_eq!(c.limits.http2_keep_alive_interval_secs, 8);
    assert_eq!(c.limits.http2_keep_alive_timeout_secs, 9);
}

#[test]
fn zero_http_deadline_or_admin_cap_is_refused_by_name() {
    for key in [
        "header_read_timeout_secs",
        "body_read_timeout_secs",
        "http_idle_timeout_secs",
        "http2_keep_alive_interval_secs",
        "http2_keep_alive_timeout_secs",
        "admin_max_connections",
    ] {
        let err =
            Config::from_sources(&format!("[limits]\n{key} = 0\n"), &[], &cli(&[])).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Value(m) if m.contains(key)),
            "{key}: {err}"
        );
    }
}

#[test]
fn admission_limits_have_documented_defaults_and_zero_is_refused() {
    let c = Config::from_sources("", &[], &cli(&[])).unwrap();
    assert_eq!(c.limits.max_sessions, 100_000);
    assert_eq!(c.limits.max_sessions_per_address, 500);
    assert_eq!(c.limits.new_sessions_per_address_per_sec, 20);
    assert_eq!(c.limits.new_sessions_burst, 100);
    for key in [
        "max_sessions",
        "max_sessions_per_address",
        "new_sessions_per_address_per_sec",
        "new_sessions_burst",
    ] {
        let err =
            Config::from_sources(&format!("[limits]\n{key} = 0\n"), &[], &cli(&[])).unwrap_err();
        assert!(err.to_string().contains(key), "{key}: {err}");
    }
}

#[test]
fn trusted_proxies_default_to_nobody() {
    let c = Config::from_sources("", &[], &cli(&[])).unwrap();
    assert!(c.limits.trusted_proxies.is_empty());
    assert!(!c
        .limits
        .trusted_proxies
        .contains("127.0.0.1".parse().unwrap()));
}

#[test]
fn trusted_proxies_take_ipv4_and_ipv6_ranges_and_single_addresses() {
    let file = "[limits]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1/128\", \"192.0.2.7\", \"2001:db8:1::/48\"]\n";
    let c = Config::from_sources(file, &[], &cli(&[])).unwrap();
    let t = &c.limits.trusted_proxies;
    for yes in [
        "10.1.2.3",
        "::1",
        "192.0.2.7",
        "2001:db8:1:ffff::9",
        "::ffff:10.9.9.9",
    ] {
        assert!(t.contains(yes.parse().unwrap()), "{yes}");
    }
    for no in ["11.0.0.1", "::2", "192.0.2.8", "2001:db8:2::1", "127.0.0.1"] {
        assert!(!t.contains(no.parse().unwrap()), "{no}");
    }
}

#[test]
fn session_rates_default_to_throttle_and_the_byte_burst_holds_a_stanza() {
    let c = Config::from_sources("", &[], &cli(&[])).unwrap();
    assert_eq!(c.limits.session_rate_exceeded, RateExceeded::Throttle);
    let c = Config::from_sources(
        "[limits]\nsession_rate_exceeded = \"close\"\n",
        &[],
        &cli(&[]),
    )
    .unwrap();
    assert_eq!(c.limits.session_rate_exceeded, RateExceeded::Close);
    let err =
        Config::from_sources("[limits]\nsession_bytes_burst = 1000\n", &[], &cli(&[])).unwrap_err();
    assert!(err.to_string().contains("session_bytes_burst"), "{err}");
}

#[test]
fn trusted_proxies_can_be_set_from_the_environment() {
    let e = env(&[(
        "XMPP_GATEWAY_LIMITS__TRUSTED_PROXIES",
        "[\"172.16.0.0/12\", \"fd00::/8\"]",
    )]);
    let c = Config::from_sources("", &e, &cli(&[])).unwrap();
    assert!(c
        .limits
        .trusted_proxies
        .contains("172.20.0.5".parse().unwrap()));
    assert!(c
        .limits
        .trusted_proxies
        .contains("fd12::1".parse().unwrap()));
}

#[test]
fn a_range_of_ipv4_mapped_addresses_is_the_ipv4_range() {
    let c = Config::from_sources(
        "[limits]\ntrusted_proxies = [\"::ffff:10.0.0.0/104\"]\n",
        &[],
        &cli(&[]),
    )
    .unwrap();
    assert!(c
        .limits
        .trusted_proxies
        .contains("10.4.5.6".parse().unwrap()));
    assert!(!c
        .limits
        .trusted_proxies
        .contains("11.4.5.6".parse().unwrap()));
}

#[test]
fn bad_trusted_proxy_entry_is_refused_by_name() {
    for bad in [
        "10.0.0.0/33",
        "10.0.0/8",
        "::1/129",
        "proxy.example",
        "",
        "10.0.0.0/",
    ] {
        let file = format!("[limits]\ntrusted_proxies = [\"10.0.0.0/8\", {bad:?}]\n");
        let err = Config::from_sources(&file, &[], &cli(&[])).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("trusted_proxies") && msg.contains(&format!("{bad:?}")),
            "{bad}: {msg}"
        );
    }
    let err = Config::from_sources(
        "[limits]\ntrusted_proxies = \"10.0.0.0/8\"\n",
        &[],
        &cli(&[]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("sequence"), "{err}");
}

#[test]
fn request_head_limit_below_hypers_minimum_is_refused() {
    let err = Config::from_sources("[limits]\nmax_request_head_bytes = 4096\n", &[], &cli(&[]))
        .unwrap_err();
    assert!(
        err.to_string().contains("limits.max_request_head_bytes"),
        "{err}"
    );
    let ok = Config::from_sources("[limits]\nmax_request_head_bytes = 16384\n", &[], &cli(&[]));
    assert_eq!(ok.unwrap().limits.max_request_head_bytes, 16384);
}

#[test]
fn proxy_protocol_per_route_is_off_v1_or_v2_and_survives_a_route_flag() {
    let c = Config::from_sources("[[route]]\ndomain = \"a.example\"\n", &[], &cli(&[])).unwrap();
    assert_eq!(c.routes[0].proxy_protocol, ProxyProtocol::Off);
    for (text, expected) in [("v1", ProxyProtocol::V1), ("v2", ProxyProtocol::V2)] {
        let file = format!("[[route]]\ndomain = \"a.example\"\nproxy_protocol = \"{text}\"\n");
        let c =
            Config::from_sources(&file, &[], &cli(&["--route", "a.example=127.0.0.1:5"])).unwrap();
        assert_eq!(c.routes[0].proxy_protocol, expected);
        assert_eq!(c.routes[0].endpoints, ["127.0.0.1:5"]);
    }
    let err = Config::from_sources(
        "[[route]]\ndomain = \"a.example\"\nproxy_protocol = \"v3\"\n",
        &[],
        &cli(&[]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("`v1`, `v2`"), "{err}");
}

#[test]
fn endpoint_backoff_has_defaults_and_its_minimum_cannot_pass_its_maximum() {
    let c = Config::from_sources("[[route]]\ndomain = \"a.example\"\n", &[], &cli(&[])).unwrap();
    assert_eq!(
        (c.routes[0].backoff_min_ms, c.routes[0].backoff_max_ms),
        (500, 10_000)
    );
    for bad in [
        "backoff_min_ms = 0",
        "backoff_min_ms = 5000\nbackoff_max_ms = 10",
    ] {
        let file = format!("[[route]]\ndomain = \"a.example\"\n{bad}\n");
        let err = Config::from_sources(&file, &[], &cli(&[])).unwrap_err();
        assert!(err.to_string().contains("backoff_min_ms"), "{err}");
    }
}

#[test]
fn a_route_pool_is_read_as_the_issue_writes_it_and_off_by_default() {
    let text = r#"
[[route]]
domain = "example.com"
endpoints = ["xmpp1.example.com:5222", "xmpp2.example.com:5222"]
proxy_protocol = "off"
[route.pool]
warm = 8
max_age_secs = 120

[[route]]
domain = "other.example"
"#;
    let c = Config::from_sources(text, &[], &cli(&[])).unwrap();
    assert_eq!(
        (c.routes[0].pool.warm, c.routes[0].pool.max_age_secs),
        (8, 120)
    );
    assert_eq!(c.routes[1].pool, PoolConfig::default());
    assert_eq!(c.routes[1].pool.warm, 0);
}

#[test]
fn a_pool_with_a_proxy_header_or_without_an_age_is_refused() {
    let with = |extra: &str| {
        let text = format!("[[route]]\ndomain = \"example.com\"\n{extra}");
        Config::from_sources(&text, &[], &cli(&[])).map(|_| ())
    };
    let err = with("proxy_protocol = \"v2\"\n[route.pool]\nwarm = 2\n").unwrap_err();
    assert!(err.to_string().contains("proxy_protocol"), "{err}");
    let err = with("[route.pool]\nwarm = 2\nmax_age_secs = 0\n").unwrap_err();
    assert!(err.to_string().contains("max_age_secs"), "{err}");
    let err = with("[route.pool]\nwarm = 100000\n").unwrap_err();
    assert!(err.to_string().contains("pool.warm"), "{err}");
    assert!(
        with("proxy_protocol = \"v1\"\n").is_ok(),
        "no pool, no conflict"
    );
}

#[test]
fn cluster_section_as_the_operator_writes_it() {
    let c = Config::from_sources(
        r#"
[cluster]
listen = "10.0.0.1:9281"
peers = ["10.0.0.2:9281", "10.0.0.3:9281"]
peers_dns = "xmpp-gateway-headless.chat.svc.cluster.local:9281"
secret_file = "/etc/xmpp-gateway/cluster.secret"
"#,
        &[],
        &cli(&[]),
    )
    .unwrap();
    assert_eq!(c.cluster.listen, Some("10.0.0.1:9281".parse().unwrap()));
    assert_eq!(c.cluster.peers, vec!["10.0.0.2:9281", "10.0.0.3:9281"]);
    assert_eq!(
        c.cluster.peers_dns.as_deref(),
        Some("xmpp-gateway-headless.chat.svc.cluster.local:9281")
    );
    assert_eq!(c.cluster.refresh_secs, 5);
    // And from the environment, as every section.
    let e = env(&[("XMPP_GATEWAY_CLUSTER__REFRESH_SECS", "2")]);
    assert_eq!(
        Config::from_sources("", &e, &cli(&[]))
            .unwrap()
            .cluster
            .refresh_secs,
        2
    );
}

#[test]
fn cluster_without_its_secret_or_with_a_bad_peer_is_refused() {
    for (toml, says) in [
        ("[cluster]\nlisten = \"127.0.0.1:9281\"\n", "secret_file"),
        ("[cluster]\nsecret_file = \"/s\"\n", "secret_file"),
        (
            "[cluster]\nlisten = \"127.0.0.1:9281\"\nsecret_file = \"/s\"\npeers = [\"no-port\"]\n",
            "no-port",
        ),
        (
            "[cluster]\nlisten = \"127.0.0.1:9281\"\nsecret_file = \"/s\"\nrefresh_secs = 0\n",
            "refresh_secs",
        ),
    ] {
        let err = Config::from_sources(toml, &[], &cli(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{toml}: {err}");
    }
}
