//! Durations and byte sizes spelled as Prometheus spells them.
//!
//! - Durations (`15s`, `1h30m`, `500ms`, `1y`) follow `prometheus/common/model.ParseDuration`:
//!   units y w d h m s ms, each at most once and in that order, integers only, `0` without a unit;
//!   millisecond precision.
//! - Config sizes (`body_size_limit: 32MB`) follow `alecthomas/units.ParseBase2Bytes`: a sequence
//!   of number+unit, decimal fractions allowed, units B KB MB … EB or KiB MiB … EiB, all powers of
//!   1024 (so `32MB` is 32 MiB); a unit is required except for a lone `0`.
//! - The ring size flag (`--storage.agent.size`) takes the same sizes and also plain bytes.

use std::time::Duration;

const MS_PER_UNIT: [(&str, u64); 7] = [
    ("y", 1000 * 60 * 60 * 24 * 365),
    ("w", 1000 * 60 * 60 * 24 * 7),
    ("d", 1000 * 60 * 60 * 24),
    ("h", 1000 * 60 * 60),
    ("m", 1000 * 60),
    ("s", 1000),
    ("ms", 1),
];

/// Parses a Prometheus duration. Errors are lowercase reasons naming the input.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    match text {
        "0" => return Ok(Duration::ZERO),
        "" => return Err("empty duration string".to_owned()),
        _ => {}
    }
    let invalid = || format!("not a valid duration string: {text:?}");
    let mut rest = text;
    let mut total_ms: u64 = 0;
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(invalid());
        }
        let (number, after) = rest.split_at(digits);
        // The unit is the run of letters after the digits; "ms" must not be read as "m".
        let letters = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(letters);
        let Some(pos) = MS_PER_UNIT[next_unit..]
            .iter()
            .position(|(u, _)| *u == unit)
        else {
            return Err(invalid());
        };
        let (_, mult) = MS_PER_UNIT[next_unit + pos];
        next_unit += pos + 1;
        // Go's check: n must not exceed i64::MAX / mult / 1ms (in ns), and the sum not wrap.
        let limit = (i64::MAX as u64) / 1_000_000 / mult;
        let n: u64 = number
            .parse()
            .map_err(|_| "duration out of range".to_owned())?;
        if n > limit {
            return Err("duration out of range".to_owned());
        }
        total_ms = total_ms
            .checked_add(n * mult)
            .filter(|ms| *ms <= (i64::MAX as u64) / 1_000_000)
            .ok_or_else(|| "duration out of range".to_owned())?;
        rest = after;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Formats a duration as Prometheus prints one (`1m`, `1h30m`, `0s`; years and weeks only when
/// exact), as used for `__scrape_interval__` and in logs.
pub fn format_duration(d: Duration) -> String {
    let mut ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (i, (unit, mult)) in MS_PER_UNIT.iter().enumerate() {
        let exact_only = i < 2;
        if exact_only && ms % mult != 0 {
            continue;
        }
        let v = ms / mult;
        if v > 0 {
            out.push_str(&v.to_string());
            out.push_str(unit);
            ms -= v * mult;
        }
    }
    out
}

/// The unit table of `ParseBase2Bytes`: both the IEC (`KiB`) and the old (`KB`) spellings mean
/// powers of 1024.
fn byte_unit(unit: &str) -> Option<f64> {
    let power = match unit {
        "B" => 0,
        "KB" | "KiB" => 1,
        "MB" | "MiB" => 2,
        "GB" | "GiB" => 3,
        "TB" | "TiB" => 4,
        "PB" | "PiB" => 5,
        "EB" | "EiB" => 6,
        _ => return None,
    };
    Some(1024f64.powi(power))
}

/// Parses a size as Prometheus' config does (`32MB`, `1.5KiB`, `0`), into bytes. A negative
/// size parses (as in Prometheus) and reads as 0, which every limit takes as "no limit".
pub fn parse_size(text: &str) -> Result<u64, String> {
    let invalid = || format!("invalid size {text:?}");
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let mut value: f64 = if int_len > 0 {
            rest[..int_len].parse().map_err(|_| invalid())?
        } else {
            0.0
        };
        rest = &rest[int_len..];
        let mut frac_len = 0;
        if let Some(after_dot) = rest.strip_prefix('.') {
            frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            if frac_len > 0 {
                let frac: f64 = after_dot[..frac_len].parse().map_err(|_| invalid())?;
                value += frac / 10f64.powi(i32::try_from(frac_len).map_err(|_| invalid())?);
            }
            rest = &after_dot[frac_len..];
        }
        if int_len == 0 && frac_len == 0 {
            return Err(invalid());
        }
        let unit_len = rest
            .bytes()
            .take_while(|b| *b != b'.' && !b.is_ascii_digit())
            .count();
        let (unit, after) = rest.split_at(unit_len);
        let Some(mult) = byte_unit(unit) else {
            return Err(format!("unknown unit {unit:?} in {text:?}"));
        };
        total += value * mult;
        rest = after;
    }
    if negative {
        // Prometheus accepts a negative limit (`-1KB`); a limit at or below zero is no limit.
        return Ok(0);
    }
    if total >= 18_446_744_073_709_551_616.0 {
        return Err(format!("size out of range: {text:?}"));
    }
    Ok(float_bytes(total))
}

