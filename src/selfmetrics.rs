//! promlet's self-metrics in the Prometheus text format 0.0.4, written the way client_golang's
//! `expfmt` writes them, so a dashboard built on Prometheus' own `/metrics` reads ours.
//!
//! The writers append to a caller's `Vec<u8>` and allocate nothing once it is warm: numbers are
//! formatted on the stack (`float`), escapes go byte by byte, and [`process`] reads `/proc` into
//! a scratch buffer the caller keeps.
//!
//! What is written:
//! - [`family`]: the `# HELP` and `# TYPE` lines, once per metric family.
//! - [`sample`], [`sample_u64`]: one sample line with escaped label values.
//! - [`process`]: client_golang's process collector (`process_*`) plus
//!   `promlet_process_resident_anon_bytes`, the figure the memory budgets are stated in.

use std::fmt::Write as _;

use crate::parse::decimal;
use std::io::Read as _;

/// A metric family's type, as the `# TYPE` line spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (or resets to zero on restart): `counter`.
    Counter,
    /// Any value: `gauge`.
    Gauge,
}

impl Kind {
    /// The word on the `# TYPE` line.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// Appends `# HELP name help\n# TYPE name kind\n`, once per family, before its samples.
///
/// `help` is escaped as the text format requires (`\` → `\\`, newline → `\n`); `name` is
/// written as given (callers pass constants that are valid metric names). No allocation once
/// `out` has room.
pub fn family(out: &mut Vec<u8>, name: &str, help: &str, kind: Kind) {
    out.extend_from_slice(b"# HELP ");
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    for &b in help.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            _ => out.push(b),
        }
    }
    out.extend_from_slice(b"\n# TYPE ");
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    out.extend_from_slice(kind.as_str().as_bytes());
    out.push(b'\n');
}

