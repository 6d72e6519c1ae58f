//! `prometheus.yml` → a validated [`Config`], with located errors.
//!
//! The reference is what Debian's Prometheus 2.42 (`promtool check config --agent`) accepts and
//! refuses: the same keys, defaults and validation rules, and the same verdict on every file of
//! the differential corpus (`tests/fixtures/configs/`). Every error says
//! `file:line: key.path: reason`. Keys Prometheus accepts that promlet cannot honour (other
//! service discoveries, oauth2, sigv4, tracing…) are refused by name, never ignored.
//!
//! Deliberate differences, each tested: the global limits of Prometheus ≥ 2.45
//! (`global.sample_limit`, `body_size_limit`, …) are accepted; `retry_on_http_429` defaults to
//! true; queue defaults are those of current Prometheus. See `tests/fixtures/configs/DEVIATIONS`.

pub mod http;
pub mod relabel;
pub mod units;
pub mod url;
pub mod yaml;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use self::http::{unknown, HttpClientConfig, HttpKeys};
use self::relabel::{is_valid_label_name, relabel_configs, RelabelConfig};
use self::units::{parse_duration, parse_size};
use self::url::Url;
use self::yaml::{index, join, Located, Node};

/// The configuration promlet runs when no `--config.file` is given (printed by
/// `promlet --print-default-config`).
pub const DEFAULT_CONFIG: &str = include_str!("default.yml");

/// The largest config file read. A node's prometheus.yml is a few KiB; one listing 10,000
/// static targets with a label each is about 0.5 MiB. 4 MiB is many times any real one, and it
/// bounds the text a parse holds (the text, its tab-normalised copy) to 8 MiB on a 512 MiB
/// board. Reading stops one byte past it, so `/dev/zero` or a runaway generator is refused at
/// once instead of growing the process until the kernel kills it.
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// Why a config file was refused.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        /// The file.
        file: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file holds more than [`MAX_CONFIG_BYTES`].
    TooLarge {
        /// The file.
        file: PathBuf,
    },
    /// The YAML could not be parsed.
    Syntax {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: u32,
        /// 1-based column.
        col: u32,
        /// The parser's reason.
        reason: String,
    },
    /// The YAML parsed but a key is unknown, mistyped or invalid.
    Invalid {
        /// The file.
        file: PathBuf,
        /// 1-based line of the offending key or section.
        line: u32,
        /// Key path such as `scrape_configs[1].relabel_configs[0]`.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

impl ConfigError {
    fn located(file: &Path, e: Located) -> Self {
        ConfigError::Invalid {
            file: file.to_owned(),
            line: e.line,
            key: e.key,
            reason: e.reason,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { file, source } => {
                write!(f, "{}: cannot read config: {source}", file.display())
            }
            ConfigError::TooLarge { file } => {
                write!(
                    f,
                    "{}: larger than {MAX_CONFIG_BYTES} bytes",
                    file.display()
                )
            }
            ConfigError::Syntax {
                file,
                line,
                col,
                reason,
            } => write!(f, "{}:{line}:{col}: yaml: {reason}", file.display()),
            ConfigError::Invalid {
                file,
                line,
                key,
                reason,
            } => {
                if key.is_empty() {
                    write!(f, "{}:{line}: {reason}", file.display())
                } else {
                    write!(f, "{}:{line}: {key}: {reason}", file.display())
                }
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The text of `path`, read up to one byte past [`MAX_CONFIG_BYTES`] (the byte that tells a
/// file at the cap from one over it).
fn read_bounded(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read as _;
    let read = |source| ConfigError::Read {
        file: path.to_owned(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes))
        .map_err(read)?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            file: path.to_owned(),
        });
    }
    // The words std's read_to_string uses for the same failure.
    String::from_utf8(bytes).map_err(|_| {
        read(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        ))
    })
}

/// Per-scrape limits; 0 means no limit (Prometheus' convention).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// Most samples a scrape may return after metric relabeling.
    pub sample_limit: u64,
    /// Most targets a scrape config may have after relabeling.
    pub target_limit: u64,
    /// Most labels a series may have.
    pub label_limit: u64,
    /// Longest label name, bytes.
    pub label_name_length_limit: u64,
    /// Longest label value, bytes.
    pub label_value_length_limit: u64,
    /// Largest uncompressed body, bytes.
    pub body_size_limit: u64,
}

/// `global`.
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalConfig {
    /// Default scrape interval (1m).
    pub scrape_interval: Duration,
    /// Default scrape timeout (10s, or the interval if shorter).
    pub scrape_timeout: Duration,
    /// Accepted for compatibility; rules do not run in agent mode (1m).
    pub evaluation_interval: Duration,
    /// Labels added to every series sent, sorted by name; a label on the series wins.
    pub external_labels: Vec<(String, String)>,
    /// Default limits for every scrape config (Prometheus ≥ 2.45; see the module doc).
    pub limits: Limits,
}

impl Default for GlobalConfig {
    fn default() -> Self {
        GlobalConfig {
            scrape_interval: Duration::from_secs(60),
            scrape_timeout: Duration::from_secs(10),
            evaluation_interval: Duration::from_secs(60),
            external_labels: Vec::new(),
            limits: Limits::default(),
        }
    }
}

/// One `static_configs` entry (a target group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetGroup {
    /// `host:port` addresses.
    pub targets: Vec<String>,
    /// Labels added to every target of the group, sorted by name.
    pub labels: Vec<(String, String)>,
}

