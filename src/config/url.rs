//! URLs accepted and refused exactly as Go's `net/url.Parse` does, since Prometheus takes
//! `remote_write.url` and `proxy_url` through it: the config must load (or fail) the same way.
//!
//! Go's parser is lenient (`not a url` is a valid relative URL) but refuses control characters,
//! a leading `:`, a bad port, bad `%` escapes and characters a host cannot hold. The WHATWG
//! `url` crate decides differently on all of those, which is why this is our own small parser.

/// A parsed URL: the parts promlet uses later (the sender needs scheme, host and the rest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// The text as written in the config.
    pub text: String,
    /// Lowercased scheme, "" if none.
    pub scheme: String,
    /// `host[:port]` without userinfo, "" if none.
    pub host: String,
    /// True when the URL carries `user[:password]@` (never logged).
    pub has_userinfo: bool,
}

/// Parses `text` with Go's `net/url.Parse` rules. The error is Go's reason, lowercase.
pub fn parse(text: &str) -> Result<Url, String> {
    if text.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err("net/url: invalid control character in URL".to_owned());
    }
    let (without_fragment, fragment) = match text.split_once('#') {
        Some((u, f)) => (u, Some(f)),
        None => (text, None),
    };
    let (scheme, rest) = scheme_of(without_fragment)?;
    let rest = match rest.split_once('?') {
        Some((r, _query)) => r,
        None => rest,
    };
    let mut url = Url {
        text: text.to_owned(),
        scheme: scheme.to_ascii_lowercase(),
        host: String::new(),
        has_userinfo: false,
    };
    if !rest.starts_with('/') {
        if !scheme.is_empty() {
            // An opaque URL such as `mailto:x`; Go accepts it as is.
            return check_escapes(fragment.unwrap_or(""), Mode::Other).map(|()| url);
        }
        let segment = rest.split('/').next().unwrap_or("");
        if segment.contains(':') {
            return Err("first path segment in URL cannot contain colon".to_owned());
        }
    }
    let mut path = rest;
    if let Some(after) = rest.strip_prefix("//") {
        if !scheme.is_empty() || !rest.starts_with("///") {
            let (authority, p) = match after.find('/') {
                Some(i) => after.split_at(i),
                None => (after, ""),
            };
            path = p;
            let host = match authority.rfind('@') {
                Some(i) => {
                    let userinfo = &authority[..i];
                    if !userinfo.bytes().all(valid_userinfo_byte) {
                        return Err("net/url: invalid userinfo".to_owned());
                    }
                    check_escapes(userinfo, Mode::Other)?;
                    url.has_userinfo = true;
                    &authority[i + 1..]
                }
                None => authority,
            };
            check_host(host)?;
            url.host = host.to_owned();
        }
    }
    check_escapes(path, Mode::Other)?;
    check_escapes(fragment.unwrap_or(""), Mode::Other)?;
    Ok(url)
}

fn scheme_of(text: &str) -> Result<(&str, &str), String> {
    for (i, c) in text.bytes().enumerate() {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' => {
                if i == 0 {
                    return Ok(("", text));
                }
            }
            b':' => {
                if i == 0 {
                    return Err("missing protocol scheme".to_owned());
                }
                return Ok((&text[..i], &text[i + 1..]));
            }
            _ => return Ok(("", text)),
        }
    }
    Ok(("", text))
}

fn valid_userinfo_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._:~!$&'()*+,;=%@".contains(&b)
}

fn valid_optional_port(port: &str) -> bool {
    match port.strip_prefix(':') {
        None => port.is_empty(),
        Some(digits) => digits.bytes().all(|b| b.is_ascii_digit()),
    }
}

fn check_host(host: &str) -> Result<(), String> {
    if host.starts_with('[') {
        let Some(close) = host.rfind(']') else {
            return Err("missing ']' in host".to_owned());
        };
        let port = &host[close + 1..];
        if !valid_optional_port(port) {
            return Err(format!("invalid port {port:?} after host"));
        }
        // Inside brackets: an IPv6 literal, optionally with a %25-escaped zone.
        return check_escapes(&host[1..close], Mode::Zone);
    }
    if let Some(i) = host.rfind(':') {
        let port = &host[i..];
        if !valid_optional_port(port) {
            return Err(format!("invalid port {port:?} after host"));
        }
    }
    check_escapes(host, Mode::Host)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Host,
    Zone,
    Other,
}

/// Go's `unescape` validity checks: every `%` starts two hex digits, and a host holds only the
/// characters `shouldEscape(c, encodeHost)` lets through.
fn check_escapes(s: &str, mode: Mode) -> Result<(), String> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let valid = i + 2 < b.len() + 1
                && b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !valid {
                let end = (i + 3).min(b.len());
                return Err(format!("invalid URL escape {:?}", &s[i..end]));
            }
            if mode == Mode::Host && &s[i..i + 3] != "%25" {
                // Go: in a host, only %25 (or an escape of a byte >= 0x80) is allowed.
                let hi = char::from(b[i + 1]).to_digit(16).unwrap_or(0);
                if hi < 8 {
                    return Err(format!("invalid URL escape {:?}", &s[i..i + 3]));
                }
            }
            i += 3;
            continue;
        }
        if mode != Mode::Other && b[i] < 0x80 && !host_byte_allowed(b[i]) {
            return Err(format!(
                "invalid character {:?} in host name",
                char::from(b[i]).to_string()
            ));
        }
        i += 1;
    }
    Ok(())
}

fn host_byte_allowed(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-_.~!$&'()*+,;=:[]<>\"".contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_go_accepts() {
        for ok in [
            "http://127.0.0.1:9090/api/v1/write",
            "https://user:pass@thanos.example:19291/api/v1/receive?x=1#f",
            "not a url",
            "ftp://x",
            "mailto:ops",
            "http://[::1]:9090/write",
            "",
            "/relative/path",
            "http://host:/path",
        ] {
            assert!(parse(ok).is_ok(), "{ok:?}: {:?}", parse(ok));
        }
    }

    #[test]
    fn refuses_what_go_refuses_with_its_reason() {
        let cases = [
            (":bad", "missing protocol scheme"),
            ("http://host:port/x", "invalid port \":port\" after host"),
            ("http://a b/", "invalid character \" \" in host name"),
            ("http://[::1/", "missing ']' in host"),
            ("http://h/%zz", "invalid URL escape \"%zz\""),
            ("a:b/c:d", "invalid port \":d\" after host"),
            ("x:y/z", "first path segment in URL cannot contain colon"),
            (
                "http://h/\u{1}",
                "net/url: invalid control character in URL",
            ),
            ("http://us{er@h/", "net/url: invalid userinfo"),
        ];
        for (text, reason) in cases {
            if text == "a:b/c:d" || text == "x:y/z" {
                // These two are opaque URLs with a scheme: Go accepts them.
                assert!(parse(text).is_ok(), "{text}");
                continue;
            }
            assert_eq!(parse(text), Err(reason.to_owned()), "{text}");
        }
        assert_eq!(
            parse("y/z:w"),
            Ok(Url {
                text: "y/z:w".to_owned(),
                scheme: String::new(),
                host: String::new(),
                has_userinfo: false
            })
        );
        assert_eq!(
            parse("1x:z"),
            Err("first path segment in URL cannot contain colon".to_owned())
        );
    }

    #[test]
    fn keeps_scheme_and_host() {
        let u = parse("HTTPS://u:p@Recv:443/api").expect("valid");
        assert_eq!(u.scheme, "https");
        assert_eq!(u.host, "Recv:443");
        assert!(u.has_userinfo);
    }
}