/// Appends one sample line, `name{l1="v1",...} value\n` (no braces when `labels` is empty).
///
/// Label values are escaped as the text format requires (`\` → `\\`, `"` → `\"`, newline →
/// `\n`); names are written as given, in the order given (client_golang sorts them by name:
/// pass them sorted to match it byte for byte). `value` is written by [`float`]. No allocation
/// once `out` has room.
pub fn sample(out: &mut Vec<u8>, name: &str, labels: &[(&str, &str)], value: f64) {
    out.extend_from_slice(name.as_bytes());
    if !labels.is_empty() {
        out.push(b'{');
        for (i, (label, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(label.as_bytes());
            out.extend_from_slice(b"=\"");
            for &b in value.as_bytes() {
                match b {
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b'"' => out.extend_from_slice(b"\\\""),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    _ => out.push(b),
                }
            }
            out.push(b'"');
        }
        out.push(b'}');
    }
    out.push(b' ');
    float(out, value);
    out.push(b'\n');
}

/// [`sample`] for an integer counter or gauge.
///
/// The value goes through `f64` on purpose: client_golang keeps every counter as a float64
/// and prints it with `'g'`, so a million requests read `1e+06` on Prometheus' own page and
/// must read the same here (above 2^53 the float rounds, as Prometheus' does).
pub fn sample_u64(out: &mut Vec<u8>, name: &str, labels: &[(&str, &str)], value: u64) {
    // Deliberately lossy above 2^53; see above.
    sample(out, name, labels, value as f64);
}

/// Appends `value` as client_golang's `writeFloat` does: `0` for ±0, `NaN`, `+Inf`, `-Inf`,
/// otherwise Go's `strconv.FormatFloat(value, 'g', -1, 64)`.
///
/// That is the shortest digits that read back to the same `f64`, laid out as Go's `%e`
/// (`1.234567e+06`, exponent signed and at least two digits) when the decimal exponent is
/// below -4 or at least 6 (Go's `eprec = 6` for the shortest form — 21 is `fmt`'s `%v`, not
/// strconv), else as `%f` with exactly those digits (`123456`, `0.0001`). No allocation.
pub fn float(out: &mut Vec<u8>, value: f64) {
    if value.is_nan() {
        out.extend_from_slice(b"NaN");
        return;
    }
    if value.is_infinite() {
        out.extend_from_slice(if value > 0.0 { b"+Inf" } else { b"-Inf" });
        return;
    }
    if value == 0.0 {
        // client_golang tests `f == 0` first, which -0 passes too: both print `0`.
        out.push(b'0');
        return;
    }
    // Rust's `{:e}` without a precision gives the shortest round-trip digits, like Go's
    // shortest mode (both pick the closest of the shortest candidates); only the layout
    // differs, so the digits and exponent are taken from it and laid out the Go way. Rejected:
    // `{}`, which never switches to an exponent and would need the digits counted back.
    let mut sci = Stack::default();
    if write!(sci, "{:e}", value.abs()).is_err() {
        // Cannot happen (at most 24 bytes: 17 digits, a point, `e-324`); never panic anyway.
        return;
    }
    let text = sci.as_bytes();
    let (mantissa, exponent) = match text.iter().position(|&b| b == b'e') {
        Some(at) => (&text[..at], &text[at + 1..]),
        None => (text, &b"0"[..]),
    };
    let mut digits = [0u8; 24];
    let mut nd = 0;
    for &b in mantissa.iter().filter(|b| b.is_ascii_digit()) {
        if let Some(slot) = digits.get_mut(nd) {
            *slot = b;
            nd += 1;
        }
    }
    let digits = &digits[..nd];
    let exp = parse_exponent(exponent);
    if value < 0.0 {
        out.push(b'-');
    }
    if !(-4..6).contains(&exp) {
        // %e: d[.ddd]e±XX
        let (first, rest) = digits.split_at(1.min(digits.len()));
        out.extend_from_slice(first);
        if !rest.is_empty() {
            out.push(b'.');
            out.extend_from_slice(rest);
        }
        out.push(b'e');
        out.push(if exp < 0 { b'-' } else { b'+' });
        let abs = exp.unsigned_abs();
        if abs < 10 {
            out.push(b'0');
        }
        let mut n = Stack::default();
        // A u32 always fits the stack buffer.
        let _ = write!(n, "{abs}");
        out.extend_from_slice(n.as_bytes());
        return;
    }
    // %f with as many fraction digits as the shortest form needs; `dp` is where the decimal
    // point goes in `digits` (Go's `digs.dp`), here -3..=6.
    let dp = exp + 1;
    match usize::try_from(dp) {
        Ok(dp) if dp >= digits.len() => {
            out.extend_from_slice(digits);
            out.extend(std::iter::repeat_n(b'0', dp - digits.len()));
        }
        Ok(dp) if dp > 0 => {
            out.extend_from_slice(&digits[..dp]);
            out.push(b'.');
            out.extend_from_slice(&digits[dp..]);
        }
        _ => {
            out.extend_from_slice(b"0.");
            let zeros = usize::try_from(dp.unsigned_abs()).unwrap_or(0);
            out.extend(std::iter::repeat_n(b'0', zeros));
            out.extend_from_slice(digits);
        }
    }
}

/// The decimal exponent of Rust's `{:e}` output (`6`, `-5`); 0 if it is somehow not a number.
fn parse_exponent(text: &[u8]) -> i32 {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let mut n: i32 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return 0;
        }
        n = n.saturating_mul(10).saturating_add(i32::from(b - b'0'));
    }
    if negative {
        -n
    } else {
        n
    }
}

/// A small stack buffer `write!` can format into, so numbers need no heap.
#[derive(Default)]
struct Stack {
    buf: [u8; 32],
    len: usize,
}

