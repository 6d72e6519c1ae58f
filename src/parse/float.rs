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
}