/// One `file_sd_configs` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSdConfig {
    /// File patterns (a `*` allowed in the last path element), absolute after loading.
    pub files: Vec<String>,
    /// How often the files are re-read (5m).
    pub refresh_interval: Duration,
}

/// One `kubelet_sd_configs` entry (a promlet extension, see the README): the pods of one
/// kubelet, read from its `/pods`, as targets of Prometheus' `kubernetes_sd_configs` role `pod`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletSdConfig {
    /// The kubelet's base URL (`https://localhost:10250`); `/pods` is appended to its path.
    pub url: Url,
    /// How often `/pods` is fetched (30s).
    pub refresh_interval: Duration,
    /// Auth and TLS for the kubelet. With neither auth nor `ca_file` set, the discovery uses
    /// the pod's service-account token and CA when those files exist (see `discovery`).
    pub http: HttpClientConfig,
}

/// A `kubernetes_sd_configs` role promlet runs (Prometheus has four more; see the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubeRole {
    /// `pod`: a target per declared container port, as `kubelet_sd_configs`.
    Pod,
    /// `node`: a target per node, at its kubelet's port.
    Node,
}

impl KubeRole {
    /// The role as written in the config.
    pub fn name(self) -> &'static str {
        match self {
            KubeRole::Pod => "pod",
            KubeRole::Node => "node",
        }
    }
}

/// One `kubernetes_sd_configs` entry: role `pod` or `node` from the API server, listed and
/// then watched (`discovery::kubernetes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesSdConfig {
    /// `role`.
    pub role: KubeRole,
    /// `api_server`; none: the in-cluster config (`KUBERNETES_SERVICE_HOST`/`_PORT`, the
    /// service account's token and CA).
    pub api_server: Option<Url>,
    /// `namespaces.names`; empty: every namespace (nodes have none).
    pub namespaces: Vec<String>,
    /// `namespaces.own_namespace`: also the pod's own namespace, read at start.
    pub own_namespace: bool,
    /// The `selectors` entry of this role: its `label` selector, as written.
    pub label_selector: String,
    /// Its `field` selector, as written (`spec.nodeName=$(NODE_NAME)` for a DaemonSet).
    pub field_selector: String,
    /// Auth and TLS for an explicit `api_server`.
    pub http: HttpClientConfig,
}

/// The kubelet's port on the node itself, as `kubelet --port` defaults it.
pub const DEFAULT_KUBELET_URL: &str = "https://localhost:10250";

/// One `scrape_configs` entry with Prometheus' defaults and the global settings applied.
#[derive(Debug, Clone, PartialEq)]
pub struct ScrapeConfig {
    /// `job_name`, unique in the file.
    pub job_name: String,
    /// How often to scrape.
    pub scrape_interval: Duration,
    /// How long a scrape may take (≤ interval).
    pub scrape_timeout: Duration,
    /// Path of the metrics endpoint (`/metrics`).
    pub metrics_path: String,
    /// `http` or `https`.
    pub scheme: String,
    /// URL query parameters, in file order.
    pub params: Vec<(String, Vec<String>)>,
    /// Keep the target's own labels on conflicts (false).
    pub honor_labels: bool,
    /// Keep timestamps the target exposes (true).
    pub honor_timestamps: bool,
    /// Per-scrape limits.
    pub limits: Limits,
    /// Static targets.
    pub static_configs: Vec<TargetGroup>,
    /// File-based discovery.
    pub file_sd_configs: Vec<FileSdConfig>,
    /// The local kubelet's pods (promlet's extension).
    pub kubelet_sd_configs: Vec<KubeletSdConfig>,
    /// Pods and nodes from the API server.
    pub kubernetes_sd_configs: Vec<KubernetesSdConfig>,
    /// Rules applied to targets before scraping.
    pub relabel_configs: Vec<RelabelConfig>,
    /// Rules applied to every scraped series.
    pub metric_relabel_configs: Vec<RelabelConfig>,
    /// Auth, TLS, proxy.
    pub http: HttpClientConfig,
    /// Line of the entry in the file.
    pub line: u32,
}

/// `remote_write[].queue_config`. promlet has one sender thread per endpoint; the meaning of
/// each key for it is documented in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    /// Samples buffered per shard in Prometheus; promlet's buffer is the ring (10000).
    pub capacity: i64,
    /// Prometheus' upper shard count; promlet sends from one thread (50).
    pub max_shards: i64,
    /// Prometheus' lower shard count (1).
    pub min_shards: i64,
    /// Most samples in one request (2000).
    pub max_samples_per_send: i64,
    /// Longest a partial batch waits (5s).
    pub batch_send_deadline: Duration,
    /// First retry backoff (30ms).
    pub min_backoff: Duration,
    /// Backoff cap (5s).
    pub max_backoff: Duration,
    /// Retry HTTP 429. `None` means promlet's default, which is to retry (see DESIGN.md).
    pub retry_on_http_429: Option<bool>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            capacity: 10_000,
            max_shards: 50,
            min_shards: 1,
            max_samples_per_send: 2000,
            batch_send_deadline: Duration::from_secs(5),
            min_backoff: Duration::from_millis(30),
            max_backoff: Duration::from_secs(5),
            retry_on_http_429: None,
        }
    }
}

