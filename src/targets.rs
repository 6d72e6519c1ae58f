//! Targets: static and file-based target groups, and the labels a target gets before it is
//! scraped (Prometheus' `scrape.PopulateLabels`).
//!
//! What `check config` needs (reading file_sd files, refusing targets Prometheus would
//! refuse) and what the agent builds its targets with. Discovery at run time (polling,
//! kubelet pods) is `crate::discovery`; its groups come here as static ones do.

use std::path::{Path, PathBuf};

use crate::config::relabel::is_valid_label_name;
use crate::config::units::{format_duration, parse_duration};
use crate::config::yaml::{self, Kind, Node};
use crate::config::{ScrapeConfig, TargetGroup};

/// Prometheus' `patFileSDName`: `^[^*]*(\*[^/]*)?\.(json|yml|yaml|JSON|YML|YAML)$`.
pub fn is_valid_file_sd_name(name: &str) -> bool {
    let Some((stem, ext)) = name.rsplit_once('.') else {
        return false;
    };
    if !matches!(ext, "json" | "yml" | "yaml" | "JSON" | "YML" | "YAML") {
        return false;
    }
    match stem.find('*') {
        None => true,
        Some(star) => !stem[star + 1..].contains(['*', '/']),
    }
}

/// Expands a file_sd pattern (`*` and `?` in the last path element, as `filepath.Glob`) into
/// the existing files it names, sorted.
pub fn glob(pattern: &str) -> Result<Vec<PathBuf>, String> {
    let path = Path::new(pattern);
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(Vec::new());
    };
    if !name.contains(['*', '?']) {
        return Ok(if path.exists() {
            vec![path.to_owned()]
        } else {
            Vec::new()
        });
    }
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| wildcard_match(name.as_bytes(), n.as_bytes()))
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    Ok(out)
}

fn wildcard_match(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| wildcard_match(rest, &name[i..])),
        Some((b'?', rest)) => !name.is_empty() && wildcard_match(rest, &name[1..]),
        Some((c, rest)) => name.first() == Some(c) && wildcard_match(rest, &name[1..]),
    }
}

/// Reads a file_sd file: a list of `{targets: [...], labels: {...}}`. `.json` files are read
/// as Go's encoding/json does (strings must be strings, unknown keys ignored); `.yml`/`.yaml`
/// strictly, as yaml.v2's `UnmarshalStrict`.
pub fn read_file_sd(path: &Path) -> Result<Vec<TargetGroup>, String> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let json = match ext.as_str() {
        "json" => true,
        "yml" | "yaml" => false,
        _ => return Err(format!("invalid file extension: \".{ext}\"")),
    };
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let root = yaml::parse(&text).map_err(|e| format!("{}:{}: {}", e.line, e.col, e.reason))?;
    let Some(root) = root else {
        return if json {
            Err("unexpected end of JSON input".to_owned())
        } else {
            Ok(Vec::new())
        };
    };
    let located = |e: yaml::Located| format!("line {}: {}: {}", e.line, e.key, e.reason);
    let mut groups = Vec::new();
    for (i, item) in root.items("").map_err(located)?.iter().enumerate() {
        let key = yaml::index("", i);
        if item.is_null() {
            return Err(format!("nonexistent target group at index {i}"));
        }
        let mut group = TargetGroup {
            targets: Vec::new(),
            labels: Vec::new(),
        };
        for (name, value) in item.entries(&key).map_err(located)? {
            let k = yaml::join(&key, name);
            match name {
                "targets" => {
                    for t in value.items(&k).map_err(located)? {
                        group.targets.push(json_aware_string(t, &k, json)?);
                    }
                }
                "labels" => {
                    for (label, v) in value.entries(&k).map_err(located)? {
                        if !is_valid_label_name(label) {
                            return Err(format!("{label:?} is not a valid label name"));
                        }
                        group
                            .labels
                            .push((label.to_owned(), json_aware_string(v, &k, json)?));
                    }
                    group.labels.sort();
                }
                _ if json => {}
                _ => return Err(format!("line {}: {k}: unknown key", value.line)),
            }
        }
        groups.push(group);
    }
    Ok(groups)
}

