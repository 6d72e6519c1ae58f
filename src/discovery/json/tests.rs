//! The tokenizer against tables (tokens, escapes, numbers, errors with exact messages), at
//! every split point of small documents and one byte at a time, and on nesting far deeper
//! than the stack could recurse.

use super::*;

/// A token as text: `{ } [ ]`, `k:<key>`, `s:<string>` (both unescaped), `n:<number>`,
/// `true`, `false`, `null`.
fn show(t: Token<'_>) -> String {
    let unescaped = |s: Str<'_>| {
        let mut out = String::new();
        s.unescape_into(&mut out);
        out
    };
    match t {
        Token::BeginObject => "{".to_owned(),
        Token::EndObject => "}".to_owned(),
        Token::BeginArray => "[".to_owned(),
        Token::EndArray => "]".to_owned(),
        Token::Key(s) => format!("k:{}", unescaped(s)),
        Token::String(s) => format!("s:{}", unescaped(s)),
        Token::Number(n) => format!("n:{n}"),
        Token::Bool(b) => b.to_string(),
        Token::Null => "null".to_owned(),
    }
}

/// Every token of `doc`, given whole.
fn tokens(doc: &[u8]) -> Result<Vec<String>, JsonError> {
    chunked(doc, &[doc.len()])
}

/// Every token of `doc`, fed as a window that grows by the given chunk lengths (the rest at
/// the end), as the body fills it: the window keeps what the lexer did not use.
fn chunked(doc: &[u8], chunks: &[usize]) -> Result<Vec<String>, JsonError> {
    let mut lexer = Lexer::new();
    let mut window: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut chunks = chunks.iter();
    let mut out = Vec::new();
    loop {
        let eof = fed == doc.len();
        match lexer.next(&window, eof)? {
            Step::Token(t, used) => {
                out.push(show(t));
                window.drain(..used);
            }
            Step::NeedMore(used) => {
                assert!(!eof, "asked for more at the end");
                window.drain(..used);
                let n = chunks
                    .next()
                    .map_or(doc.len() - fed, |&n| n.min(doc.len() - fed));
                window.extend_from_slice(&doc[fed..fed + n]);
                fed += n;
            }
            Step::End => {
                assert!(eof, "ended before the end");
                assert_eq!(lexer.offset(), doc.len() as u64);
                return Ok(out);
            }
        }
    }
}

fn err(doc: &[u8]) -> String {
    tokens(doc).expect_err("malformed").to_string()
}

#[test]
fn tokens_of_every_kind() {
    let doc = br#" {"a": [1, -2.5e3, true, false, null, "x", {}, []], "b" : {"c":"d"} } "#;
    let want = [
        "{", "k:a", "[", "n:1", "n:-2.5e3", "true", "false", "null", "s:x", "{", "}", "[", "]",
        "]", "k:b", "{", "k:c", "s:d", "}", "}",
    ];
    assert_eq!(tokens(doc).expect("valid"), want);
    for scalar in ["1", "\"s\"", "true", "null", "-0"] {
        assert_eq!(
            tokens(scalar.as_bytes()).expect(scalar).len(),
            1,
            "{scalar}"
        );
    }
}