/// `remote_write[].metadata_config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetadataConfig {
    /// Send HELP/TYPE/UNIT metadata (true).
    pub send: bool,
    /// How often (1m).
    pub send_interval: Duration,
    /// Most metadata entries per request (2000).
    pub max_samples_per_send: i64,
}

impl Default for MetadataConfig {
    fn default() -> Self {
        MetadataConfig {
            send: true,
            send_interval: Duration::from_secs(60),
            max_samples_per_send: 2000,
        }
    }
}

/// One `remote_write` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteWriteConfig {
    /// Where to POST.
    pub url: Url,
    /// Optional unique name (used in self-metrics and the ring cursor key).
    pub name: String,
    /// Request timeout (30s).
    pub remote_timeout: Duration,
    /// Extra HTTP headers (e.g. `THANOS-TENANT`), in file order; reserved ones are refused.
    pub headers: Vec<(String, String)>,
    /// Rules applied to every series before sending.
    pub write_relabel_configs: Vec<RelabelConfig>,
    /// Send exemplars: always false, `true` is refused (promlet skips exemplars).
    pub send_exemplars: bool,
    /// Send native histograms (false).
    pub send_native_histograms: bool,
    /// Auth, TLS, proxy.
    pub http: HttpClientConfig,
    /// Batching and retry.
    pub queue_config: QueueConfig,
    /// Metadata sending.
    pub metadata_config: MetadataConfig,
    /// Line of the entry in the file.
    pub line: u32,
}

/// A loaded, validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `global`, defaults applied.
    pub global: GlobalConfig,
    /// `scrape_configs`, global settings applied.
    pub scrape_configs: Vec<ScrapeConfig>,
    /// `remote_write`; may be empty (Prometheus 2.42 accepts that), then data stays in the ring.
    pub remote_write: Vec<RemoteWriteConfig>,
    /// Where the config came from, for messages.
    pub file: PathBuf,
}

/// A promtool-style warning from [`Config::check_files`] (the file is still valid).
pub type Warning = String;

impl Config {
    /// Reads and validates `path`; relative paths inside are resolved against its directory.
    /// At most [`MAX_CONFIG_BYTES`] are read: a longer file (or a device that never ends) is
    /// [`ConfigError::TooLarge`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read_bounded(path)?;
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        Config::parse(&text, path, dir)
    }

    /// The built-in default configuration.
    pub fn builtin() -> Config {
        Config::parse(DEFAULT_CONFIG, Path::new("<built-in>"), Path::new("."))
            .expect("the built-in config is valid (a unit test loads it)")
    }

    /// Validates `text`; `file` names it in errors, `dir` anchors relative paths.
    pub fn parse(text: &str, file: &Path, dir: &Path) -> Result<Config, ConfigError> {
        let root = yaml::parse(text).map_err(|e| ConfigError::Syntax {
            file: file.to_owned(),
            line: e.line,
            col: e.col,
            reason: e.reason,
        })?;
        let mut config = decode(root.as_ref()).map_err(|e| ConfigError::located(file, e))?;
        config.file = file.to_owned();
        for sc in &mut config.scrape_configs {
            sc.http.set_directory(dir);
            for k in &mut sc.kubelet_sd_configs {
                k.http.set_directory(dir);
            }
            for k in &mut sc.kubernetes_sd_configs {
                k.http.set_directory(dir);
            }
            for f in &mut sc.file_sd_configs {
                for pattern in &mut f.files {
                    if Path::new(pattern.as_str()).is_relative() {
                        *pattern = dir.join(pattern.as_str()).to_string_lossy().into_owned();
                    }
                }
            }
        }
        for rw in &mut config.remote_write {
            rw.http.set_directory(dir);
        }
        Ok(config)
    }

    /// The checks `promtool check config` makes beyond loading: credential, certificate and
    /// key files of scrape configs exist; file_sd files parse and their targets are valid.
    /// Returns promtool's warnings (a file_sd pattern that matches nothing).
    pub fn check_files(&self) -> Result<Vec<Warning>, ConfigError> {
        let mut warnings = Vec::new();
        for (i, sc) in self.scrape_configs.iter().enumerate() {
            let key = index("scrape_configs", i);
            let err = |reason: String| ConfigError::Invalid {
                file: self.file.clone(),
                line: sc.line,
                key: key.clone(),
                reason,
            };
            if let http::Auth::Authorization {
                credentials: http::Secret::File(path),
                ..
            } = &sc.http.auth
            {
                std::fs::metadata(path).map_err(|e| {
                    err(format!(
                        "error checking authorization credentials or bearer token file {path:?}: {e}"
                    ))
                })?;
            }
            let tls = &sc.http.tls_config;
            if !tls.cert_file.is_empty() && tls.key_file.is_empty() {
                return Err(err(format!(
                    "client cert file {:?} specified without client key file",
                    tls.cert_file
                )));
            }
            if !tls.key_file.is_empty() && tls.cert_file.is_empty() {
                return Err(err(format!(
                    "client key file {:?} specified without client cert file",
                    tls.key_file
                )));
            }
            for (what, path) in [
                ("client cert", &tls.cert_file),
                ("client key", &tls.key_file),
            ] {
                if !path.is_empty() {
                    std::fs::metadata(path)
                        .map_err(|e| err(format!("error checking {what} file {path:?}: {e}")))?;
                }
            }
            for group in &sc.static_configs {
                crate::targets::check_group(group, sc).map_err(&err)?;
            }
            for f in &sc.file_sd_configs {
                for pattern in &f.files {
                    let matched = crate::targets::glob(pattern).map_err(&err)?;
                    if matched.is_empty() {
                        warnings.push(format!(
                            "file {pattern:?} for file_sd in scrape job {:?} does not exist",
                            sc.job_name
                        ));
                    }
                    for path in matched {
                        let groups = crate::targets::read_file_sd(&path).map_err(|e| {
                            err(format!("checking SD file {}: {e}", path.display()))
                        })?;
                        for group in &groups {
                            crate::targets::check_group(group, sc).map_err(&err)?;
                        }
                    }
                }
            }
        }
        Ok(warnings)
    }
}