fn json_aware_string(node: &Node, key: &str, json: bool) -> Result<String, String> {
    if json && matches!(node.kind, Kind::Scalar { plain: true, .. }) && !node.is_null() {
        return Err(format!("line {}: {key}: expected a JSON string", node.line));
    }
    node.string(key)
        .map_err(|e| format!("line {}: {}: {}", e.line, e.key, e.reason))
}

/// Go's `net.SplitHostPort` success test.
pub fn has_port(addr: &str) -> bool {
    let Some(colon) = addr.rfind(':') else {
        return false;
    };
    let (j, k) = if addr.starts_with('[') {
        let Some(end) = addr.find(']') else {
            return false;
        };
        if end + 1 != colon {
            return false;
        }
        (1, end + 1)
    } else {
        if addr[..colon].contains(':') {
            return false;
        }
        (0, 0)
    };
    !addr[j..].contains('[') && !addr[k..].contains(']')
}

/// The labels of one target before relabeling, in Prometheus' order of precedence: the
/// target's address, then its group's labels, then the scrape config's defaults and params.
pub fn target_labels(
    target: &str,
    group: &TargetGroup,
    sc: &ScrapeConfig,
) -> Vec<(String, String)> {
    let mut labels: Vec<(String, String)> = vec![("__address__".to_owned(), target.to_owned())];
    for (k, v) in &group.labels {
        if k != "__address__" {
            labels.push((k.clone(), v.clone()));
        }
    }
    let defaults = [
        ("job", sc.job_name.clone()),
        ("__scrape_interval__", format_duration(sc.scrape_interval)),
        ("__scrape_timeout__", format_duration(sc.scrape_timeout)),
        ("__metrics_path__", sc.metrics_path.clone()),
        ("__scheme__", sc.scheme.clone()),
    ];
    for (name, value) in defaults {
        match labels.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) if !v.is_empty() => {}
            Some((_, v)) => *v = value,
            None => labels.push((name.to_owned(), value)),
        }
    }
    for (name, values) in &sc.params {
        if let Some(first) = values.first() {
            let name = format!("__param_{name}");
            labels.retain(|(k, _)| *k != name);
            labels.push((name, first.clone()));
        }
    }
    labels.sort();
    labels
}

fn label<'a>(labels: &'a [(String, String)], name: &str) -> &'a str {
    labels
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

/// Refuses a group's targets the way `promtool check config` does (Prometheus'
/// `PopulateLabels`, after `relabel_configs`): no address, an unknown scheme for a port-less address, a URL as an
/// address, or a bad `__scrape_interval__`/`__scrape_timeout__`.
pub fn check_group(group: &TargetGroup, sc: &ScrapeConfig) -> Result<(), String> {
    for target in &group.targets {
        let mut labels = target_labels(target, group, sc);
        if !crate::relabel::process(&mut labels, &sc.relabel_configs) {
            continue;
        }
        check_target(&labels, sc).map_err(|e| format!("target {target:?}: {e}"))?;
    }
    Ok(())
}

fn check_target(labels: &[(String, String)], sc: &ScrapeConfig) -> Result<(), String> {
    let mut addr = label(labels, "__address__").to_owned();
    if addr.is_empty() {
        return Err("no address".to_owned());
    }
    if !has_port(&addr) && has_port(&format!("{addr}:1234")) {
        match label(labels, "__scheme__") {
            "http" | "" => addr.push_str(":80"),
            "https" => addr.push_str(":443"),
            _ => return Err(format!("invalid scheme: {:?}", sc.scheme)),
        }
    }
    if addr.contains('/') {
        return Err(format!("{addr:?} is not a valid hostname"));
    }
    let interval_text = label(labels, "__scrape_interval__");
    let interval =
        parse_duration(interval_text).map_err(|e| format!("error parsing scrape interval: {e}"))?;
    if interval.is_zero() {
        return Err("scrape interval cannot be 0".to_owned());
    }
    let timeout_text = label(labels, "__scrape_timeout__");
    let timeout =
        parse_duration(timeout_text).map_err(|e| format!("error parsing scrape timeout: {e}"))?;
    if timeout.is_zero() {
        return Err("scrape timeout cannot be 0".to_owned());
    }
    if timeout > interval {
        return Err(format!(
            "scrape timeout cannot be greater than scrape interval ({timeout_text:?} > {interval_text:?})"
        ));
    }
    Ok(())
}

