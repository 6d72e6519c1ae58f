//! The HTTP client keys shared by scrape configs and remote_write entries (Prometheus'
//! `common/config.HTTPClientConfig`, as built into Debian's 2.42): authentication, TLS, proxy.

use std::path::Path;

use super::url::{self, Url};
use super::yaml::{join, Located, Node};

/// How requests authenticate. At most one is configured (Prometheus' `Validate` rules).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Auth {
    /// No authentication.
    #[default]
    None,
    /// `authorization` (or `bearer_token`/`bearer_token_file`, which become `Bearer`).
    Authorization {
        /// The scheme, `Bearer` unless set.
        kind: String,
        /// The credentials: inline, or a file read on every request.
        credentials: Secret,
    },
    /// `basic_auth`.
    Basic {
        /// The user name.
        username: String,
        /// The password: inline, or a file read on every request.
        password: Secret,
    },
}

/// A secret given inline or as a file path (resolved against the config file's directory).
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Secret {
    /// Not set.
    #[default]
    Empty,
    /// Given in the config; never logged.
    Inline(String),
    /// A file re-read on every request (service-account tokens rotate).
    File(String),
}

impl std::fmt::Debug for Secret {
    // Secrets never reach a log: Debug shows the shape, not the value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Empty => f.write_str("Empty"),
            Secret::Inline(_) => f.write_str("Inline(<secret>)"),
            Secret::File(path) => write!(f, "File({path:?})"),
        }
    }
}

/// The lowest or highest TLS version allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.0.
    Tls10,
    /// TLS 1.1.
    Tls11,
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

/// `tls_config`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsConfig {
    /// CA bundle path; "" means the built-in roots.
    pub ca_file: String,
    /// Client certificate path.
    pub cert_file: String,
    /// Client key path.
    pub key_file: String,
    /// Name to verify the server certificate against.
    pub server_name: String,
    /// Skip server certificate verification.
    pub insecure_skip_verify: bool,
    /// Lowest TLS version; `None` is the library default. TLS10/TLS11 are accepted and mean
    /// TLS 1.2, the lowest rustls speaks.
    pub min_version: Option<TlsVersion>,
    /// Highest TLS version; `None` is the library default.
    pub max_version: Option<TlsVersion>,
}

/// The HTTP client settings of one scrape config or remote_write entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpClientConfig {
    /// How requests authenticate.
    pub auth: Auth,
    /// TLS settings.
    pub tls_config: TlsConfig,
    /// `proxy_url`, if set.
    pub proxy_url: Option<Url>,
    /// Follow HTTP 3xx redirects (default true).
    pub follow_redirects: bool,
    /// Accepted for compatibility; promlet speaks HTTP/1.1 only (default true).
    pub enable_http2: bool,
}

impl Default for HttpClientConfig {
    fn default() -> Self {
        HttpClientConfig {
            auth: Auth::None,
            tls_config: TlsConfig::default(),
            proxy_url: None,
            follow_redirects: true,
            enable_http2: true,
        }
    }
}

/// The raw auth keys as written, before Prometheus' `Validate` combines them.
#[derive(Default)]
pub struct HttpKeys {
    basic_auth: Option<(String, String, String, u32)>,
    authorization: Option<(String, String, String, u32)>,
    bearer_token: String,
    bearer_token_file: String,
    first_line: u32,
    config: HttpClientConfig,
}

impl std::fmt::Debug for HttpKeys {
    // Holds inline secrets: show nothing but the line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpKeys")
            .field("first_line", &self.first_line)
            .finish_non_exhaustive()
    }
}

impl HttpKeys {
    /// Starts collecting the keys of the mapping that begins at `line`.
    pub fn new(line: u32) -> Self {
        HttpKeys {
            first_line: line,
            ..HttpKeys::default()
        }
    }