/// Top-level keys Prometheus knows that promlet refuses, and why.
const REFUSED_TOP: &[(&str, &str)] = &[
    ("tracing", "not supported by promlet"),
    (
        "storage",
        "not supported by promlet (agent mode keeps no TSDB)",
    ),
];

/// Service discoveries Debian's Prometheus 2.42 knows that promlet does not have.
const REFUSED_SD: &[&str] = &[
    "azure_sd_configs",
    "consul_sd_configs",
    "digitalocean_sd_configs",
    "docker_sd_configs",
    "dockerswarm_sd_configs",
    "dns_sd_configs",
    "ec2_sd_configs",
    "eureka_sd_configs",
    "gce_sd_configs",
    "hetzner_sd_configs",
    "http_sd_configs",
    "ionos_sd_configs",
    "kuma_sd_configs",
    "lightsail_sd_configs",
    "linode_sd_configs",
    "marathon_sd_configs",
    "nerve_sd_configs",
    "nomad_sd_configs",
    "openstack_sd_configs",
    "ovhcloud_sd_configs",
    "puppetdb_sd_configs",
    "scaleway_sd_configs",
    "serverset_sd_configs",
    "triton_sd_configs",
    "uyuni_sd_configs",
    "vultr_sd_configs",
];

fn decode(root: Option<&Node>) -> Result<Config, Located> {
    let empty = Node {
        kind: yaml::Kind::Scalar {
            text: String::new(),
            plain: true,
        },
        line: 1,
    };
    let root = root.unwrap_or(&empty);
    let entries = root.entries("")?;
    // `global` first: scrape configs take their defaults from it wherever it stands.
    let mut global = GlobalConfig::default();
    if let Some((_, node)) = entries.iter().find(|(k, _)| *k == "global") {
        global = global_config(node)?;
    }
    let mut scrape_configs: Vec<ScrapeConfig> = Vec::new();
    let mut remote_write: Vec<RemoteWriteConfig> = Vec::new();
    for (name, value) in &entries {
        match *name {
            "global" => {}
            "scrape_configs" => {
                for (i, item) in value.items(name)?.iter().enumerate() {
                    let k = index(name, i);
                    if item.is_null() {
                        return Err(Located::new(
                            item.line,
                            &k,
                            "empty or null scrape config section",
                        ));
                    }
                    let sc = scrape_config(item, &k, &global)?;
                    if scrape_configs.iter().any(|o| o.job_name == sc.job_name) {
                        return Err(Located::new(
                            item.line,
                            &k,
                            format!(
                                "found multiple scrape configs with job name {:?}",
                                sc.job_name
                            ),
                        ));
                    }
                    scrape_configs.push(sc);
                }
            }
            "remote_write" => {
                for (i, item) in value.items(name)?.iter().enumerate() {
                    let k = index(name, i);
                    if item.is_null() {
                        return Err(Located::new(
                            item.line,
                            &k,
                            "empty or null remote write config section",
                        ));
                    }
                    let rw = remote_write_config(item, &k)?;
                    if !rw.name.is_empty() && remote_write.iter().any(|o| o.name == rw.name) {
                        return Err(Located::new(
                            item.line,
                            &k,
                            format!(
                                "found multiple remote write configs with job name {:?}",
                                rw.name
                            ),
                        ));
                    }
                    remote_write.push(rw);
                }
            }
            "rule_files" | "remote_read" => {
                if !value.items(name)?.is_empty() {
                    return Err(Located::new(
                        value.line,
                        name,
                        format!("field {name} is not allowed in agent mode"),
                    ));
                }
            }
            "alerting" => {
                for (n, v) in value.entries(name)? {
                    let k = join(name, n);
                    match n {
                        "alertmanagers" | "alert_relabel_configs" => {
                            if !v.items(&k)?.is_empty() {
                                return Err(Located::new(
                                    v.line,
                                    name,
                                    "field alerting is not allowed in agent mode",
                                ));
                            }
                        }
                        _ => return Err(unknown(v.line, &k)),
                    }
                }
            }
            other => {
                let line = value.line;
                if let Some((_, why)) = REFUSED_TOP.iter().find(|(k, _)| *k == other) {
                    return Err(Located::new(line, other, *why));
                }
                return Err(unknown(line, other));
            }
        }
    }
    Ok(Config {
        global,
        scrape_configs,
        remote_write,
        file: PathBuf::new(),
    })
}

fn duration(node: &Node, key: &str) -> Result<Duration, Located> {
    if node.is_null() {
        return Ok(Duration::ZERO);
    }
    let text = node.string(key)?;
    parse_duration(&text).map_err(|e| Located::new(node.line, key, e))
}

fn size(node: &Node, key: &str) -> Result<u64, Located> {
    if node.is_null() {
        return Ok(0);
    }
    let text = node.string(key)?;
    parse_size(&text).map_err(|e| Located::new(node.line, key, e))
}