/// One target ready to scrape: Prometheus' `Target` after `PopulateLabels`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The labels every series of the target gets (no `__` labels), sorted by name.
    pub labels: Vec<(String, String)>,
    /// `host:port` to connect to (a default port added as Prometheus adds it).
    pub address: String,
    /// `http` or `https`.
    pub scheme: String,
    /// Path and query string, escaped, e.g. `/metrics?module=x`.
    pub path_and_query: String,
    /// Scrape interval (from `__scrape_interval__`).
    pub interval: std::time::Duration,
    /// Scrape timeout (from `__scrape_timeout__`).
    pub timeout: std::time::Duration,
}

impl Target {
    /// A stable 64-bit identity: labels and URL (Prometheus' `Target.hash`), FNV-1a.
    pub fn key(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes.iter().chain(&[0xff]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        for (k, v) in &self.labels {
            eat(k.as_bytes());
            eat(v.as_bytes());
        }
        eat(self.scheme.as_bytes());
        eat(self.address.as_bytes());
        eat(self.path_and_query.as_bytes());
        h
    }

    /// The URL, for logs and messages.
    pub fn url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.address, self.path_and_query)
    }
}

/// Go's `url.QueryEscape`: unreserved bytes kept, space as `+`, the rest `%XX`.
pub(crate) fn query_escape(s: &str, out: &mut String) {
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
}

