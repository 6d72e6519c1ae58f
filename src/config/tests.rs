//! Table tests: every validation rule, input → exact message with its line.

use super::*;

const RW: &str = "remote_write:\n  - url: http://127.0.0.1:9090/api/v1/write\n";

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("p.yml"), Path::new("/etc/promlet"))
}

fn err(text: &str) -> String {
    match load(text) {
        Ok(c) => panic!("accepted:\n{text}\n{c:?}"),
        Err(e) => e.to_string(),
    }
}

/// A scrape config body under `scrape_configs:` at line 2, followed by a remote_write.
fn job(body: &str) -> String {
    format!("scrape_configs:\n  - job_name: j\n{body}{RW}")
}

#[test]
fn every_rule_refuses_with_file_line_key_and_reason() {
    let cases: Vec<(String, &str)> = vec![
        // Unknown keys at every level.
        (format!("scrape_config: []\n{RW}"), "p.yml:1: scrape_config: unknown key"),
        (format!("global:\n  scrape_intervall: 5s\n{RW}"), "p.yml:2: global.scrape_intervall: unknown key"),
        (job("    honour_labels: true\n"), "p.yml:3: scrape_configs[0].honour_labels: unknown key"),
        (
            "remote_write:\n  - url: http://x\n    queue_config: {capacty: 1}\n".to_owned(),
            "p.yml:3: remote_write[0].queue_config.capacty: unknown key",
        ),
        (job("    tls_config:\n      ca: x\n"), "p.yml:4: scrape_configs[0].tls_config.ca: unknown key"),
        (
            job("    relabel_configs:\n      - {action: keep, regexp: x}\n"),
            "p.yml:4: scrape_configs[0].relabel_configs[0].regexp: unknown key",
        ),
        // Durations and sizes.
        (job("    scrape_interval: 15\n"), "p.yml:3: scrape_configs[0].scrape_interval: not a valid duration string: \"15\""),
        (job("    scrape_interval: 1.5s\n"), "p.yml:3: scrape_configs[0].scrape_interval: not a valid duration string: \"1.5s\""),
        (job("    scrape_interval: 5m1h\n"), "p.yml:3: scrape_configs[0].scrape_interval: not a valid duration string: \"5m1h\""),
        (job("    scrape_interval: ''\n"), "p.yml:3: scrape_configs[0].scrape_interval: empty duration string"),
        (job("    body_size_limit: 1024\n"), "p.yml:3: scrape_configs[0].body_size_limit: unknown unit \"\" in \"1024\""),
        (job("    body_size_limit: 10mb\n"), "p.yml:3: scrape_configs[0].body_size_limit: unknown unit \"mb\" in \"10mb\""),
        // Timeouts and intervals.
        (
            job("    scrape_interval: 5s\n    scrape_timeout: 10s\n"),
            "p.yml:2: scrape_configs[0]: scrape timeout greater than scrape interval for scrape config with job name \"j\"",
        ),
        (
            format!("global:\n  scrape_interval: 5s\n  scrape_timeout: 6s\n{RW}"),
            "p.yml:2: global: global scrape timeout greater than scrape interval",
        ),
        // Jobs.
        (
            format!("scrape_configs:\n  - job_name: a\n  - job_name: a\n{RW}"),
            "p.yml:3: scrape_configs[1]: found multiple scrape configs with job name \"a\"",
        ),
        (format!("scrape_configs:\n  - job_name: ''\n{RW}"), "p.yml:2: scrape_configs[0]: job_name is empty"),
        (format!("scrape_configs:\n  -\n{RW}"), "p.yml:2: scrape_configs[0]: empty or null scrape config section"),
        // Labels.
        (
            format!("global:\n  external_labels:\n    1cluster: edge\n{RW}"),
            "p.yml:3: global.external_labels.1cluster: \"1cluster\" is not a valid label name",
        ),
        (
            job("    static_configs:\n      - targets: ['a:1']\n        labels: {a-b: x}\n"),
            "p.yml:5: scrape_configs[0].static_configs[0].labels.a-b: \"a-b\" is not a valid label name",
        ),
        (
            job("    static_configs:\n      - targets: ['http://a:1']\n"),
            "p.yml:2: scrape_configs[0].static_configs: \"http://a:1\" is not a valid hostname",
        ),
        // Relabel rules.
        (
            job("    relabel_configs:\n      - {action: hashmod, source_labels: [a], target_label: b}\n"),
            "p.yml:4: scrape_configs[0].relabel_configs[0]: relabel configuration for hashmod requires non-zero modulus",
        ),
        (
            job("    relabel_configs:\n      - {source_labels: [a]}\n"),
            "p.yml:4: scrape_configs[0].relabel_configs[0]: relabel configuration for replace action requires 'target_label' value",
        ),
        (
            job("    relabel_configs:\n      - {action: labeldrop, regex: x, source_labels: [a]}\n"),
            "p.yml:4: scrape_configs[0].relabel_configs[0]: labeldrop action requires only 'regex', and no other fields",
        ),
        (
            job("    relabel_configs:\n      - {action: keepequal, source_labels: [a], target_label: b, regex: x}\n"),
            "p.yml:4: scrape_configs[0].relabel_configs[0]: keepequal action requires only 'source_labels' and `target_label`, and no other fields",
        ),
        (
            job("    relabel_configs:\n      - {action: lowercase, source_labels: [a], target_label: b, replacement: x}\n"),
            "p.yml:4: scrape_configs[0].relabel_configs[0]: 'replacement' can not be set for lowercase action",
        ),
        (
            job("    relabel_configs:\n      - {source_labels: [a], target_label: 1bad}\n"),
            "p.yml:4: scrape_configs[0].relabel_configs[0]: \"1bad\" is invalid 'target_label' for replace action",
        ),
        (
            job("    relabel_configs:\n      - {action: labelmap, regex: x, replacement: a-b}\n"),
            "p.yml:4: scrape_configs[0].relabel_configs[0]: \"a-b\" is invalid 'replacement' for labelmap action",
        ),
        (
            job("    relabel_configs:\n      - {action: frobnicate}\n"),
            "p.yml:4: scrape_configs[0].relabel_configs[0].action: unknown relabel action \"frobnicate\"",
        ),
        (
            job("    relabel_configs:\n      - {action: ''}\n"),
            "p.yml:4: scrape_configs[0].relabel_configs[0].action: unknown relabel action \"\"",
        ),
        (
            job("    relabel_configs:\n      - {action: ~}\n"),
            "p.yml:4: scrape_configs[0].relabel_configs[0]: relabel action cannot be empty",
        ),
        (
            job("    metric_relabel_configs:\n      - {source_labels: [a-b], action: drop}\n"),
            "p.yml:4: scrape_configs[0].metric_relabel_configs[0].source_labels[0]: \"a-b\" is not a valid label name",
        ),
        (job("    relabel_configs: [~]\n"), "p.yml:3: scrape_configs[0].relabel_configs[0]: empty or null target relabeling rule"),
        (
            "remote_write:\n  - url: http://x\n    write_relabel_configs: [~]\n".to_owned(),
            "p.yml:3: remote_write[0].write_relabel_configs[0]: empty or null remote write relabeling rule",
        ),
        // Authentication.
        (
            job("    bearer_token: a\n    bearer_token_file: b\n"),
            "p.yml:2: scrape_configs[0]: at most one of bearer_token & bearer_token_file must be configured",
        ),
        (
            job("    basic_auth: {username: u}\n    bearer_token: a\n"),
            "p.yml:2: scrape_configs[0]: at most one of basic_auth, oauth2, bearer_token & bearer_token_file must be configured",
        ),
        (
            job("    basic_auth: {username: u}\n    authorization: {credentials: a}\n"),
            "p.yml:4: scrape_configs[0].authorization: at most one of basic_auth, oauth2 & authorization must be configured",
        ),
        (
            job("    authorization: {type: Basic, credentials: a}\n"),
            "p.yml:3: scrape_configs[0].authorization: authorization type cannot be set to \"basic\", use \"basic_auth\" instead",
        ),
        (
            job("    basic_auth: {username: u, password: p, password_file: f}\n"),
            "p.yml:3: scrape_configs[0].basic_auth: at most one of basic_auth password & password_file must be configured",
        ),
        (
            job("    authorization: {credentials: a}\n    bearer_token: b\n"),
            "p.yml:3: scrape_configs[0].authorization: authorization is not compatible with bearer_token & bearer_token_file",
        ),
        (
            job("    tls_config: {min_version: TLS99}\n"),
            "p.yml:3: scrape_configs[0].tls_config.min_version: unknown TLS version: TLS99",
        ),
        // Remote write.
        (
            "remote_write:\n  - url: http://a\n    headers: {Content-Type: x}\n".to_owned(),
            "p.yml:3: remote_write[0].headers.Content-Type: Content-Type is a reserved header. It must not be changed",
        ),
        (
            "remote_write:\n  - url: http://a\n    headers:\n      authorization: x\n".to_owned(),
            "p.yml:4: remote_write[0].headers.authorization: authorization header must be changed via the basic_auth, authorization, oauth2, or sigv4 parameter",
        ),
        ("remote_write:\n  - name: a\n".to_owned(), "p.yml:2: remote_write[0]: url for remote_write is empty"),
        ("remote_write:\n  - url: ':bad'\n".to_owned(), "p.yml:2: remote_write[0].url: missing protocol scheme"),
        (
            "remote_write:\n  - {url: http://a, name: x}\n  - {url: http://b, name: x}\n".to_owned(),
            "p.yml:3: remote_write[1]: found multiple remote write configs with job name \"x\"",
        ),
        ("remote_write: [~]\n".to_owned(), "p.yml:1: remote_write[0]: empty or null remote write config section"),
        // Agent mode.
        (format!("rule_files: [a.yml]\n{RW}"), "p.yml:1: rule_files: field rule_files is not allowed in agent mode"),
        (format!("remote_read:\n  - url: http://a\n{RW}"), "p.yml:2: remote_read: field remote_read is not allowed in agent mode"),
        (
            format!("alerting:\n  alertmanagers:\n    - static_configs: []\n{RW}"),
            "p.yml:3: alerting: field alerting is not allowed in agent mode",
        ),
        // Refused by name.
        (
            job("    consul_sd_configs: [{server: 'x:8500'}]\n"),
            "p.yml:3: scrape_configs[0].consul_sd_configs: not supported by promlet (use static_configs, file_sd_configs, kubernetes_sd_configs or kubelet_sd_configs)",
        ),
        (
            job("    oauth2: {client_id: a}\n"),
            "p.yml:3: scrape_configs[0].oauth2: not supported by promlet (Prometheus accepts it; promlet refuses rather than ignore it)",
        ),
        (
            "remote_write:\n  - url: http://a\n    send_exemplars: true\n".to_owned(),
            "p.yml:3: remote_write[0].send_exemplars: not supported by promlet: exemplars are parsed and skipped, never sent",
        ),
        (
            job("    tls_config: {max_version: TLS11}\n"),
            "p.yml:3: scrape_configs[0].tls_config.max_version: not supported by promlet: it speaks TLS 1.2 and 1.3 only (rustls)",
        ),
        // file_sd.
        (
            job("    file_sd_configs: [{files: []}]\n"),
            "p.yml:3: scrape_configs[0].file_sd_configs[0]: file service discovery config must contain at least one path name",
        ),
        (
            job("    file_sd_configs: [{files: [a.txt]}]\n"),
            "p.yml:3: scrape_configs[0].file_sd_configs[0]: path name \"a.txt\" is not valid for file discovery",
        ),
        // Types and YAML.
        (job("    honor_labels: 'true'\n"), "p.yml:3: scrape_configs[0].honor_labels: expected true or false, got \"true\""),
        (job("    sample_limit: -1\n"), "p.yml:3: scrape_configs[0].sample_limit: expected a non-negative integer, got \"-1\""),
        (job("    static_configs: {targets: [a]}\n"), "p.yml:3: scrape_configs[0].static_configs: expected a sequence, got a mapping"),
        (job("    params: {x: a}\n"), "p.yml:3: scrape_configs[0].params.x: expected a sequence, got \"a\""),
        (job("    job_name: k\n"), "p.yml:3: scrape_configs[0].job_name: key given twice in one mapping"),
    ];
    for (text, want) in &cases {
        assert_eq!(&err(text), want, "config:\n{text}");
    }
}