// Truncation toward zero, as Go's int64(f); the caller bounds `f` to [0, 2^64).
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn float_bytes(f: f64) -> u64 {
    f as u64
}

/// Parses `--storage.agent.size`: a Prometheus size (`64MiB`, `512KiB`, `1GB`) or plain bytes.
pub fn parse_ring_size(text: &str) -> Result<u64, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map_err(|_| format!("size out of range: {text:?}"));
    }
    parse_size(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_prometheus() {
        let ok: &[(&str, u64)] = &[
            ("0", 0),
            ("0s", 0),
            ("15s", 15_000),
            ("1h30m", 5_400_000),
            ("500ms", 500),
            ("1m500ms", 60_500),
            ("1y", 31_536_000_000),
            ("2w1d", 1_296_000_000),
            ("90s", 90_000),
        ];
        for (text, ms) in ok {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(*ms)),
                "{text}"
            );
        }
        let bad: &[(&str, &str)] = &[
            ("", "empty duration string"),
            ("15", "not a valid duration string: \"15\""),
            ("1.5s", "not a valid duration string: \"1.5s\""),
            ("5m1h", "not a valid duration string: \"5m1h\""),
            ("1s1s", "not a valid duration string: \"1s1s\""),
            ("-1s", "not a valid duration string: \"-1s\""),
            ("1 s", "not a valid duration string: \"1 s\""),
            ("10us", "not a valid duration string: \"10us\""),
            ("300y", "duration out of range"),
        ];
        for (text, msg) in bad {
            assert_eq!(parse_duration(text), Err((*msg).to_owned()), "{text}");
        }
    }

    #[test]
    fn durations_print_like_prometheus() {
        let cases: &[(u64, &str)] = &[
            (0, "0s"),
            (15_000, "15s"),
            (60_000, "1m"),
            (5_400_000, "1h30m"),
            (500, "500ms"),
            (7_776_000_000, "90d"),
            (604_800_000, "1w"),
            (31_536_000_000, "1y"),
        ];
        for (ms, text) in cases {
            assert_eq!(format_duration(Duration::from_millis(*ms)), *text);
        }
    }

    #[test]
    fn sizes_parse_like_alecthomas_units() {
        let ok: &[(&str, u64)] = &[
            ("0", 0),
            ("32MB", 32 << 20),
            ("32MiB", 32 << 20),
            ("512KiB", 512 << 10),
            ("1.5KB", 1536),
            ("1GB512MB", (1 << 30) + (512 << 20)),
            ("100B", 100),
        ];
        for (text, bytes) in ok {
            assert_eq!(parse_size(text), Ok(*bytes), "{text}");
        }
        assert_eq!(parse_size("-5MB"), Ok(0));
        for bad in ["", "1024", "32mb", "1K", "MB", "x", "-"] {
            assert!(parse_size(bad).is_err(), "{bad} must fail");
        }
        assert_eq!(
            parse_size("1024"),
            Err("unknown unit \"\" in \"1024\"".to_owned())
        );
    }

    #[test]
    fn ring_sizes_also_take_plain_bytes() {
        assert_eq!(parse_ring_size("67108864"), Ok(64 << 20));
        assert_eq!(parse_ring_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_ring_size("512KiB"), Ok(512 << 10));
        assert!(parse_ring_size("64 MiB").is_err());
        assert!(parse_ring_size("").is_err());
    }
}