/// A path as Go's `URL.EscapedPath` writes it: bytes a path may hold kept, others `%XX`.
fn path_escape(s: &str, out: &mut String) {
    for b in s.bytes() {
        match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'~'
            | b'/'
            | b'$'
            | b'&'
            | b'+'
            | b','
            | b';'
            | b'='
            | b':'
            | b'@'
            | b'!'
            | b'*'
            | b'\''
            | b'('
            | b')' => out.push(char::from(b)),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
}

/// The scrape targets of one scrape config's static groups, as Prometheus 2.42 builds them
/// (`TargetsFromGroup`): labels, `relabel_configs`, default port, `instance`, interval and
/// timeout from their labels, URL with `__param_*`. Targets a rule drops are left out;
/// targets Prometheus would refuse come back as errors (it logs them and goes on). Duplicates
/// (same labels and URL) are kept once.
pub fn build(groups: &[TargetGroup], sc: &ScrapeConfig) -> (Vec<Target>, Vec<String>) {
    let mut targets: Vec<Target> = Vec::new();
    let mut errors = Vec::new();
    for group in groups {
        for address in &group.targets {
            let mut labels = target_labels(address, group, sc);
            if !crate::relabel::process(&mut labels, &sc.relabel_configs) || labels.is_empty() {
                continue;
            }
            match populate(labels, sc) {
                Ok(t) => {
                    if !targets.iter().any(|o| o.key() == t.key() && *o == t) {
                        targets.push(t);
                    }
                }
                Err(e) => errors.push(format!("job {:?}: target {address:?}: {e}", sc.job_name)),
            }
        }
    }
    (targets, errors)
}

/// Prometheus' `PopulateLabels` after relabeling, then the target's URL.
fn populate(mut labels: Vec<(String, String)>, sc: &ScrapeConfig) -> Result<Target, String> {
    check_target(&labels, sc)?;
    let mut address = label(&labels, "__address__").to_owned();
    let scheme = label(&labels, "__scheme__").to_owned();
    if !has_port(&address) && has_port(&format!("{address}:1234")) {
        address.push_str(if scheme == "https" { ":443" } else { ":80" });
    }
    let interval = parse_duration(label(&labels, "__scrape_interval__"))?;
    let timeout = parse_duration(label(&labels, "__scrape_timeout__"))?;
    let mut path_and_query = String::new();
    path_escape(label(&labels, "__metrics_path__"), &mut path_and_query);
    let mut params: Vec<(String, Vec<String>)> = sc.params.clone();
    for (k, v) in &labels {
        if let Some(name) = k.strip_prefix("__param_") {
            match params.iter_mut().find(|(n, _)| n == name) {
                Some((_, values)) if !values.is_empty() => values[0] = v.clone(),
                Some((_, values)) => values.push(v.clone()),
                None => params.push((name.to_owned(), vec![v.clone()])),
            }
        }
    }
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let mut first = true;
    for (name, values) in &params {
        for v in values {
            path_and_query.push(if first { '?' } else { '&' });
            first = false;
            query_escape(name, &mut path_and_query);
            path_and_query.push('=');
            query_escape(v, &mut path_and_query);
        }
    }
    if label(&labels, "instance").is_empty() {
        labels.retain(|(k, _)| k != "instance");
        labels.push(("instance".to_owned(), address.clone()));
    }
    labels.retain(|(k, v)| !k.starts_with("__") && !v.is_empty());
    labels.sort();
    Ok(Target {
        labels,
        address,
        scheme,
        path_and_query,
        interval,
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape_config(yaml: &str) -> ScrapeConfig {
        let text = format!("scrape_configs:\n{yaml}");
        let c = crate::config::Config::parse(&text, Path::new("t.yml"), Path::new("."))
            .expect("valid config");
        c.scrape_configs.into_iter().next().expect("one job")
    }

    #[test]
    fn targets_are_built_as_prometheus_populates_them() {
        let sc = scrape_config(
            "  - job_name: j\n    params: {b: [\"x y\", z], a: [\"1\"]}\n    static_configs:\n      - targets: [h1, \"h2:9100\"]\n        labels: {__param_a: two, __param_c: three, team: t}\n    relabel_configs:\n      - {source_labels: [__address__], regex: h2.*, target_label: __scrape_interval__, replacement: 30s}\n      - {source_labels: [__address__], regex: h1, target_label: __metrics_path__, replacement: /m e}\n",
        );
        let (targets, errors) = build(&sc.static_configs, &sc);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(targets.len(), 2);
        // The config's params win over a group's `__param_` label (PopulateLabels sets them
        // after the group labels); a group's own `__param_` name is added.
        let t1 = &targets[0];
        assert_eq!(t1.address, "h1:80");
        assert_eq!(t1.path_and_query, "/m%20e?a=1&b=x+y&b=z&c=three");
        assert_eq!(
            t1.labels,
            vec![
                ("instance".to_owned(), "h1:80".to_owned()),
                ("job".to_owned(), "j".to_owned()),
                ("team".to_owned(), "t".to_owned()),
            ]
        );
        let t2 = &targets[1];
        assert_eq!(t2.interval, std::time::Duration::from_secs(30));
        assert_eq!(t2.path_and_query, "/metrics?a=1&b=x+y&b=z&c=three");
        assert_ne!(t1.key(), t2.key());
    }

    #[test]
    fn dropped_refused_and_duplicate_targets() {
        let sc = scrape_config(
            "  - job_name: j\n    static_configs:\n      - targets: [a:1, a:1, drop:1, \"x/y\"]\n    relabel_configs:\n      - {source_labels: [__address__], regex: drop.*, action: drop}\n",
        );
        let (targets, errors) = build(&sc.static_configs, &sc);
        assert_eq!(targets.len(), 1, "{targets:?}");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("x/y"), "{errors:?}");
    }

    #[test]
    fn file_sd_names_follow_prometheus_pattern() {
        for ok in ["a.json", "dir/*.yml", "/abs/x*.YAML", "t.yaml"] {
            assert!(is_valid_file_sd_name(ok), "{ok}");
        }
        for bad in ["a.txt", "*/a.json", "a*b*.json", "json", "a.Json"] {
            assert!(!is_valid_file_sd_name(bad), "{bad}");
        }
    }

    #[test]
    fn split_host_port_like_go() {
        for ok in ["a:1", "[::1]:9100", "a:", "127.0.0.1:9100"] {
            assert!(has_port(ok), "{ok}");
        }
        for bad in ["a", "a:b:c", "::1", "[::1]", "[::1]x:1"] {
            assert!(!has_port(bad), "{bad}");
        }
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match(b"*.json", b"a.json"));
        assert!(wildcard_match(b"t?.yml", b"t1.yml"));
        assert!(!wildcard_match(b"*.json", b"a.yml"));
    }
}
