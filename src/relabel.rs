//! Applying relabel rules with Prometheus 2.42's semantics (`model/relabel/relabel.go`).
//!
//! One implementation serves both uses: `metric_relabel_configs` per scraped series, in place
//! on its [`LabelSet`] ([`process_set`]: allocation-free once a [`Scratch`] has warmed up), and
//! `relabel_configs` once per target ([`process`], over an owned list). Checked against a live
//! Prometheus 2.42 in `tests/expo_differential.rs`, hashmod shares included.

use crate::config::relabel::{is_valid_label_name, Action, RelabelConfig};
use crate::labels::{LabelSet, Span};

/// A label set as an owned list: `(name, value)` pairs sorted by name, no empty values.
pub type Labels = Vec<(String, String)>;

/// Reusable buffers: one per scrape loop, so relabeling allocates nothing once warm.
#[derive(Debug, Default)]
pub struct Scratch {
    /// The source labels' values joined by the separator.
    value: Vec<u8>,
    /// An expanded target label name.
    name: Vec<u8>,
    /// An expanded replacement, a case-mapped value or a hashmod result.
    out: Vec<u8>,
    /// The labels as they were when a labelmap rule started.
    snapshot: Vec<Span>,
    /// Capture slots, one per rule (regex-lite's allocation-free matching API).
    locs: Vec<Option<regex_lite::CaptureLocations>>,
}

/// Runs `rules` over a target's labels (target time). Returns false if a rule dropped it.
pub fn process(labels: &mut Labels, rules: &[RelabelConfig]) -> bool {
    if rules.is_empty() {
        return true;
    }
    let mut set = LabelSet::new();
    for (k, v) in labels.iter() {
        set.push(k.as_bytes(), v.as_bytes());
    }
    set.sort();
    let keep = process_set(&mut set, rules, &mut Scratch::default());
    labels.clear();
    labels.extend(set.iter().map(|(k, v)| {
        (
            String::from_utf8_lossy(k).into_owned(),
            String::from_utf8_lossy(v).into_owned(),
        )
    }));
    keep
}

/// Runs `rules` in order over a sorted series in place; returns false if a rule dropped it.
/// As Prometheus' `labels.Builder`, labels with empty values are gone first, and a rule that
/// sets an empty value deletes the label. The set comes back sorted.
pub fn process_set(set: &mut LabelSet, rules: &[RelabelConfig], scratch: &mut Scratch) -> bool {
    if scratch.locs.len() < rules.len() {
        scratch.locs.resize_with(rules.len(), || None);
    }
    set.remove_empty();
    for (i, rule) in rules.iter().enumerate() {
        if !apply(set, rule, i, scratch) {
            return false;
        }
    }
    set.sort();
    true
}

fn as_str(b: &[u8]) -> &str {
    // Label names are ASCII and values were checked as UTF-8 by the parser; a value that is
    // not UTF-8 never reaches here, and would match as empty if it did.
    std::str::from_utf8(b).unwrap_or("")
}

