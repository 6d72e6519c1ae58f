//! Which parser a response gets: its `Content-Type` read the way Prometheus 2.42 reads it
//! (`textparse.New` over Go's `mime.ParseMediaType`), and the `Accept` header a scrape sends.

/// The `Accept` header of a Prometheus 2.42 scrape: OpenMetrics 1.0.0 preferred, then
/// OpenMetrics 0.0.1, then the text format 0.0.4, then anything.
pub const ACCEPT_HEADER: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// The exposition format of a scrape response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format 0.0.4: no `Content-Type`, an unknown one, or one Go's
    /// `mime.ParseMediaType` refuses.
    Text,
    /// `application/openmetrics-text` (any version, any parameters).
    OpenMetrics,
    /// `application/vnd.google.protobuf`: Prometheus 2.42 decodes it; promlet never asks for
    /// it (see [`ACCEPT_HEADER`]) and fails such a scrape with a clear reason.
    Protobuf,
}

impl Format {
    /// The format for a response's `Content-Type` value (`None`: no such header).
    /// Allocation-free: it runs on every scrape.
    ///
    /// Prometheus 2.42 takes the media type before the first `;`, lower-cased and trimmed;
    /// when Go's `mime.ParseMediaType` refuses the value (a malformed type or parameter, a
    /// parameter given twice) it falls back to the text format.
    pub fn from_content_type(value: Option<&[u8]>) -> Format {
        let Some(value) = value.and_then(|v| std::str::from_utf8(v).ok()) else {
            // Go reads header bytes as they are; a type that is not UTF-8 is no known type.
            return Format::Text;
        };
        let base = value.split(';').next().unwrap_or("");
        // Go lower-cases with Unicode rules before comparing; both known types are ASCII
        // without a `k` (the one ASCII letter a non-ASCII capital, the Kelvin sign, lowers
        // to), so an ASCII case-insensitive match decides the same.
        let media_type = base.trim();
        let format = if media_type.eq_ignore_ascii_case("application/openmetrics-text") {
            Format::OpenMetrics
        } else if media_type.eq_ignore_ascii_case("application/vnd.google.protobuf") {
            Format::Protobuf
        } else {
            return Format::Text;
        };
        if params_valid(&value[base.len()..]) {
            format
        } else {
            Format::Text
        }
    }
}

/// Go's `mime.isTokenChar`.
fn is_token_char(c: char) -> bool {
    c.is_ascii() && c > ' ' && !" ()<>@,;:\\\"/[]?=".contains(c)
}

/// Go's `mime.isTSpecial`.
fn is_tspecial(c: char) -> bool {
    "()<>@,;:\\\"/[]?=".contains(c)
}

/// Go's `consumeToken`: the leading run of token characters and the rest.
fn consume_token(v: &str) -> (&str, &str) {
    let end = v.find(|c| !is_token_char(c)).unwrap_or(v.len());
    v.split_at(end)
}

/// Go's `consumeValue`: a token or a quoted string (a backslash escapes only a tspecial; CR
/// or LF inside quotes, or no closing quote, is no value). Returns whether the value is
/// non-empty, and the rest.
fn consume_value(v: &str) -> Option<(bool, &str)> {
    if !v.starts_with('"') {
        let (token, rest) = consume_token(v);
        return Some((!token.is_empty(), rest));
    }
    let mut chars = v.char_indices().skip(1).peekable();
    let mut nonempty = false;
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((nonempty, &v[i + 1..])),
            '\\' if chars.peek().is_some_and(|&(_, n)| is_tspecial(n)) => {
                chars.next();
            }
            '\r' | '\n' => return None,
            _ => {}
        }
        nonempty = true;
    }
    None
}

fn trim_left_space(v: &str) -> &str {
    v.trim_start_matches(char::is_whitespace)
}

/// Go's `consumeMediaParam`: `; key = value`; the key and the rest, `None` if `v` does not
/// start with one.
fn consume_param(v: &str) -> Option<(&str, &str)> {
    let rest = trim_left_space(v).strip_prefix(';')?;
    let (key, rest) = consume_token(trim_left_space(rest));
    if key.is_empty() {
        return None;
    }
    let rest = trim_left_space(rest).strip_prefix('=')?;
    let rest = trim_left_space(rest);
    let (nonempty, after) = consume_value(rest)?;
    if !nonempty && after.len() == rest.len() {
        return None;
    }
    Some((key, after))
}

/// Whether Go's `mime.ParseMediaType` accepts the parameters after the media type.
fn params_valid(params: &str) -> bool {
    let mut v = params;
    loop {
        v = trim_left_space(v);
        if v.is_empty() {
            return true;
        }
        match consume_param(v) {
            Some((key, rest)) => {
                // A parameter twice is an error, even with equal values (the Go that builds
                // Debian's 2.42; newer Go allows equal repeats). Keys are ASCII tokens.
                let mut earlier = params;
                while earlier.len() > v.len() {
                    let Some((k, r)) = consume_param(trim_left_space(earlier)) else {
                        break;
                    };
                    if k.eq_ignore_ascii_case(key) {
                        return false;
                    }
                    earlier = r;
                }
                v = rest;
            }
            // Trailing semicolons are allowed; anything else is an invalid parameter.
            None => return v.trim() == ";",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_pick_the_format_prometheus_picks() {
        let cases: &[(Option<&str>, Format)] = &[
            (None, Format::Text),
            (Some(""), Format::Text),
            (
                Some("text/plain; version=0.0.4; charset=utf-8"),
                Format::Text,
            ),
            (Some("application/openmetrics-text"), Format::OpenMetrics),
            (
                Some("application/openmetrics-text; version=1.0.0; charset=utf-8"),
                Format::OpenMetrics,
            ),
            (
                Some("Application/OpenMetrics-Text;version=0.0.1"),
                Format::OpenMetrics,
            ),
            (Some("application/openmetrics-text;"), Format::OpenMetrics),
            (
                Some("application/openmetrics-text;version=\"1.0.0\""),
                Format::OpenMetrics,
            ),
            (Some("application/openmetrics-text; a=1; a=1"), Format::Text),
            (Some("application/openmetrics-text; version"), Format::Text),
            (Some("application/openmetrics-text; a=1; A=2"), Format::Text),
            (Some("application/openmetrics-text;;"), Format::Text),
            (Some("application/openmetrics-text; v=\"1"), Format::Text),
            (Some("application/openmetrics-text/x"), Format::Text),
            (
                Some("application/openmetrics-text, text/plain"),
                Format::Text,
            ),
            (
                Some("application/vnd.google.protobuf; proto=x"),
                Format::Protobuf,
            ),
            (Some("application/json"), Format::Text),
        ];
        for (ct, want) in cases {
            assert_eq!(
                Format::from_content_type(ct.map(str::as_bytes)),
                *want,
                "{ct:?}"
            );
        }
    }
}
