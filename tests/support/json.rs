//! A small JSON reader for the answers of the receivers' query APIs (Prometheus,
//! VictoriaMetrics): enough of RFC 8259 to walk `data.result[].metric` and `values`.

use std::collections::BTreeMap;

/// A JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number.
    Number(f64),
    /// A string, unescaped.
    Str(String),
    /// An array.
    Array(Vec<Json>),
    /// An object (keys sorted).
    Object(BTreeMap<String, Json>),
}

impl Json {
    /// Parses `text`; panics with the position on malformed input (test helper).
    pub fn parse(text: &str) -> Json {
        let b = text.as_bytes();
        let mut i = 0;
        let v = value(b, &mut i);
        ws(b, &mut i);
        assert_eq!(i, b.len(), "trailing bytes in JSON at {i}: {text}");
        v
    }

    /// `self[key]` of an object, `Null` otherwise.
    pub fn get(&self, key: &str) -> &Json {
        match self {
            Json::Object(m) => m.get(key).unwrap_or(&Json::Null),
            _ => &Json::Null,
        }
    }

    /// The elements of an array (empty otherwise).
    pub fn items(&self) -> &[Json] {
        match self {
            Json::Array(a) => a,
            _ => &[],
        }
    }

    /// The string, if it is one.
    pub fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            _ => "",
        }
    }

    /// An object of strings as a map (a `metric` of a query result).
    pub fn labels(&self) -> BTreeMap<String, String> {
        match self {
            Json::Object(m) => m
                .iter()
                .map(|(k, v)| (k.clone(), v.str().to_owned()))
                .collect(),
            _ => BTreeMap::new(),
        }
    }
}

fn ws(b: &[u8], i: &mut usize) {
    while *i < b.len() && b[*i].is_ascii_whitespace() {
        *i += 1;
    }
}

fn value(b: &[u8], i: &mut usize) -> Json {
    ws(b, i);
    match b.get(*i) {
        Some(b'{') => {
            *i += 1;
            let mut m = BTreeMap::new();
            loop {
                ws(b, i);
                if b.get(*i) == Some(&b'}') {
                    *i += 1;
                    return Json::Object(m);
                }
                let Json::Str(k) = value(b, i) else {
                    panic!("object key at {i}")
                };
                ws(b, i);
                assert_eq!(b.get(*i), Some(&b':'), "':' at {i}");
                *i += 1;
                let v = value(b, i);
                m.insert(k, v);
                ws(b, i);
                if b.get(*i) == Some(&b',') {
                    *i += 1;
                }
            }
        }
        Some(b'[') => {
            *i += 1;
            let mut a = Vec::new();
            loop {
                ws(b, i);
                if b.get(*i) == Some(&b']') {
                    *i += 1;
                    return Json::Array(a);
                }
                a.push(value(b, i));
                ws(b, i);
                if b.get(*i) == Some(&b',') {
                    *i += 1;
                }
            }
        }
        Some(b'"') => {
            *i += 1;
            let mut s = Vec::new();
            while let Some(&c) = b.get(*i) {
                *i += 1;
                match c {
                    b'"' => return Json::Str(String::from_utf8(s).expect("utf-8")),
                    b'\\' => {
                        let e = b[*i];
                        *i += 1;
                        match e {
                            b'n' => s.push(b'\n'),
                            b't' => s.push(b'\t'),
                            b'r' => s.push(b'\r'),
                            b'b' => s.push(8),
                            b'f' => s.push(12),
                            b'u' => {
                                let hex = std::str::from_utf8(&b[*i..*i + 4]).expect("hex");
                                *i += 4;
                                let cp = u32::from_str_radix(hex, 16).expect("hex");
                                let ch = char::from_u32(cp).unwrap_or('\u{fffd}');
                                let mut buf = [0; 4];
                                s.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                            }
                            other => s.push(other),
                        }
                    }
                    _ => s.push(c),
                }
            }
            panic!("unterminated string")
        }
        Some(b't') => {
            *i += 4;
            Json::Bool(true)
        }
        Some(b'f') => {
            *i += 5;
            Json::Bool(false)
        }
        Some(b'n') => {
            *i += 4;
            Json::Null
        }
        Some(_) => {
            let start = *i;
            while *i < b.len() && matches!(b[*i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
                *i += 1;
            }
            let t = std::str::from_utf8(&b[start..*i]).expect("number");
            Json::Number(
                t.parse()
                    .unwrap_or_else(|_| panic!("number {t:?} at {start}")),
            )
        }
        None => panic!("JSON ended early"),
    }
}