impl Stack {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::fmt::Write for Stack {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Clock ticks per second in `/proc/self/stat`'s times: USER_HZ, which the kernel fixes at 100
/// for the `/proc` ABI on every architecture promlet builds for (arm, aarch64, x86_64), whatever
/// the kernel's internal HZ. client_golang (procfs' `userHZ`) assumes the same constant;
/// asking `sysconf(_SC_CLK_TCK)` would need libc for a number that does not change.
const USER_HZ: f64 = 100.0;

/// Appends client_golang's process collector families, in the name order its registry sorts
/// them — `process_cpu_seconds_total`, `process_max_fds`, `process_open_fds`,
/// `process_resident_memory_bytes`, `process_start_time_seconds`,
/// `process_virtual_memory_bytes` — then `promlet_process_resident_anon_bytes` (`RssAnon`
/// from `/proc/self/status`: the anonymous memory the budgets count, without the mapped binary
/// and ring pages that `VmRSS` also holds).
///
/// Sources: `/proc/self/stat` (CPU ticks, start ticks, virtual size), `/proc/stat` (`btime`),
/// `/proc/self/status` (`VmRSS`, `RssAnon`, in kB), `/proc/self/limits` (the soft
/// `Max open files`; `unlimited` is 2^64-1, as procfs reads it) and the entries of
/// `/proc/self/fd` (which include the one open to list them, as client_golang's count does).
/// A family whose source cannot be read or parsed is left out (logged at debug) rather than
/// failing the page: client_golang would fail the whole scrape, and the rest of the page is
/// worth more than the symmetry.
///
/// Reading `/proc` is a blocking call on the loop thread, and that is acceptable: the kernel
/// generates these files from memory on read, they never wait on a disk or the network.
/// `scratch` holds each file in turn; it grows to the largest of them (usually `/proc/stat`, a
/// few KiB) once and is reused after.
pub fn process(out: &mut Vec<u8>, scratch: &mut Vec<u8>) {
    let stat = read("/proc/self/stat", scratch).and_then(|()| parse_stat(scratch));
    let btime = stat.and_then(|_| read("/proc/stat", scratch).and_then(|()| parse_btime(scratch)));
    let status = read("/proc/self/status", scratch).map(|()| {
        (
            status_kb(scratch, b"VmRSS:"),
            status_kb(scratch, b"RssAnon:"),
        )
    });
    let (rss_kb, anon_kb) = status.unwrap_or((None, None));
    let max_fds = read("/proc/self/limits", scratch).and_then(|()| parse_max_open_files(scratch));
    let open_fds = count_open_fds();

    if let Some(stat) = stat {
        family(
            out,
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            Kind::Counter,
        );
        // Summed in ticks first, then divided, as procfs' CPUTime does (same rounding).
        let ticks = stat.utime_ticks.saturating_add(stat.stime_ticks);
        sample(
            out,
            "process_cpu_seconds_total",
            &[],
            ticks as f64 / USER_HZ,
        );
    }
    if let Some(max) = max_fds {
        family(
            out,
            "process_max_fds",
            "Maximum number of open file descriptors.",
            Kind::Gauge,
        );
        sample_u64(out, "process_max_fds", &[], max);
    }
    if let Some(open) = open_fds {
        family(
            out,
            "process_open_fds",
            "Number of open file descriptors.",
            Kind::Gauge,
        );
        sample_u64(out, "process_open_fds", &[], open);
    }
    if let Some(kb) = rss_kb {
        family(
            out,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            Kind::Gauge,
        );
        sample_u64(
            out,
            "process_resident_memory_bytes",
            &[],
            kb.saturating_mul(1024),
        );
    }
    if let (Some(stat), Some(btime)) = (stat, btime) {
        family(
            out,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            Kind::Gauge,
        );
        // The same expression as procfs' StartTime: ticks since boot / USER_HZ + boot time.
        let start = stat.start_ticks as f64 / USER_HZ + btime as f64;
        sample(out, "process_start_time_seconds", &[], start);
    }
    if let Some(stat) = stat {
        family(
            out,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            Kind::Gauge,
        );
        sample_u64(out, "process_virtual_memory_bytes", &[], stat.vsize_bytes);
    }
    if let Some(kb) = anon_kb {
        family(
            out,
            "promlet_process_resident_anon_bytes",
            "Resident anonymous memory size in bytes (RssAnon), the figure promlet's memory budgets are stated in.",
            Kind::Gauge,
        );
        sample_u64(
            out,
            "promlet_process_resident_anon_bytes",
            &[],
            kb.saturating_mul(1024),
        );
    }
}

/// Reads the whole of `path` into `scratch` (cleared first); `None` (logged at debug) if it
/// cannot be read.
fn read(path: &str, scratch: &mut Vec<u8>) -> Option<()> {
    scratch.clear();
    // `File::open` builds the C path on the stack for short paths: no allocation.
    let result = std::fs::File::open(path).and_then(|mut f| f.read_to_end(scratch));
    match result {
        Ok(_) => Some(()),
        Err(e) => {
            log::debug!("self-metrics: reading {path}: {e}");
            None
        }
    }
}

/// The fields of `/proc/self/stat` the process collector uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    utime_ticks: u64,
    stime_ticks: u64,
    start_ticks: u64,
    vsize_bytes: u64,
}

/// Parses `/proc/self/stat`: fields after the command name, which sits in parentheses and may
/// itself hold spaces and `)` — so the split starts after the *last* `)` (as procfs does).
fn parse_stat(text: &[u8]) -> Option<Stat> {
    let close = text.iter().rposition(|&b| b == b')')?;
    // proc(5) numbers the fields from 1; the name is field 2.
    let mut fields = text[close + 1..]
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    // The first item is field 3 (state), so field N is item N-3.
    let utime_ticks = fields.nth(14 - 3).and_then(decimal)?;
    let stime_ticks = fields.next().and_then(decimal)?; // 15
    let start_ticks = fields.nth(22 - 16).and_then(decimal)?; // 16..=21 skipped
    let vsize_bytes = fields.next().and_then(decimal)?; // 23
    Some(Stat {
        utime_ticks,
        stime_ticks,
        start_ticks,
        vsize_bytes,
    })
}

/// The `btime` line of `/proc/stat`: boot time, seconds since the epoch.
fn parse_btime(text: &[u8]) -> Option<u64> {
    text.split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"btime "))
        .and_then(|rest| decimal(rest.trim_ascii()))
}