fn label_map(node: &Node, key: &str) -> Result<Vec<(String, String)>, Located> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (name, value) in node.entries(key)? {
        let k = join(key, name);
        if !is_valid_label_name(name) {
            return Err(Located::new(
                value.line,
                &k,
                format!("{name:?} is not a valid label name"),
            ));
        }
        out.push((name.to_owned(), value.string(&k)?));
    }
    out.sort();
    Ok(out)
}

/// Takes one of the six limit keys; `Ok(false)` if `name` is not one.
fn take_limit(limits: &mut Limits, name: &str, value: &Node, key: &str) -> Result<bool, Located> {
    match name {
        "sample_limit" => limits.sample_limit = value.unsigned(key)?,
        "target_limit" => limits.target_limit = value.unsigned(key)?,
        "label_limit" => limits.label_limit = value.unsigned(key)?,
        "label_name_length_limit" => limits.label_name_length_limit = value.unsigned(key)?,
        "label_value_length_limit" => limits.label_value_length_limit = value.unsigned(key)?,
        "body_size_limit" => limits.body_size_limit = size(value, key)?,
        _ => return Ok(false),
    }
    Ok(true)
}

fn global_config(node: &Node) -> Result<GlobalConfig, Located> {
    let key = "global";
    let mut g = GlobalConfig {
        scrape_interval: Duration::ZERO,
        scrape_timeout: Duration::ZERO,
        evaluation_interval: Duration::ZERO,
        ..GlobalConfig::default()
    };
    for (name, value) in node.entries(key)? {
        let k = join(key, name);
        if take_limit(&mut g.limits, name, value, &k)? {
            continue;
        }
        match name {
            "scrape_interval" => g.scrape_interval = duration(value, &k)?,
            "scrape_timeout" => g.scrape_timeout = duration(value, &k)?,
            "evaluation_interval" => g.evaluation_interval = duration(value, &k)?,
            "external_labels" => g.external_labels = label_map(value, &k)?,
            "query_log_file" => {
                return Err(Located::new(
                    value.line,
                    &k,
                    "not supported by promlet (agent mode runs no queries)",
                ))
            }
            _ => return Err(unknown(value.line, &k)),
        }
    }
    let defaults = GlobalConfig::default();
    if g.scrape_interval.is_zero() {
        g.scrape_interval = defaults.scrape_interval;
    }
    if g.scrape_timeout > g.scrape_interval {
        return Err(Located::new(
            node.line,
            key,
            "global scrape timeout greater than scrape interval",
        ));
    }
    if g.scrape_timeout.is_zero() {
        g.scrape_timeout = defaults.scrape_timeout.min(g.scrape_interval);
    }
    if g.evaluation_interval.is_zero() {
        g.evaluation_interval = defaults.evaluation_interval;
    }
    Ok(g)
}

fn target_groups(node: &Node, key: &str) -> Result<Vec<TargetGroup>, Located> {
    let mut groups = Vec::new();
    for (i, item) in node.items(key)?.iter().enumerate() {
        let k = index(key, i);
        let mut group = TargetGroup {
            targets: Vec::new(),
            labels: Vec::new(),
        };
        for (name, value) in item.entries(&k)? {
            let kk = join(&k, name);
            match name {
                "targets" => {
                    for (j, t) in value.items(&kk)?.iter().enumerate() {
                        group.targets.push(t.string(&index(&kk, j))?);
                    }
                }
                "labels" => group.labels = label_map(value, &kk)?,
                _ => return Err(unknown(value.line, &kk)),
            }
        }
        groups.push(group);
    }
    Ok(groups)
}

fn file_sd_configs(node: &Node, key: &str) -> Result<Vec<FileSdConfig>, Located> {
    let mut out = Vec::new();
    for (i, item) in node.items(key)?.iter().enumerate() {
        let k = index(key, i);
        let mut sd = FileSdConfig {
            files: Vec::new(),
            refresh_interval: Duration::from_secs(300),
        };
        for (name, value) in item.entries(&k)? {
            let kk = join(&k, name);
            match name {
                "files" => {
                    for (j, f) in value.items(&kk)?.iter().enumerate() {
                        sd.files.push(f.string(&index(&kk, j))?);
                    }
                }
                "refresh_interval" => sd.refresh_interval = duration(value, &kk)?,
                _ => return Err(unknown(value.line, &kk)),
            }
        }
        if sd.files.is_empty() {
            return Err(Located::new(
                item.line,
                &k,
                "file service discovery config must contain at least one path name",
            ));
        }
        for f in &sd.files {
            if !crate::targets::is_valid_file_sd_name(f) {
                return Err(Located::new(
                    item.line,
                    &k,
                    format!("path name {f:?} is not valid for file discovery"),
                ));
            }
        }
        out.push(sd);
    }
    Ok(out)
}