fn apply(set: &mut LabelSet, rule: &RelabelConfig, index: usize, scratch: &mut Scratch) -> bool {
    scratch.value.clear();
    for (i, name) in rule.source_labels.iter().enumerate() {
        if i > 0 {
            scratch.value.extend_from_slice(rule.separator.as_bytes());
        }
        if let Some(v) = set.get(name.as_bytes()) {
            scratch.value.extend_from_slice(v);
        }
    }
    let value = as_str(&scratch.value);
    match rule.action {
        Action::Drop => return !rule.matches(value),
        Action::Keep => return rule.matches(value),
        Action::DropEqual => {
            return set.get(rule.target_label.as_bytes()).unwrap_or(b"") != value.as_bytes()
        }
        Action::KeepEqual => {
            return set.get(rule.target_label.as_bytes()).unwrap_or(b"") == value.as_bytes()
        }
        Action::Replace => {
            let locs = scratch.locs[index].get_or_insert_with(|| rule.regex.capture_locations());
            if rule.regex.captures_read(locs, value).is_none() {
                return true;
            }
            scratch.name.clear();
            expand(
                &rule.target_label,
                value,
                locs,
                &rule.regex,
                &mut scratch.name,
            );
            if !is_valid_label_name(as_str(&scratch.name)) {
                return true;
            }
            scratch.out.clear();
            expand(
                &rule.replacement,
                value,
                locs,
                &rule.regex,
                &mut scratch.out,
            );
            set.set_value(&scratch.name, &scratch.out);
        }
        Action::Lowercase | Action::Uppercase => {
            scratch.out.clear();
            let mut utf8 = [0u8; 4];
            let lower = rule.action == Action::Lowercase;
            for c in value.chars() {
                let m = simple_case(c, lower);
                scratch
                    .out
                    .extend_from_slice(m.encode_utf8(&mut utf8).as_bytes());
            }
            set.set_value(rule.target_label.as_bytes(), &scratch.out);
        }
        Action::HashMod => {
            let digest = md5(value.as_bytes());
            // As relabel.go: the last 8 bytes, big-endian, modulo `modulus`.
            let mut tail = [0u8; 8];
            tail.copy_from_slice(&digest[8..]);
            let m = u64::from_be_bytes(tail) % rule.modulus;
            scratch.out.clear();
            push_decimal(m, &mut scratch.out);
            set.set_value(rule.target_label.as_bytes(), &scratch.out);
        }
        Action::LabelMap => {
            // Prometheus ranges over the labels as they were when the rule started.
            scratch.snapshot.clear();
            scratch.snapshot.extend_from_slice(set.spans());
            let locs = scratch.locs[index].get_or_insert_with(|| rule.regex.capture_locations());
            for span in &scratch.snapshot {
                let name = as_str(set.slice(span.name));
                if rule.regex.captures_read(locs, name).is_none() {
                    continue;
                }
                // The regex is anchored, so ReplaceAllString is one expansion of the template.
                scratch.name.clear();
                expand(
                    &rule.replacement,
                    name,
                    locs,
                    &rule.regex,
                    &mut scratch.name,
                );
                scratch.out.clear();
                scratch.out.extend_from_slice(set.slice(span.value));
                set.set_value(&scratch.name, &scratch.out);
            }
        }
        Action::LabelDrop => set.retain_by_name(|name| !rule.matches(as_str(name))),
        Action::LabelKeep => set.retain_by_name(|name| rule.matches(as_str(name))),
    }
    true
}