/// A `Key:   1234 kB` line of `/proc/self/status`, in kB.
fn status_kb(text: &[u8], key: &[u8]) -> Option<u64> {
    let rest = text
        .split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(key))?;
    let rest = rest.trim_ascii();
    decimal(rest.strip_suffix(b"kB").unwrap_or(rest).trim_ascii())
}

/// The soft limit of the `Max open files` row of `/proc/self/limits`.
fn parse_max_open_files(text: &[u8]) -> Option<u64> {
    let rest = text
        .split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"Max open files"))?;
    let soft = rest
        .split(|b| b.is_ascii_whitespace())
        .find(|f| !f.is_empty())?;
    if soft == b"unlimited" {
        // procfs' parseUint reads `unlimited` as the largest uint64.
        return Some(u64::MAX);
    }
    decimal(soft)
}

/// Entries of `/proc/self/fd`, `.` and `..` left out, read with `getdents` into a stack buffer
/// (std's `read_dir` would allocate a name per entry).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn count_open_fds() -> Option<u64> {
    use rustix::fs::{Mode, OFlags, RawDir};
    let dir = match rustix::fs::open(
        "/proc/self/fd",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(d) => d,
        Err(e) => {
            log::debug!("self-metrics: opening /proc/self/fd: {e}");
            return None;
        }
    };
    // 2 KiB holds about 80 entries per getdents call; names here are at most 10 digits, so no
    // entry can be too large for it.
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 2048];
    let mut entries = RawDir::new(&dir, &mut buf);
    let mut count: u64 = 0;
    while let Some(entry) = entries.next() {
        match entry {
            Ok(e) => {
                let name = e.file_name().to_bytes();
                if name != b"." && name != b".." {
                    count += 1;
                }
            }
            Err(e) => {
                log::debug!("self-metrics: listing /proc/self/fd: {e}");
                return None;
            }
        }
    }
    Some(count)
}