#[test]
fn yaml_syntax_errors_give_line_and_column() {
    let e = err("scrape_configs:\n\t- job_name: x\n");
    assert!(e.starts_with("p.yml:2:"), "{e}");
    assert!(e.contains("yaml:"), "{e}");
}

#[test]
fn prometheus_defaults_apply() {
    let c = load(&format!("scrape_configs:\n  - job_name: j\n{RW}")).expect("valid");
    assert_eq!(c.global.scrape_interval, Duration::from_secs(60));
    assert_eq!(c.global.scrape_timeout, Duration::from_secs(10));
    let sc = &c.scrape_configs[0];
    assert_eq!(sc.scrape_interval, Duration::from_secs(60));
    assert_eq!(sc.scrape_timeout, Duration::from_secs(10));
    assert_eq!(sc.metrics_path, "/metrics");
    assert_eq!(sc.scheme, "http");
    assert!(sc.honor_timestamps);
    assert!(!sc.honor_labels);
    assert!(sc.http.follow_redirects);
    let rw = &c.remote_write[0];
    assert_eq!(rw.remote_timeout, Duration::from_secs(30));
    assert_eq!(rw.queue_config, QueueConfig::default());
    assert_eq!(rw.queue_config.capacity, 10_000);
    assert_eq!(rw.queue_config.max_shards, 50);
    assert_eq!(rw.queue_config.max_samples_per_send, 2000);
    assert_eq!(rw.queue_config.batch_send_deadline, Duration::from_secs(5));
    assert_eq!(rw.queue_config.min_backoff, Duration::from_millis(30));
    assert_eq!(rw.queue_config.max_backoff, Duration::from_secs(5));
    assert_eq!(rw.queue_config.retry_on_http_429, None);
    assert!(rw.metadata_config.send);
    assert_eq!(rw.metadata_config.send_interval, Duration::from_secs(60));
}