fn push_decimal(mut n: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        // n % 10 < 10 always fits a byte.
        digits[i] = b'0' + u8::try_from(n % 10).unwrap_or(0);
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Go's `unicode.ToLower`/`ToUpper` on one rune (what `strings.ToLower`/`ToUpper` apply):
/// the *simple* case mapping, always one rune. Rust's mapping is the full one, which turns a
/// few runes into two (`ß` → `SS`, `İ` → `i̇`); for those the simple mapping is used instead.
pub fn simple_case(c: char, lower: bool) -> char {
    let mut full = if lower {
        CaseIter::Lower(c.to_lowercase())
    } else {
        CaseIter::Upper(c.to_uppercase())
    };
    let first = full.next().unwrap_or(c);
    if full.next().is_none() {
        return first;
    }
    let code = u32::from(c);
    let simple = match (lower, code) {
        // LATIN CAPITAL LETTER I WITH DOT ABOVE lowers to a plain `i`.
        (true, 0x130) => 0x69,
        // Greek vowels with ypogegrammeni: the simple uppercase is the prosgegrammeni form.
        (false, 0x1F80..=0x1FAF) if code & 0xF < 8 => code + 8,
        (false, 0x1FB3 | 0x1FC3 | 0x1FF3) => code + 9,
        // Everything else with only a multi-rune mapping (ß, ŉ, ǰ, ligatures, …) stays.
        _ => code,
    };
    char::from_u32(simple).unwrap_or(c)
}

enum CaseIter {
    Lower(std::char::ToLowercase),
    Upper(std::char::ToUppercase),
}

impl Iterator for CaseIter {
    type Item = char;
    fn next(&mut self) -> Option<char> {
        match self {
            CaseIter::Lower(it) => it.next(),
            CaseIter::Upper(it) => it.next(),
        }
    }
}

/// Go's `Regexp.Expand` over a match: `$1`, `${1}`, `$name`, `${name}` (the name as long as
/// possible: `$1x` is the group named `1x`), `$$` for a dollar; a malformed reference is kept
/// as text, an unknown or unmatched group expands to nothing.
pub fn expand(
    template: &str,
    haystack: &str,
    locs: &regex_lite::CaptureLocations,
    regex: &regex_lite::Regex,
    out: &mut Vec<u8>,
) {
    let mut rest = template;
    while let Some(dollar) = rest.find('$') {
        out.extend_from_slice(&rest.as_bytes()[..dollar]);
        rest = &rest[dollar + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push(b'$');
            rest = after;
            continue;
        }
        let Some((name, after)) = reference(rest) else {
            out.push(b'$');
            continue;
        };
        rest = after;
        let group = match group_number(name) {
            Some(n) => Some(n),
            None => regex.capture_names().position(|n| n == Some(name)),
        };
        if let Some((s, e)) = group.and_then(|g| locs.get(g)) {
            out.extend_from_slice(&haystack.as_bytes()[s..e]);
        }
    }
    out.extend_from_slice(rest.as_bytes());
}

/// Go's `extract`: a name of letters, digits and `_`, braced or not; `None` when malformed.
fn reference(s: &str) -> Option<(&str, &str)> {
    let (braced, body) = match s.strip_prefix('{') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let end = body
        .char_indices()
        .find(|(_, c)| !(c.is_alphanumeric() || *c == '_'))
        .map_or(body.len(), |(i, _)| i);
    if end == 0 {
        return None;
    }
    let name = &body[..end];
    if braced {
        let after = body[end..].strip_prefix('}')?;
        return Some((name, after));
    }
    Some((name, &body[end..]))
}

/// A purely numeric reference without leading zeros (Go's rule), below 1e8.
fn group_number(name: &str) -> Option<usize> {
    if !name.bytes().all(|b| b.is_ascii_digit()) || (name.len() > 1 && name.starts_with('0')) {
        return None;
    }
    let n: usize = name.parse().ok()?;
    (n < 100_000_000).then_some(n)
}

/// MD5 sine table (RFC 1321, `K[i] = floor(|sin(i + 1)| * 2^32)`).
const K: [u32; 64] = [
    0xd76a_a478,
    0xe8c7_b756,
    0x2420_70db,
    0xc1bd_ceee,
    0xf57c_0faf,
    0x4787_c62a,
    0xa830_4613,
    0xfd46_9501,
    0x6980_98d8,
    0x8b44_f7af,
    0xffff_5bb1,
    0x895c_d7be,
    0x6b90_1122,
    0xfd98_7193,
    0xa679_438e,
    0x49b4_0821,
    0xf61e_2562,
    0xc040_b340,
    0x265e_5a51,
    0xe9b6_c7aa,
    0xd62f_105d,
    0x0244_1453,
    0xd8a1_e681,
    0xe7d3_fbc8,
    0x21e1_cde6,
    0xc337_07d6,
    0xf4d5_0d87,
    0x455a_14ed,
    0xa9e3_e905,
    0xfcef_a3f8,
    0x676f_02d9,
    0x8d2a_4c8a,
    0xfffa_3942,
    0x8771_f681,
    0x6d9d_6122,
    0xfde5_380c,
    0xa4be_ea44,
    0x4bde_cfa9,
    0xf6bb_4b60,
    0xbebf_bc70,
    0x289b_7ec6,
    0xeaa1_27fa,
    0xd4ef_3085,
    0x0488_1d05,
    0xd9d4_d039,
    0xe6db_99e5,
    0x1fa2_7cf8,
    0xc4ac_5665,
    0xf429_2244,
    0x432a_ff97,
    0xab94_23a7,
    0xfc93_a039,
    0x655b_59c3,
    0x8f0c_cc92,
    0xffef_f47d,
    0x8584_5dd1,
    0x6fa8_7e4f,
    0xfe2c_e6e0,
    0xa301_4314,
    0x4e08_11a1,
    0xf753_7e82,
    0xbd3a_f235,
    0x2ad7_d2bb,
    0xeb86_d391,
];

const S: [u32; 64] = [
    7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9,
    14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10, 15,
    21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
];

fn md5_block(state: &mut [u32; 4], block: &[u8]) {
    let m: [u32; 16] = std::array::from_fn(|i| {
        u32::from_le_bytes([
            block[4 * i],
            block[4 * i + 1],
            block[4 * i + 2],
            block[4 * i + 3],
        ])
    });
    let [mut a, mut b, mut c, mut d] = *state;
    for i in 0..64 {
        let (f, g) = match i / 16 {
            0 => ((b & c) | (!b & d), i),
            1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
            2 => (b ^ c ^ d, (3 * i + 5) % 16),
            _ => (c ^ (b | !d), (7 * i) % 16),
        };
        let rotated = a
            .wrapping_add(f)
            .wrapping_add(K[i])
            .wrapping_add(m[g])
            .rotate_left(S[i]);
        a = d;
        d = c;
        c = b;
        b = b.wrapping_add(rotated);
    }
    for (s, v) in state.iter_mut().zip([a, b, c, d]) {
        *s = s.wrapping_add(v);
    }
}

/// MD5 (RFC 1321), only for `hashmod`, which must pick the same shard as Prometheus. Our own
/// code rather than a crate and its digest/generic-array tree; allocation-free.
pub fn md5(input: &[u8]) -> [u8; 16] {
    let mut state: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    let blocks = input.chunks_exact(64);
    let rest = blocks.remainder();
    for block in blocks {
        md5_block(&mut state, block);
    }
    let mut tail = [0u8; 128];
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    let total = if rest.len() < 56 { 64 } else { 128 };
    let bit_len = (input.len() as u64).wrapping_mul(8);
    tail[total - 8..total].copy_from_slice(&bit_len.to_le_bytes());
    for block in tail[..total].chunks_exact(64) {
        md5_block(&mut state, block);
    }
    let mut out = [0u8; 16];
    for (i, s) in state.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&s.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml;

    fn hex(d: [u8; 16]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn case_mapping_is_gos_simple_one() {
        let lower: String = "MiXeD-ÄÖÜ-İ-Σ-ẞ"
            .chars()
            .map(|c| simple_case(c, true))
            .collect();
        assert_eq!(lower, "mixed-äöü-i-σ-ß");
        let upper: String = "straße-ŉ-ﬀ-ᾀ-ᾳ-ᾈ-ǰ-µ"
            .chars()
            .map(|c| simple_case(c, false))
            .collect();
        assert_eq!(upper, "STRAßE-ŉ-ﬀ-ᾈ-ᾼ-ᾈ-ǰ-Μ");
    }

    #[test]
    fn md5_matches_rfc_1321_test_suite() {
        let cases = [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("a", "0cc175b9c0f1b6a831c399e269772661"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            (
                "abcdefghijklmnopqrstuvwxyz",
                "c3fcd3d76192e4007dfb496cca67e13b",
            ),
            (
                "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(hex(md5(input.as_bytes())), want, "{input:?}");
        }
    }

    fn rules(text: &str) -> Vec<RelabelConfig> {
        let node = yaml::parse(text).expect("yaml").expect("doc");
        crate::config::relabel::relabel_configs(&node, "r", "test").expect("valid rules")
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        let mut l: Labels = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        l.sort();
        l
    }

    #[test]
    fn replace_expands_groups_and_deletes_on_empty() {
        let r = rules(
            "- {source_labels: [__address__], regex: '(.*):\\d+', target_label: host, replacement: '${1}'}\n\
             - {source_labels: [nope], target_label: job}\n",
        );
        let mut l = labels(&[("__address__", "node-1:9100"), ("job", "node")]);
        assert!(process(&mut l, &r));
        assert_eq!(
            l,
            labels(&[("__address__", "node-1:9100"), ("host", "node-1")])
        );
    }

    #[test]
    fn keep_drop_and_equal_actions() {
        let mut l = labels(&[("a", "x"), ("b", "x")]);
        assert!(process(
            &mut l,
            &rules("- {source_labels: [a], regex: x, action: keep}\n")
        ));
        assert!(!process(
            &mut l,
            &rules("- {source_labels: [a], regex: x, action: drop}\n")
        ));
        assert!(!process(
            &mut l,
            &rules("- {source_labels: [a], target_label: b, action: dropequal}\n")
        ));
        assert!(process(
            &mut l,
            &rules("- {source_labels: [a], target_label: b, action: keepequal}\n")
        ));
    }

    #[test]
    fn labelmap_labeldrop_labelkeep_and_case() {
        let mut l = labels(&[("__meta_x", "1"), ("__meta_y", "2"), ("keep", "K")]);
        let r = rules(
            "- {regex: '__meta_(.*)', action: labelmap}\n\
             - {regex: '__meta_.*', action: labeldrop}\n\
             - {source_labels: [keep], target_label: low, action: lowercase}\n\
             - {regex: 'x|low', action: labelkeep}\n",
        );
        assert!(process(&mut l, &r));
        assert_eq!(l, labels(&[("low", "k"), ("x", "1")]));
    }

    #[test]
    fn hashmod_matches_prometheus() {
        // md5("abc") = 900150983cd24fb0 d6963f7d28e17f72: the shard is the tail mod 10.
        let r =
            rules("- {source_labels: [a], target_label: shard, modulus: 10, action: hashmod}\n");
        let mut l = labels(&[("a", "abc")]);
        assert!(process(&mut l, &r));
        let shard = l.iter().find(|(k, _)| k == "shard").map(|(_, v)| v.clone());
        assert_eq!(shard, Some((0xd696_3f7d_28e1_7f72u64 % 10).to_string()));
    }

    #[test]
    fn md5_pads_across_block_boundaries() {
        // 55, 56, 63, 64 and 65 bytes exercise every padding case; checked with Python's
        // hashlib.md5 when written.
        let cases = [
            (55, "ef1772b6dff9a122358552954ad0df65"),
            (56, "3b0c8ac703f828b04c6c197006d17218"),
            (63, "b06521f39153d618550606be297466d5"),
            (64, "014842d480b571495a4a0363793f7367"),
            (65, "c743a45e0d2e6a95cb859adae0248435"),
        ];
        for (n, want) in cases {
            assert_eq!(hex(md5(&vec![b'a'; n])), want, "{n} bytes");
        }
    }

    #[test]
    fn expand_follows_go_regexp_expand() {
        let re =
            crate::config::relabel::compile_anchored("(?P<host>[a-z]+)-(\\d+)").expect("valid");
        let mut locs = re.capture_locations();
        let hay = "node-42";
        assert!(re.captures_read(&mut locs, hay).is_some());
        let cases = [
            ("$1", "node"),
            ("${2}x", "42x"),
            ("$2x", ""),
            ("$host:$2", "node:42"),
            ("${host}", "node"),
            ("$$1", "$1"),
            ("$", "$"),
            ("a$-b", "a$-b"),
            ("${1", "${1"),
            ("$01", ""),
            ("$9", ""),
            ("plain", "plain"),
        ];
        for (template, want) in cases {
            let mut out = Vec::new();
            expand(template, hay, &locs, &re, &mut out);
            assert_eq!(String::from_utf8_lossy(&out), want, "{template}");
        }
    }
}