/// No `/proc/self/fd` to count off Linux: the family is left out.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn count_open_fds() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn formatted(v: f64) -> String {
        let mut out = Vec::new();
        float(&mut out, v);
        String::from_utf8(out).expect("ascii")
    }

    #[test]
    fn float_matches_go_strconv_g_shortest() {
        // Expected strings are Go's strconv.FormatFloat(v, 'g', -1, 64), with client_golang's
        // special cases (0, NaN, ±Inf).
        let table: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (-1.0, "-1"),
            (0.5, "0.5"),
            (0.1, "0.1"),
            (100.0, "100"),
            (100000.0, "100000"),
            (123456.0, "123456"),
            (999999.0, "999999"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (1e21, "1e+21"),
            (1e-5, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (0.0001, "0.0001"),
            (0.000123, "0.000123"),
            (12345.678, "12345.678"),
            (-2.5, "-2.5"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (1.7e308, "1.7e+308"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (1e100, "1e+100"),
            (2.5e-100, "2.5e-100"),
            (1_700_000_000.25, "1.70000000025e+09"),
            (0.30000000000000004, "0.30000000000000004"),
            (u64::MAX as f64, "1.8446744073709552e+19"),
        ];
        for &(v, want) in table {
            assert_eq!(formatted(v), want, "{v:?}");
        }
    }

    #[test]
    fn float_round_trips_and_keeps_shortest_digits() {
        // A naive oracle over many bit patterns: the text reads back to the same f64, and its
        // significant digits are those of Rust's shortest form.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = f64::from_bits(x);
            if !v.is_finite() || v == 0.0 {
                continue;
            }
            let text = formatted(v);
            let back: f64 = text.parse().expect("reads back");
            assert_eq!(back.to_bits(), v.to_bits(), "{text}");
            let digits = |s: &str| -> String {
                let m = s.split('e').next().unwrap_or("");
                m.chars()
                    .filter(char::is_ascii_digit)
                    .collect::<String>()
                    .trim_start_matches('0')
                    .trim_end_matches('0')
                    .to_string()
            };
            assert_eq!(digits(&text), digits(&format!("{:e}", v.abs())), "{text}");
        }
    }

    #[test]
    fn family_writes_help_and_type() {
        let mut out = Vec::new();
        family(&mut out, "up_total", "a \\ b\nc", Kind::Counter);
        family(&mut out, "g", "", Kind::Gauge);
        assert_eq!(
            String::from_utf8(out).expect("ascii"),
            "# HELP up_total a \\\\ b\\nc\n# TYPE up_total counter\n# HELP g \n# TYPE g gauge\n"
        );
    }

    #[test]
    fn sample_escapes_label_values() {
        let mut out = Vec::new();
        sample(&mut out, "m", &[], 2.0);
        sample(&mut out, "m", &[("a", "x\\y\"z\nw"), ("b", "ü")], 0.5);
        sample_u64(&mut out, "c_total", &[("code", "200")], 1_000_000);
        sample_u64(&mut out, "c_total", &[("code", "500")], 7);
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "m 2\nm{a=\"x\\\\y\\\"z\\nw\",b=\"ü\"} 0.5\nc_total{code=\"200\"} 1e+06\nc_total{code=\"500\"} 7\n"
        );
    }

    #[test]
    fn writers_do_not_allocate_once_warm() {
        let mut out = Vec::with_capacity(4096);
        let ptr = out.as_ptr();
        for _ in 0..10 {
            out.clear();
            family(&mut out, "x_total", "help", Kind::Counter);
            sample(&mut out, "x_total", &[("a", "\"")], 1.234567e-300);
            sample_u64(&mut out, "x_total", &[], u64::MAX);
        }
        // Same buffer, never reallocated; the formatting itself only uses the stack.
        assert_eq!(out.as_ptr(), ptr);
    }

    #[test]
    fn parses_proc_stat_with_awkward_comm() {
        let text = b"4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 800 0 0 0 123 45 0 0 20 0 3 0 987654 12345678 600 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                utime_ticks: 123,
                stime_ticks: 45,
                start_ticks: 987654,
                vsize_bytes: 12345678,
            })
        );
        assert_eq!(parse_stat(b"4242 (x) S 1 2"), None);
        assert_eq!(parse_stat(b""), None);
    }

    #[test]
    fn parses_status_limits_and_btime() {
        let status = b"Name:\tpromlet\nVmRSS:\t    5120 kB\nRssAnon:\t    2048 kB\n";
        assert_eq!(status_kb(status, b"VmRSS:"), Some(5120));
        assert_eq!(status_kb(status, b"RssAnon:"), Some(2048));
        assert_eq!(status_kb(status, b"VmSwap:"), None);
        let limits = b"Limit                     Soft Limit           Hard Limit           Units     \nMax open files            1024                 524288               files     \n";
        assert_eq!(parse_max_open_files(limits), Some(1024));
        let unlimited =
            b"Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_max_open_files(unlimited), Some(u64::MAX));
        let stat = b"cpu  1 2 3\nintr 5 6\nctxt 7\nbtime 1700000000\nprocesses 9\n";
        assert_eq!(parse_btime(stat), Some(1_700_000_000));
        assert_eq!(parse_btime(b"cpu 1\n"), None);
        assert_eq!(decimal(b"18446744073709551616"), None);
        assert_eq!(decimal(b"-1"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_reads_this_process() {
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        process(&mut out, &mut scratch);
        let text = String::from_utf8(out).expect("ascii");
        let value = |name: &str| -> f64 {
            let prefix = format!("{name} ");
            let line = text
                .lines()
                .find(|l| l.starts_with(&prefix))
                .unwrap_or_else(|| panic!("{name} missing from:\n{text}"));
            line[prefix.len()..].parse().expect("a number")
        };
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        assert!(value("process_resident_memory_bytes") > 0.0);
        assert!(value("promlet_process_resident_anon_bytes") > 0.0);
        assert!(value("process_cpu_seconds_total") >= 0.0);
        // Under qemu-user (the armv7 and aarch64 test runs) /proc/self/stat is qemu's
        // picture of the guest, most fields 0, while /proc/self/status is the host's: the
        // cross-checks below hold on a real kernel only.
        let emulated = value("process_virtual_memory_bytes") == 0.0;
        if !emulated {
            assert!(
                value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes")
            );
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after 1970")
                .as_secs_f64();
            let start = value("process_start_time_seconds");
            // Started before now, and not a day ago (a test binary).
            assert!(
                start <= now + 1.0 && start > now - 86_400.0,
                "{start} vs {now}"
            );
        }
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\n"));
        let order: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .collect();
        assert_eq!(
            order,
            [
                "process_cpu_seconds_total counter",
                "process_max_fds gauge",
                "process_open_fds gauge",
                "process_resident_memory_bytes gauge",
                "process_start_time_seconds gauge",
                "process_virtual_memory_bytes gauge",
                "promlet_process_resident_anon_bytes gauge",
            ]
        );
    }
}