#[test]
fn timeouts_clamp_to_short_intervals_and_inherit_globals() {
    let c = load(&format!(
        "global: {{scrape_interval: 5s}}\nscrape_configs:\n  - job_name: a\n  - job_name: b\n    scrape_interval: 0s\n  - job_name: c\n    scrape_interval: 1m\n{RW}"
    ))
    .expect("valid");
    assert_eq!(c.global.scrape_timeout, Duration::from_secs(5));
    assert_eq!(c.scrape_configs[0].scrape_interval, Duration::from_secs(5));
    assert_eq!(c.scrape_configs[1].scrape_interval, Duration::from_secs(5));
    assert_eq!(c.scrape_configs[2].scrape_timeout, Duration::from_secs(5));
}

#[test]
fn yaml_v2_features_load() {
    let text = "\
defaults: &d
  scrape_interval: 30s
  honor_labels: yes
";
    // A top-level anchor holder is an unknown key in Prometheus too; use a merge inside jobs.
    assert!(load(&format!("{text}{RW}")).is_err());
    let c = load(&format!(
        "scrape_configs:\n  - &base\n    job_name: a\n    scrape_interval: 30s\n    honor_labels: yes\n  - <<: *base\n    job_name: b\n    honor_labels: off\n{RW}"
    ))
    .expect("valid");
    assert!(c.scrape_configs[0].honor_labels);
    assert_eq!(c.scrape_configs[1].scrape_interval, Duration::from_secs(30));
    assert!(!c.scrape_configs[1].honor_labels);
}