    /// Takes `name: value` if it is an HTTP client key; `Ok(false)` if it is not one.
    pub fn take(&mut self, name: &str, value: &Node, key: &str) -> Result<bool, Located> {
        let k = join(key, name);
        match name {
            "basic_auth" => {
                let (mut user, mut pass, mut pass_file) = (String::new(), String::new(), String::new());
                for (n, v) in value.entries(&k)? {
                    let kk = join(&k, n);
                    match n {
                        "username" => user = v.string(&kk)?,
                        "password" => pass = v.string(&kk)?,
                        "password_file" => pass_file = v.string(&kk)?,
                        _ => return Err(unknown(v.line, &kk)),
                    }
                }
                // A null `basic_auth:` leaves the pointer nil in Go.
                if !value.is_null() {
                    self.basic_auth = Some((user, pass, pass_file, value.line));
                }
            }
            "authorization" => {
                let (mut kind, mut cred, mut cred_file) = (String::new(), String::new(), String::new());
                for (n, v) in value.entries(&k)? {
                    let kk = join(&k, n);
                    match n {
                        "type" => kind = v.string(&kk)?,
                        "credentials" => cred = v.string(&kk)?,
                        "credentials_file" => cred_file = v.string(&kk)?,
                        _ => return Err(unknown(v.line, &kk)),
                    }
                }
                if !value.is_null() {
                    self.authorization = Some((kind, cred, cred_file, value.line));
                }
            }
            "bearer_token" => self.bearer_token = value.string(&k)?,
            "bearer_token_file" => self.bearer_token_file = value.string(&k)?,
            "tls_config" => self.config.tls_config = tls_config(value, &k)?,
            "proxy_url" => {
                let text = value.string(&k)?;
                let parsed = url::parse(&text).map_err(|e| Located::new(value.line, &k, e))?;
                self.config.proxy_url = if value.is_null() { None } else { Some(parsed) };
            }
            "follow_redirects" => self.config.follow_redirects = value.boolean(&k)?,
            "enable_http2" => self.config.enable_http2 = value.boolean(&k)?,
            "oauth2" | "proxy_connect_header" => {
                return Err(Located::new(
                    value.line,
                    &k,
                    "not supported by promlet (Prometheus accepts it; promlet refuses rather than ignore it)",
                ))
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Applies Prometheus' `HTTPClientConfig.Validate`: at most one way to authenticate;
    /// `bearer_token(_file)` become an `Authorization: Bearer`.
    pub fn finish(self, key: &str) -> Result<HttpClientConfig, Located> {
        let line = self.first_line;
        let err = |reason: &str| Located::new(line, key, reason);
        let mut config = self.config;
        let has_bearer = !self.bearer_token.is_empty() || !self.bearer_token_file.is_empty();
        if !self.bearer_token.is_empty() && !self.bearer_token_file.is_empty() {
            return Err(err(
                "at most one of bearer_token & bearer_token_file must be configured",
            ));
        }
        if self.basic_auth.is_some() && has_bearer {
            return Err(err(
                "at most one of basic_auth, oauth2, bearer_token & bearer_token_file must be configured",
            ));
        }
        if let Some((_, pass, pass_file, l)) = &self.basic_auth {
            if !pass.is_empty() && !pass_file.is_empty() {
                return Err(Located::new(
                    *l,
                    &join(key, "basic_auth"),
                    "at most one of basic_auth password & password_file must be configured",
                ));
            }
        }
        if let Some((kind, cred, cred_file, l)) = self.authorization {
            let k = join(key, "authorization");
            if has_bearer {
                return Err(Located::new(
                    l,
                    &k,
                    "authorization is not compatible with bearer_token & bearer_token_file",
                ));
            }
            if !cred.is_empty() && !cred_file.is_empty() {
                return Err(Located::new(
                    l,
                    &k,
                    "at most one of authorization credentials & credentials_file must be configured",
                ));
            }
            let mut kind = kind.trim().to_owned();
            if kind.is_empty() {
                "Bearer".clone_into(&mut kind);
            }
            if kind.eq_ignore_ascii_case("basic") {
                return Err(Located::new(
                    l,
                    &k,
                    "authorization type cannot be set to \"basic\", use \"basic_auth\" instead",
                ));
            }
            if self.basic_auth.is_some() {
                return Err(Located::new(
                    l,
                    &k,
                    "at most one of basic_auth, oauth2 & authorization must be configured",
                ));
            }
            config.auth = Auth::Authorization {
                kind,
                credentials: secret(cred, cred_file),
            };
        } else if has_bearer {
            config.auth = Auth::Authorization {
                kind: "Bearer".to_owned(),
                credentials: secret(self.bearer_token, self.bearer_token_file),
            };
        } else if let Some((username, pass, pass_file, _)) = self.basic_auth {
            config.auth = Auth::Basic {
                username,
                password: secret(pass, pass_file),
            };
        }
        Ok(config)
    }
}

fn secret(inline: String, file: String) -> Secret {
    if !file.is_empty() {
        Secret::File(file)
    } else if !inline.is_empty() {
        Secret::Inline(inline)
    } else {
        Secret::Empty
    }
}

/// The error for a key Prometheus does not know either.
pub fn unknown(line: u32, key: &str) -> Located {
    Located::new(line, key, "unknown key")
}

fn tls_version(value: &Node, key: &str) -> Result<Option<TlsVersion>, Located> {
    let text = value.string(key)?;
    Ok(Some(match text.as_str() {
        "" => return Ok(None),
        "TLS10" => TlsVersion::Tls10,
        "TLS11" => TlsVersion::Tls11,
        "TLS12" => TlsVersion::Tls12,
        "TLS13" => TlsVersion::Tls13,
        other => {
            return Err(Located::new(
                value.line,
                key,
                format!("unknown TLS version: {other}"),
            ))
        }
    }))
}

fn tls_config(node: &Node, key: &str) -> Result<TlsConfig, Located> {
    let mut tls = TlsConfig::default();
    for (name, value) in node.entries(key)? {
        let k = join(key, name);
        match name {
            "ca_file" => tls.ca_file = value.string(&k)?,
            "cert_file" => tls.cert_file = value.string(&k)?,
            "key_file" => tls.key_file = value.string(&k)?,
            "server_name" => tls.server_name = value.string(&k)?,
            "insecure_skip_verify" => tls.insecure_skip_verify = value.boolean(&k)?,
            "min_version" => tls.min_version = tls_version(value, &k)?,
            "max_version" => {
                tls.max_version = tls_version(value, &k)?;
                if tls.max_version.is_some_and(|v| v < TlsVersion::Tls12) {
                    return Err(Located::new(
                        value.line,
                        &k,
                        "not supported by promlet: it speaks TLS 1.2 and 1.3 only (rustls)",
                    ));
                }
            }
            _ => return Err(unknown(value.line, &k)),
        }
    }
    Ok(tls)
}

fn resolve(dir: &Path, path: &mut String) {
    if !path.is_empty() && Path::new(path.as_str()).is_relative() {
        *path = dir.join(path.as_str()).to_string_lossy().into_owned();
    }
}

impl HttpClientConfig {
    /// Makes every file path absolute against `dir`, the config file's directory, as
    /// Prometheus' `SetDirectory` does.
    pub fn set_directory(&mut self, dir: &Path) {
        resolve(dir, &mut self.tls_config.ca_file);
        resolve(dir, &mut self.tls_config.cert_file);
        resolve(dir, &mut self.tls_config.key_file);
        match &mut self.auth {
            Auth::Authorization {
                credentials: Secret::File(path),
                ..
            }
            | Auth::Basic {
                password: Secret::File(path),
                ..
            } => resolve(dir, path),
            _ => {}
        }
    }
}