#[test]
fn escapes_and_surrogates() {
    for (raw, want) in [
        (r#""plain""#, "plain"),
        (r#""\"\\\/\b\f\n\r\t""#, "\"\\/\u{8}\u{c}\n\r\t"),
        (r#""caf\u00e9 \u00E9""#, "café é"),
        (r#""\u0000""#, "\0"),
        (r#""a\uD83D\uDE00b""#, "a😀b"),
        (r#""\uDBFF\uDFFF""#, "\u{10FFFF}"),
        // Lone surrogates become U+FFFD, as Go's decoder makes them.
        (r#""\uD83D""#, "\u{FFFD}"),
        (r#""\uD83Dx""#, "\u{FFFD}x"),
        (r#""\uD83D\u0041""#, "\u{FFFD}A"),
        (r#""\uDE00\uD83D""#, "\u{FFFD}\u{FFFD}"),
        (r#""\uD83D\uD83D\uDE00""#, "\u{FFFD}😀"),
        ("\"ünïcödé ✓\"", "ünïcödé ✓"),
    ] {
        assert_eq!(
            tokens(raw.as_bytes()).expect(raw),
            [format!("s:{want}")],
            "{raw}"
        );
    }
    // `text` borrows the raw text when there is nothing to resolve.
    let mut scratch = String::from("old");
    let s = Str {
        raw: "no escapes",
        escaped: false,
    };
    assert_eq!(s.text(&mut scratch), "no escapes");
    let s = Str {
        raw: r"a\nb",
        escaped: true,
    };
    assert_eq!(s.text(&mut scratch), "a\nb");
}

#[test]
fn numbers_as_written() {
    for n in [
        "0", "-0", "7", "12", "-12", "0.5", "-12.50", "1e10", "1E+2", "2e-3", "0.5e-3", "10250",
    ] {
        assert_eq!(tokens(n.as_bytes()).expect(n), [format!("n:{n}")], "{n}");
        let inside = format!("[{n}]");
        assert_eq!(tokens(inside.as_bytes()).expect(n)[1], format!("n:{n}"));
    }
    for bad in ["-", "01", "-01", "1.", "1.e3", "1e", "1e+", "-a", "1.x"] {
        assert_eq!(err(bad.as_bytes()), "byte 0: invalid number", "{bad}");
    }
    for (bad, want) in [
        (".5", "byte 0: expected a value, found '.'"),
        ("+1", "byte 0: expected a value, found '+'"),
        ("[1.]", "byte 1: invalid number"),
        ("1 2", "byte 2: data after the document"),
    ] {
        assert_eq!(err(bad.as_bytes()), want, "{bad}");
    }
}

#[test]
fn malformed_documents_fail_with_where_and_why() {
    for (doc, want) in [
        (&b""[..], "byte 0: no JSON value"),
        (b" \n\t ", "byte 4: no JSON value"),
        (b"{", "byte 1: unexpected end of the document"),
        (b"[1,", "byte 3: unexpected end of the document"),
        (b"{\"a\"", "byte 4: unexpected end of the document"),
        (b"\"abc", "byte 4: unexpected end of the document"),
        (b"tru", "byte 3: unexpected end of the document"),
        (b"{\"a\" 1}", "byte 5: expected ':' after a key, found '1'"),
        (b"{\"a\":}", "byte 5: expected a value, found '}'"),
        (b"[1,]", "byte 3: expected a value, found ']'"),
        (b"[}", "byte 1: expected a value or ']', found '}'"),
        (b"{]", "byte 1: expected a key or '}', found ']'"),
        (b"{1:2}", "byte 1: expected a key or '}', found '1'"),
        (b"{\"a\":1,}", "byte 7: expected a key, found '}'"),
        (b"{\"a\":1]", "byte 6: expected ',' or '}', found ']'"),
        (b"[1 2]", "byte 3: expected ',' or ']', found '2'"),
        (b"[1}", "byte 2: expected ',' or ']', found '}'"),
        (b"[1\x00]", "byte 2: expected ',' or ']', found byte 0x00"),
        (b"{} x", "byte 3: data after the document"),
        (b"{}{}", "byte 2: data after the document"),
        (b"\"a\\x\"", "byte 2: invalid escape in a string"),
        (b"\"\\u12G4\"", "byte 1: invalid escape in a string"),
        (b"\"a\x01\"", "byte 2: control character 0x01 in a string"),
        (b"\"a\nb\"", "byte 2: control character 0x0a in a string"),
        (b"[\"ok\xff\"]", "byte 4: invalid UTF-8 in a string"),
        (b"\"\xc3\"", "byte 1: invalid UTF-8 in a string"),
        (b"trux", "byte 0: invalid literal"),
        (b"[nul]", "byte 1: invalid literal"),
        (b"True", "byte 0: expected a value, found 'T'"),
        (b"'a'", "byte 0: expected a value, found '''"),
    ] {
        assert_eq!(err(doc), want, "{}", String::from_utf8_lossy(doc));
    }
}

#[test]
fn nesting_is_bounded_without_recursion() {
    let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
    assert_eq!(
        tokens(ok.as_bytes()).expect("at the limit").len(),
        2 * MAX_DEPTH
    );
    let objects = format!("{}1{}", "{\"a\":".repeat(MAX_DEPTH), "}".repeat(MAX_DEPTH));
    assert!(tokens(objects.as_bytes()).is_ok());
    let deep = "[".repeat(MAX_DEPTH + 1);
    assert_eq!(
        err(deep.as_bytes()),
        format!("byte {MAX_DEPTH}: nested deeper than 256 levels")
    );
    // Far deeper than any stack: refused at the limit, nothing recursed.
    let hostile = "[{\"a\":".repeat(500_000);
    assert!(err(hostile.as_bytes()).ends_with("nested deeper than 256 levels"));
    // Mixed kinds across the 64-bit words of the stack close with the right brackets.
    let mut mixed = String::new();
    for d in 0..200 {
        mixed.push_str(if d % 3 == 0 { "{\"k\":" } else { "[" });
    }
    mixed.push('0');
    for d in (0..200).rev() {
        mixed.push(if d % 3 == 0 { '}' } else { ']' });
    }
    assert!(tokens(mixed.as_bytes()).is_ok());
}

/// Documents that touch every token kind, escapes split across chunks included.
const SMALL: &[&str] = &[
    r#"{"kind":"PodList","items":[{"a":-1.5e+2,"b":[true,false,null],"c":"x\u00e9\uD83D\uDE00\n"}]}"#,
    r#" [ 0 , -0.0 , 123456 , "" , {} , [ ] , "\\\"" ] "#,
    "12345",
    "\"ü\\/\"",
];

#[test]
fn every_split_point_gives_the_same_tokens() {
    for doc in SMALL {
        let whole = tokens(doc.as_bytes()).expect(doc);
        for at in 0..=doc.len() {
            assert_eq!(
                chunked(doc.as_bytes(), &[at]).expect(doc),
                whole,
                "{doc} split at {at}"
            );
        }
        let bytes = vec![1; doc.len()];
        assert_eq!(
            chunked(doc.as_bytes(), &bytes).expect(doc),
            whole,
            "{doc} bytewise"
        );
    }
    // A malformed document fails the same wherever it is split.
    let bad = br#"{"a":[1,2,{"b":"c\q"}]}"#;
    let want = tokens(bad).expect_err("bad escape");
    for at in 0..=bad.len() {
        assert_eq!(chunked(bad, &[at]).expect_err("bad"), want, "split at {at}");
    }
}

/// xorshift64: deterministic, no dependency.
fn rand(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// A random document of nested arrays, objects and scalars, `budget` values at most.
fn random_doc(state: &mut u64, depth: usize, out: &mut String) {
    match rand(state) % if depth > 6 { 4 } else { 6 } {
        0 => out.push_str(["0", "-12.5e3", "42", "1E-9"][(rand(state) % 4) as usize]),
        1 => out.push_str(["true", "false", "null"][(rand(state) % 3) as usize]),
        2 | 3 => out.push_str(
            [
                r#""""#,
                r#""plain""#,
                r#""\u00e9\"\\""#,
                r#""\uD83D\uDE00 ✓""#,
            ][(rand(state) % 4) as usize],
        ),
        4 => {
            out.push('[');
            for i in 0..rand(state) % 4 {
                if i > 0 {
                    out.push(',');
                }
                random_doc(state, depth + 1, out);
            }
            out.push(']');
        }
        _ => {
            out.push('{');
            for i in 0..rand(state) % 4 {
                if i > 0 {
                    out.push_str(" , ");
                }
                out.push_str(&format!("\"k{i}\" : "));
                random_doc(state, depth + 1, out);
            }
            out.push('}');
        }
    }
}

#[test]
fn random_documents_in_random_chunks() {
    let mut state = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..300 {
        let mut doc = String::new();
        random_doc(&mut state, 0, &mut doc);
        let whole = tokens(doc.as_bytes()).expect(&doc);
        let chunks: Vec<usize> = (0..doc.len())
            .map(|_| 1 + (rand(&mut state) % 7) as usize)
            .collect();
        assert_eq!(
            chunked(doc.as_bytes(), &chunks).expect(&doc),
            whole,
            "{doc}"
        );
        // Cut short anywhere, it is truncated (or, cut after a whole number, complete).
        let cut = usize::try_from(rand(&mut state) % doc.len() as u64).expect("below len");
        if let Ok(t) = tokens(&doc.as_bytes()[..cut]) {
            assert!(
                t.len() == 1 && t[0].starts_with("n:"),
                "{doc} cut at {cut}: {t:?}"
            );
        }
    }
}