fn kubelet_sd_configs(node: &Node, key: &str) -> Result<Vec<KubeletSdConfig>, Located> {
    let mut out = Vec::new();
    for (i, item) in node.items(key)?.iter().enumerate() {
        let k = index(key, i);
        let mut url_text = DEFAULT_KUBELET_URL.to_owned();
        let mut url_line = item.line;
        let mut refresh_interval = Duration::from_secs(30);
        let mut http = HttpKeys::new(item.line);
        for (name, value) in item.entries(&k)? {
            let kk = join(&k, name);
            if http.take(name, value, &k)? {
                continue;
            }
            match name {
                "url" => {
                    url_text = value.string(&kk)?;
                    url_line = value.line;
                }
                "refresh_interval" => refresh_interval = duration(value, &kk)?,
                _ => return Err(unknown(value.line, &kk)),
            }
        }
        let kk = join(&k, "url");
        let url = url::parse(&url_text).map_err(|e| Located::new(url_line, &kk, e))?;
        if !matches!(url.scheme.as_str(), "http" | "https") || url.host.is_empty() {
            return Err(Located::new(
                url_line,
                &kk,
                format!("{url_text:?} is not an http:// or https:// URL with a host"),
            ));
        }
        if refresh_interval.is_zero() {
            return Err(Located::new(
                item.line,
                &join(&k, "refresh_interval"),
                "refresh_interval must be greater than 0",
            ));
        }
        out.push(KubeletSdConfig {
            url,
            refresh_interval,
            http: http.finish(&k)?,
        });
    }
    Ok(out)
}

