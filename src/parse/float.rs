//! Sample values as Prometheus reads them: Go's `strconv.ParseFloat(s, 64)` after refusing
//! `p`, `P` and `_` (promparse.go keeps to pre-Go-1.13 float forms: no hex floats, no digit
//! separators).

/// The NaN Prometheus stores for every parsed NaN (`value.NormalNaN`), so that a scraped NaN
/// can never be mistaken for the staleness marker (`0x7ff0000000000002`).
pub const NORMAL_NAN_BITS: u64 = 0x7ff8_0000_0000_0001;

/// The staleness marker (`value.StaleNaN`): written only by promlet itself, never parsed.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// promparse.go's own refusal of `p`, `P` and `_`, reported without Go's `strconv` prefix.
pub const UNSUPPORTED: &str = "unsupported character in float";

/// Parses a sample value. Accepts what Go accepts in decimal: `1`, `-1.5e3`, `.5`, `5.`,
/// `+Inf`, `inf`, `Infinity`, `NaN` (any case, NaN unsigned). Refuses out-of-range values such as `1e400`
/// (Go's ErrRange), hex floats, underscores and everything else. NaN comes back as
/// [`NORMAL_NAN_BITS`]. Allocation-free.
pub fn parse_value(s: &[u8]) -> Result<f64, &'static str> {
    if let Some(v) = exact_decimal(s) {
        return Ok(v);
    }
    if s.iter().any(|&b| matches!(b, b'p' | b'P' | b'_')) {
        return Err(UNSUPPORTED);
    }
    // Go's `special`: NaN takes no sign; Inf and Infinity take one.
    if s.eq_ignore_ascii_case(b"nan") {
        return Ok(f64::from_bits(NORMAL_NAN_BITS));
    }
    let (sign, body) = match s.first() {
        Some(b'+') => (1.0, &s[1..]),
        Some(b'-') => (-1.0, &s[1..]),
        _ => (1.0, s),
    };
    if body.eq_ignore_ascii_case(b"inf") || body.eq_ignore_ascii_case(b"infinity") {
        return Ok(sign * f64::INFINITY);
    }
    if !is_decimal(body) {
        return Err("invalid syntax");
    }
    // The bytes are ASCII digits, '.', 'e', '+', '-' by `is_decimal`.
    let text = std::str::from_utf8(s).map_err(|_| "invalid syntax")?;
    let v: f64 = text.parse().map_err(|_| "invalid syntax")?;
    if v.is_infinite() {
        return Err("value out of range");
    }
    Ok(v)
}

/// Powers of ten that are exact as doubles, up to the 15 digits [`exact_decimal`] takes.
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// The common shape of exporters' values, `[+-] digits [. digits]` with at most 15 digits,
/// read without the general parser: the digits make an integer below 2^53 and the scale a
/// power of ten below 10^22, both exact as doubles, so one correctly rounded division gives
/// the nearest double to the decimal (Clinger's fast path, which Go's `strconv` takes too).
/// `None` for any other shape.
fn exact_decimal(s: &[u8]) -> Option<f64> {
    let (negative, body) = match s.first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (mut m, mut digits, mut frac) = (0u64, 0usize, None::<usize>);
    for &c in body {
        match c {
            b'0'..=b'9' => {
                digits += 1;
                if digits > 15 {
                    return None;
                }
                m = m * 10 + u64::from(c - b'0');
                if let Some(f) = frac.as_mut() {
                    *f += 1;
                }
            }
            b'.' if frac.is_none() => frac = Some(0),
            _ => return None,
        }
    }
    if digits == 0 {
        return None;
    }
    #[allow(clippy::cast_precision_loss)]
    let v = m as f64 / POW10[frac.unwrap_or(0)];
    Some(if negative { -v } else { v })
}

/// `digits [. digits] [e [+-] digits]` with at least one mantissa digit; the only shape Go
/// accepts in base 10 (hex is refused above through 'p').
fn is_decimal(b: &[u8]) -> bool {
    let mut i = 0;
    let int_digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    i += int_digits;
    let mut frac_digits = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        frac_digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        i += frac_digits;
    }
    if int_digits + frac_digits == 0 {
        return false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exp_digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if exp_digits == 0 {
            return false;
        }
        i += exp_digits;
    }
    i == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_float_forms() {
        let ok: &[(&str, f64)] = &[
            ("1", 1.0),
            ("-1.5e3", -1500.0),
            (".5", 0.5),
            ("5.", 5.0),
            ("+2", 2.0),
            ("1E+2", 100.0),
            ("+Inf", f64::INFINITY),
            ("-inf", f64::NEG_INFINITY),
            ("Infinity", f64::INFINITY),
            ("1e-400", 0.0),
            ("0", 0.0),
            ("-0", -0.0),
        ];
        for (text, want) in ok {
            assert_eq!(parse_value(text.as_bytes()), Ok(*want), "{text}");
        }
        for nan in ["NaN", "nan", "NAN"] {
            let v = parse_value(nan.as_bytes()).expect("nan");
            assert_eq!(v.to_bits(), NORMAL_NAN_BITS, "{nan}");
        }
        for bad in [
            "", "+", ".", "e5", "1e", "1e+", "0x10", "0x1p-2", "1_000", "1,5", "1.5.1", "infx",
            "1e400", "--1", "1 ", "\u{661}", "Inf1", "-NaN", "+nan", "infi",
        ] {
            assert!(parse_value(bad.as_bytes()).is_err(), "{bad:?} must fail");
        }
    }

    #[test]
    fn the_fast_path_reads_every_decimal_as_the_general_parser_does() {
        // A small xorshift: decimals of 1 to 17 digits, the point anywhere or nowhere, signs.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for _ in 0..200_000 {
            let len = 1 + next(17);
            let mut t = String::new();
            match next(4) {
                0 => t.push('-'),
                1 => t.push('+'),
                _ => {}
            }
            let dot = next(len + 2);
            for i in 0..len {
                if i == dot {
                    t.push('.');
                }
                t.push(char::from(b'0' + u8::try_from(next(10)).unwrap_or(0)));
            }
            if dot == len {
                t.push('.');
            }
            let want: f64 = t.parse().expect("a decimal");
            let got = parse_value(t.as_bytes()).expect("parses");
            assert_eq!(got.to_bits(), want.to_bits(), "{t}");
            if let Some(v) = exact_decimal(t.as_bytes()) {
                assert_eq!(v.to_bits(), want.to_bits(), "{t}");
            }
        }
        assert_eq!(
            exact_decimal(b"123456789012345"),
            Some(123_456_789_012_345.0)
        );
        assert_eq!(exact_decimal(b"0.000000000000001"), None, "16 digits");
        assert_eq!(
            exact_decimal(b"-0").map(f64::to_bits),
            Some((-0.0f64).to_bits())
        );
        for other in ["1e3", "1.5.1", ".", "", "-", "NaN", "+Inf", "0x1"] {
            assert_eq!(exact_decimal(other.as_bytes()), None, "{other}");
        }
    }
}