#[test]
fn bearer_token_files_become_bearer_authorization_with_absolute_paths() {
    let c = load(&job(
        "    bearer_token_file: token\n    tls_config: {ca_file: ca.crt}\n",
    ))
    .expect("valid");
    let sc = &c.scrape_configs[0];
    assert_eq!(
        sc.http.auth,
        http::Auth::Authorization {
            kind: "Bearer".to_owned(),
            credentials: http::Secret::File("/etc/promlet/token".to_owned())
        }
    );
    assert_eq!(sc.http.tls_config.ca_file, "/etc/promlet/ca.crt");
}

#[test]
fn secrets_never_show_in_debug_output() {
    let c = load(&job(
        "    basic_auth: {username: u, password: hunter2}\n    bearer_token: ~\n",
    ))
    .expect("valid");
    let shown = format!("{c:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[test]
fn deliberate_extensions_load() {
    // Global limits (Prometheus ≥ 2.45) are accepted and inherited.
    let c = load(&format!("global:\n  sample_limit: 5000\n  body_size_limit: 16MiB\nscrape_configs:\n  - job_name: j\n{RW}"))
        .expect("valid");
    assert_eq!(c.scrape_configs[0].limits.sample_limit, 5000);
    assert_eq!(c.scrape_configs[0].limits.body_size_limit, 16 << 20);
    let c =
        load("remote_write:\n  - url: http://a\n    queue_config: {retry_on_http_429: false}\n")
            .expect("valid");
    assert_eq!(
        c.remote_write[0].queue_config.retry_on_http_429,
        Some(false)
    );
}

#[test]
fn kubelet_sd_configs_load_with_defaults_and_http_keys() {
    let c = load(&job("    kubelet_sd_configs:\n      - {}\n      - url: http://10.0.0.1:10255/k\n        refresh_interval: 1m\n        bearer_token_file: tok\n        tls_config: {insecure_skip_verify: true}\n"))
        .expect("valid");
    let k = &c.scrape_configs[0].kubelet_sd_configs;
    assert_eq!(k.len(), 2);
    assert_eq!(k[0].url.text, "https://localhost:10250");
    assert_eq!(k[0].refresh_interval, Duration::from_secs(30));
    assert_eq!(k[0].http, HttpClientConfig::default());
    assert_eq!(k[1].url.host, "10.0.0.1:10255");
    assert_eq!(k[1].refresh_interval, Duration::from_secs(60));
    assert!(k[1].http.tls_config.insecure_skip_verify);
    assert_eq!(
        k[1].http.auth,
        http::Auth::Authorization {
            kind: "Bearer".to_owned(),
            credentials: http::Secret::File("/etc/promlet/tok".to_owned())
        }
    );
}

#[test]
fn kubelet_sd_configs_refuse_bad_keys() {
    for (body, want) in [
        (
            "    kubelet_sd_configs: [{role: pod}]\n",
            "p.yml:3: scrape_configs[0].kubelet_sd_configs[0].role: unknown key",
        ),
        (
            "    kubelet_sd_configs: [{url: \"ftp://x\"}]\n",
            "p.yml:3: scrape_configs[0].kubelet_sd_configs[0].url: \"ftp://x\" is not an http:// or https:// URL with a host",
        ),
        (
            "    kubelet_sd_configs: [{refresh_interval: 0s}]\n",
            "p.yml:3: scrape_configs[0].kubelet_sd_configs[0].refresh_interval: refresh_interval must be greater than 0",
        ),
        (
            "    kubelet_sd_configs: [{bearer_token: a, bearer_token_file: b}]\n",
            "p.yml:3: scrape_configs[0].kubelet_sd_configs[0]: at most one of bearer_token & bearer_token_file must be configured",
        ),
    ] {
        assert_eq!(err(&job(body)), want, "{body}");
    }
}

#[test]
fn kubernetes_sd_configs_load_roles_namespaces_and_selectors() {
    let c = load(&job(concat!(
        "    kubernetes_sd_configs:\n",
        "      - role: node\n",
        "      - role: pod\n",
        "        api_server: https://10.43.0.1:6443\n",
        "        bearer_token_file: tok\n",
        "        tls_config: {ca_file: ca.crt}\n",
        "        namespaces: {names: [shop], own_namespace: true}\n",
        "        attach_metadata: {node: false}\n",
        "        selectors:\n",
        "          - {role: pod, field: 'spec.nodeName=edge-1', label: 'app=web'}\n",
    )))
    .expect("valid");
    let k = &c.scrape_configs[0].kubernetes_sd_configs;
    assert_eq!(k.len(), 2);
    assert_eq!(k[0].role, KubeRole::Node);
    assert_eq!(k[0].api_server, None, "in-cluster");
    assert_eq!(k[0].http, HttpClientConfig::default());
    assert_eq!(k[1].role, KubeRole::Pod);
    assert_eq!(
        k[1].api_server.as_ref().map(|u| u.host.as_str()),
        Some("10.43.0.1:6443")
    );
    assert_eq!(k[1].namespaces, ["shop"]);
    assert!(k[1].own_namespace);
    assert_eq!(k[1].field_selector, "spec.nodeName=edge-1");
    assert_eq!(k[1].label_selector, "app=web");
    assert_eq!(k[1].http.tls_config.ca_file, "/etc/promlet/ca.crt");
}

#[test]
fn kubernetes_sd_configs_refuse_as_prometheus_does() {
    let at = "p.yml:3: scrape_configs[0].kubernetes_sd_configs[0]";
    for (body, want) in [
        ("[{}]", format!("{at}: role missing (one of: pod, service, endpoints, endpointslice, node, ingress)")),
        ("[{role: pods}]", format!("{at}.role: unknown Kubernetes SD role \"pods\"")),
        (
            "[{role: endpoints}]",
            format!("{at}.role: role \"endpoints\" is not supported by promlet (pod and node are)"),
        ),
        (
            "[{role: pod, bearer_token_file: t}]",
            format!("{at}: to use custom HTTP client configuration please provide the 'api_server' URL explicitly"),
        ),
        (
            "[{role: pod, selectors: [{role: node, field: 'metadata.name=a'}]}]",
            format!("{at}.selectors: pod role supports only pod selectors"),
        ),
        (
            "[{role: pod, selectors: [{role: pod}, {role: pod}]}]",
            format!("{at}.selectors: duplicated selector role: pod"),
        ),
        (
            "[{role: pod, selectors: [{role: pod, field: 'spec.nodeName'}]}]",
            format!("{at}.selectors: invalid selector: 'spec.nodeName'; can't understand 'spec.nodeName'"),
        ),
        (
            "[{role: node, api_server: 'ftp://x'}]",
            format!("{at}.api_server: \"ftp://x\" is not an http:// or https:// URL with a host"),
        ),
        (
            "[{role: pod, attach_metadata: {node: true}}]",
            format!("{at}.attach_metadata.node: not supported by promlet (relabel with the pod's node name instead)"),
        ),
        (
            "[{role: pod, kubeconfig_file: k}]",
            format!("{at}.kubeconfig_file: not supported by promlet (set api_server and its auth, or run in-cluster)"),
        ),
        ("[{role: pod, namespaces: {name: [a]}}]", format!("{at}.namespaces.name: unknown key")),
    ] {
        let body = format!("    kubernetes_sd_configs: {body}\n");
        assert_eq!(err(&job(&body)), want, "{body}");
    }
    // `${NAME}` in a selector is the environment's (promlet's extension for DaemonSets).
    let body = "    kubernetes_sd_configs: [{role: pod, selectors: [{role: pod, field: 'spec.nodeName=${PROMLET_TEST_UNSET_9F3}'}]}]\n";
    assert_eq!(
        err(&job(body)),
        format!("{at}.selectors[0].field: environment variable \"PROMLET_TEST_UNSET_9F3\" is not set (in \"spec.nodeName=${{PROMLET_TEST_UNSET_9F3}}\")")
    );
    let path = std::env::var("PATH").expect("PATH is set where tests run");
    assert_eq!(
        expand_env("a=${PATH},b=$$x,c=$y").as_deref(),
        Ok(format!("a={path},b=$x,c=$y").as_str())
    );
    assert!(expand_env("a=${PATH").is_err());
    // Escaped commas and every operator are fields.ParseSelector's.
    for ok in ["a=b", "a==b,c!=d", "metadata.name=x\\,y", ""] {
        assert_eq!(field_selector_error(ok), None, "{ok}");
    }
}

#[test]
fn empty_and_remote_write_less_configs_load_as_in_prometheus_2_42() {
    let c = load("").expect("empty file is valid");
    assert!(c.remote_write.is_empty());
    assert_eq!(c.global, GlobalConfig::default());
    assert!(load("global:\n").is_ok());
}

#[test]
fn the_builtin_config_is_valid() {
    let c = Config::builtin();
    assert_eq!(c.scrape_configs.len(), 2);
    assert_eq!(
        c.remote_write[0].url.text,
        "http://127.0.0.1:9090/api/v1/write"
    );
}

#[test]
fn a_file_over_the_size_cap_is_refused_unparsed() {
    let dir = std::env::temp_dir().join(format!("promlet-config-cap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cap = usize::try_from(MAX_CONFIG_BYTES).expect("4 MiB fits");
    // A valid document padded with a comment to exactly the cap loads; one byte more does not.
    let mut text = format!("{RW}#");
    text.push_str(&"x".repeat(cap - text.len()));
    let at_cap = dir.join("at-cap.yml");
    std::fs::write(&at_cap, &text).expect("write");
    assert!(
        Config::load(&at_cap).is_ok(),
        "a file of exactly the cap loads"
    );
    text.push('x');
    let over = dir.join("over.yml");
    std::fs::write(&over, &text).expect("write");
    let e = Config::load(&over).expect_err("over the cap");
    assert_eq!(
        e.to_string(),
        format!("{}: larger than 4194304 bytes", over.display())
    );
    let _ = std::fs::remove_dir_all(&dir);
    // A device that never ends is refused after the cap, not read forever.
    let e = Config::load(Path::new("/dev/zero")).expect_err("/dev/zero");
    assert_eq!(e.to_string(), "/dev/zero: larger than 4194304 bytes");
}