/// Expands `${NAME}` in a selector with the environment variable `NAME` (a promlet extension:
/// a DaemonSet's ConfigMap says `spec.nodeName=${NODE_NAME}`, the downward API sets it). An
/// unset variable is refused, since an empty node name would select the unscheduled pods;
/// `$$` is a `$`.
pub fn expand_env(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('{') {
            let end = inner
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {text:?}"))?;
            let name = &inner[..end];
            let value = std::env::var(name)
                .map_err(|_| format!("environment variable {name:?} is not set (in {text:?})"))?;
            out.push_str(&value);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Checks a field selector the way apimachinery's `fields.ParseSelector` reads one: terms
/// split at unescaped commas, each `key=value`, `key==value` or `key!=value` with a key.
fn field_selector_error(selector: &str) -> Option<String> {
    if selector.is_empty() {
        return None;
    }
    let mut terms = Vec::new();
    let (mut start, mut escaped) = (0, false);
    for (i, c) in selector.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ',' => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    for term in terms {
        let op = term.find("!=").or_else(|| term.find('='));
        match op {
            Some(at) if at > 0 => {}
            _ => {
                return Some(format!(
                    "invalid selector: '{selector}'; can't understand '{term}'"
                ))
            }
        }
    }
    None
}

fn kubernetes_sd_configs(node: &Node, key: &str) -> Result<Vec<KubernetesSdConfig>, Located> {
    let mut out = Vec::new();
    for (i, item) in node.items(key)?.iter().enumerate() {
        let k = index(key, i);
        let mut role = None;
        let mut api_server = None;
        let mut namespaces = Vec::new();
        let mut own_namespace = false;
        let mut selectors: Vec<(String, String, String, u32)> = Vec::new();
        let mut http = HttpKeys::new(item.line);
        for (name, value) in item.entries(&k)? {
            let kk = join(&k, name);
            if http.take(name, value, &k)? {
                continue;
            }
            match name {
                "role" => {
                    let text = value.string(&kk)?;
                    role = Some(match text.as_str() {
                        "pod" => KubeRole::Pod,
                        "node" => KubeRole::Node,
                        "service" | "endpoints" | "endpointslice" | "ingress" => {
                            return Err(Located::new(
                                value.line,
                                &kk,
                                format!(
                                    "role {text:?} is not supported by promlet (pod and node are)"
                                ),
                            ))
                        }
                        _ => {
                            return Err(Located::new(
                                value.line,
                                &kk,
                                format!("unknown Kubernetes SD role {text:?}"),
                            ))
                        }
                    });
                }
                "api_server" => {
                    let text = value.string(&kk)?;
                    let url = url::parse(&text).map_err(|e| Located::new(value.line, &kk, e))?;
                    if !matches!(url.scheme.as_str(), "http" | "https") || url.host.is_empty() {
                        return Err(Located::new(
                            value.line,
                            &kk,
                            format!("{text:?} is not an http:// or https:// URL with a host"),
                        ));
                    }
                    api_server = Some(url);
                }
                "namespaces" => {
                    for (n, v) in value.entries(&kk)? {
                        let nk = join(&kk, n);
                        match n {
                            "names" => {
                                for (j, name) in v.items(&nk)?.iter().enumerate() {
                                    namespaces.push(name.string(&index(&nk, j))?);
                                }
                            }
                            "own_namespace" => own_namespace = v.boolean(&nk)?,
                            _ => return Err(unknown(v.line, &nk)),
                        }
                    }
                }
                "selectors" => {
                    for (j, sel) in value.items(&kk)?.iter().enumerate() {
                        let sk = index(&kk, j);
                        let (mut r, mut label, mut field) =
                            (String::new(), String::new(), String::new());
                        for (n, v) in sel.entries(&sk)? {
                            let nk = join(&sk, n);
                            match n {
                                "role" => r = v.string(&nk)?,
                                "label" => {
                                    label = expand_env(&v.string(&nk)?)
                                        .map_err(|e| Located::new(v.line, &nk, e))?;
                                }
                                "field" => {
                                    field = expand_env(&v.string(&nk)?)
                                        .map_err(|e| Located::new(v.line, &nk, e))?;
                                }
                                _ => return Err(unknown(v.line, &nk)),
                            }
                        }
                        selectors.push((r, label, field, sel.line));
                    }
                }
                "attach_metadata" => {
                    for (n, v) in value.entries(&kk)? {
                        let nk = join(&kk, n);
                        match n {
                            "node" if v.boolean(&nk)? => {
                                return Err(Located::new(
                                    v.line,
                                    &nk,
                                    "not supported by promlet (relabel with the pod's node name instead)",
                                ))
                            }
                            "node" => {}
                            _ => return Err(unknown(v.line, &nk)),
                        }
                    }
                }
                "kubeconfig_file" => {
                    return Err(Located::new(
                        value.line,
                        &kk,
                        "not supported by promlet (set api_server and its auth, or run in-cluster)",
                    ))
                }
                _ => return Err(unknown(value.line, &kk)),
            }
        }
        let Some(role) = role else {
            return Err(Located::new(
                item.line,
                &k,
                "role missing (one of: pod, service, endpoints, endpointslice, node, ingress)",
            ));
        };
        let http = http.finish(&k)?;
        if api_server.is_none() && http != HttpClientConfig::default() {
            return Err(Located::new(
                item.line,
                &k,
                "to use custom HTTP client configuration please provide the 'api_server' URL explicitly",
            ));
        }
        let mut sd = KubernetesSdConfig {
            role,
            api_server,
            namespaces,
            own_namespace,
            label_selector: String::new(),
            field_selector: String::new(),
            http,
        };
        let mut seen: Vec<&str> = Vec::new();
        for (r, label, field, line) in &selectors {
            let sk = join(&k, "selectors");
            if seen.contains(&r.as_str()) {
                return Err(Located::new(
                    *line,
                    &sk,
                    format!("duplicated selector role: {r}"),
                ));
            }
            seen.push(r);
            if r != role.name() {
                return Err(Located::new(
                    *line,
                    &sk,
                    format!(
                        "{} role supports only {} selectors",
                        role.name(),
                        role.name()
                    ),
                ));
            }
            if let Some(why) = field_selector_error(field) {
                return Err(Located::new(*line, &sk, why));
            }
            sd.label_selector.clone_from(label);
            sd.field_selector.clone_from(field);
        }
        out.push(sd);
    }
    Ok(out)
}

fn scrape_config(node: &Node, key: &str, global: &GlobalConfig) -> Result<ScrapeConfig, Located> {
    let mut sc = ScrapeConfig {
        job_name: String::new(),
        scrape_interval: Duration::ZERO,
        scrape_timeout: Duration::ZERO,
        metrics_path: "/metrics".to_owned(),
        scheme: "http".to_owned(),
        params: Vec::new(),
        honor_labels: false,
        honor_timestamps: true,
        limits: global.limits,
        static_configs: Vec::new(),
        file_sd_configs: Vec::new(),
        kubelet_sd_configs: Vec::new(),
        kubernetes_sd_configs: Vec::new(),
        relabel_configs: Vec::new(),
        metric_relabel_configs: Vec::new(),
        http: HttpClientConfig::default(),
        line: node.line,
    };
    let mut http = HttpKeys::new(node.line);
    for (name, value) in node.entries(key)? {
        let k = join(key, name);
        if http.take(name, value, key)? || take_limit(&mut sc.limits, name, value, &k)? {
            continue;
        }
        match name {
            "job_name" => sc.job_name = value.string(&k)?,
            "scrape_interval" => sc.scrape_interval = duration(value, &k)?,
            "scrape_timeout" => sc.scrape_timeout = duration(value, &k)?,
            "metrics_path" => sc.metrics_path = value.string(&k)?,
            "scheme" => sc.scheme = value.string(&k)?,
            "honor_labels" => sc.honor_labels = value.boolean(&k)?,
            "honor_timestamps" => sc.honor_timestamps = value.boolean(&k)?,
            "params" => {
                for (p, v) in value.entries(&k)? {
                    let kk = join(&k, p);
                    let mut vals = Vec::new();
                    for (j, item) in v.items(&kk)?.iter().enumerate() {
                        vals.push(item.string(&index(&kk, j))?);
                    }
                    sc.params.push((p.to_owned(), vals));
                }
            }
            "static_configs" => sc.static_configs.extend(target_groups(value, &k)?),
            "file_sd_configs" => sc.file_sd_configs.extend(file_sd_configs(value, &k)?),
            "kubelet_sd_configs" => sc
                .kubelet_sd_configs
                .extend(kubelet_sd_configs(value, &k)?),
            "kubernetes_sd_configs" => sc
                .kubernetes_sd_configs
                .extend(kubernetes_sd_configs(value, &k)?),
            "relabel_configs" => sc.relabel_configs = relabel_configs(value, &k, "target")?,
            "metric_relabel_configs" => {
                sc.metric_relabel_configs = relabel_configs(value, &k, "metric")?
            }
            sd if REFUSED_SD.contains(&sd) => {
                return Err(Located::new(
                    value.line,
                    &k,
                    "not supported by promlet (use static_configs, file_sd_configs, kubernetes_sd_configs or kubelet_sd_configs)",
                ))
            }
            _ => return Err(unknown(value.line, &k)),
        }
    }
    if sc.job_name.is_empty() {
        return Err(Located::new(node.line, key, "job_name is empty"));
    }
    sc.http = http.finish(key)?;
    if sc.relabel_configs.is_empty() {
        // As config.go's checkStaticTargets: catch URLs pasted as targets.
        for group in &sc.static_configs {
            for t in &group.targets {
                if t.contains('/') {
                    return Err(Located::new(
                        node.line,
                        &join(key, "static_configs"),
                        format!("{t:?} is not a valid hostname"),
                    ));
                }
            }
        }
    }
    if sc.scrape_interval.is_zero() {
        sc.scrape_interval = global.scrape_interval;
    }
    if sc.scrape_timeout > sc.scrape_interval {
        return Err(Located::new(
            node.line,
            key,
            format!(
                "scrape timeout greater than scrape interval for scrape config with job name {:?}",
                sc.job_name
            ),
        ));
    }
    if sc.scrape_timeout.is_zero() {
        sc.scrape_timeout = global.scrape_timeout.min(sc.scrape_interval);
    }
    Ok(sc)
}

/// Headers Prometheus refuses in `remote_write.headers` (config.go `reservedHeaders`).
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-encoding",
    "content-length",
    "content-type",
    "user-agent",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "www-authenticate",
    "accept-encoding",
    "x-prometheus-remote-write-version",
    "x-prometheus-remote-read-version",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
];

fn remote_write_config(node: &Node, key: &str) -> Result<RemoteWriteConfig, Located> {
    let mut url: Option<Url> = None;
    let mut rw = RemoteWriteConfig {
        url: Url {
            text: String::new(),
            scheme: String::new(),
            host: String::new(),
            has_userinfo: false,
        },
        name: String::new(),
        remote_timeout: Duration::from_secs(30),
        headers: Vec::new(),
        write_relabel_configs: Vec::new(),
        send_exemplars: false,
        send_native_histograms: false,
        http: HttpClientConfig::default(),
        queue_config: QueueConfig::default(),
        metadata_config: MetadataConfig::default(),
        line: node.line,
    };
    let mut http = HttpKeys::new(node.line);
    for (name, value) in node.entries(key)? {
        let k = join(key, name);
        if http.take(name, value, key)? {
            continue;
        }
        match name {
            "url" => {
                let text = value.string(&k)?;
                let parsed = url::parse(&text).map_err(|e| Located::new(value.line, &k, e))?;
                url = if value.is_null() { None } else { Some(parsed) };
            }
            "name" => rw.name = value.string(&k)?,
            "remote_timeout" => rw.remote_timeout = duration(value, &k)?,
            "headers" => {
                for (h, v) in value.entries(&k)? {
                    let kk = join(&k, h);
                    let lower = h.to_ascii_lowercase();
                    if lower == "authorization" {
                        return Err(Located::new(
                            v.line,
                            &kk,
                            "authorization header must be changed via the basic_auth, authorization, oauth2, or sigv4 parameter",
                        ));
                    }
                    if RESERVED_HEADERS.contains(&lower.as_str()) {
                        return Err(Located::new(v.line, &kk, format!("{h} is a reserved header. It must not be changed")));
                    }
                    rw.headers.push((h.to_owned(), v.string(&kk)?));
                }
            }
            "write_relabel_configs" => rw.write_relabel_configs = relabel_configs(value, &k, "remote write")?,
            "send_exemplars" => {
                rw.send_exemplars = value.boolean(&k)?;
                if rw.send_exemplars {
                    return Err(Located::new(
                        value.line,
                        &k,
                        "not supported by promlet: exemplars are parsed and skipped, never sent",
                    ));
                }
            }
            "send_native_histograms" => rw.send_native_histograms = value.boolean(&k)?,
            "queue_config" => rw.queue_config = queue_config(value, &k)?,
            "metadata_config" => rw.metadata_config = metadata_config(value, &k)?,
            "sigv4" => {
                return Err(Located::new(
                    value.line,
                    &k,
                    "not supported by promlet (Prometheus accepts it; promlet refuses rather than ignore it)",
                ))
            }
            _ => return Err(unknown(value.line, &k)),
        }
    }
    let Some(url) = url else {
        return Err(Located::new(
            node.line,
            key,
            "url for remote_write is empty",
        ));
    };
    rw.url = url;
    rw.http = http.finish(key)?;
    Ok(rw)
}

fn queue_config(node: &Node, key: &str) -> Result<QueueConfig, Located> {
    let mut q = QueueConfig::default();
    for (name, value) in node.entries(key)? {
        let k = join(key, name);
        match name {
            "capacity" => q.capacity = value.signed(&k)?,
            "max_shards" => q.max_shards = value.signed(&k)?,
            "min_shards" => q.min_shards = value.signed(&k)?,
            "max_samples_per_send" => q.max_samples_per_send = value.signed(&k)?,
            "batch_send_deadline" => q.batch_send_deadline = duration(value, &k)?,
            "min_backoff" => q.min_backoff = duration(value, &k)?,
            "max_backoff" => q.max_backoff = duration(value, &k)?,
            "retry_on_http_429" => q.retry_on_http_429 = Some(value.boolean(&k)?),
            _ => return Err(unknown(value.line, &k)),
        }
    }
    Ok(q)
}

fn metadata_config(node: &Node, key: &str) -> Result<MetadataConfig, Located> {
    let mut m = MetadataConfig::default();
    for (name, value) in node.entries(key)? {
        let k = join(key, name);
        match name {
            "send" => m.send = value.boolean(&k)?,
            "send_interval" => m.send_interval = duration(value, &k)?,
            "max_samples_per_send" => m.max_samples_per_send = value.signed(&k)?,
            _ => return Err(unknown(value.line, &k)),
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests;
