//! Applying relabel rules, with Prometheus 2.42's semantics (`model/relabel/relabel.go`).
//!
//! This is the target-time path: `relabel_configs` run once per target when targets are built
//! (and by `check config`, as promtool does), over an owned, sorted label list. The per-sample
//! path for `metric_relabel_configs` — in place over the scrape's label arena, allocation-free
//! when nothing is rewritten — comes with issue 4 and must agree with this one.

use crate::config::relabel::{is_valid_label_name, Action, RelabelConfig};

/// A label set: `(name, value)` pairs sorted by name, no empty values.
pub type Labels = Vec<(String, String)>;

fn get<'a>(labels: &'a Labels, name: &str) -> &'a str {
    labels
        .binary_search_by(|(k, _)| k.as_str().cmp(name))
        .map_or("", |i| labels[i].1.as_str())
}

/// Sets `name` to `value`; an empty value deletes the label (Prometheus' `Builder.Set`).
fn set(labels: &mut Labels, name: &str, value: String) {
    match labels.binary_search_by(|(k, _)| k.as_str().cmp(name)) {
        Ok(i) if value.is_empty() => {
            labels.remove(i);
        }
        Ok(i) => labels[i].1 = value,
        Err(_) if value.is_empty() => {}
        Err(i) => labels.insert(i, (name.to_owned(), value)),
    }
}

/// Runs `rules` over `labels` in order. Returns false if a rule dropped the whole set.
pub fn process(labels: &mut Labels, rules: &[RelabelConfig]) -> bool {
    rules.iter().all(|rule| apply(labels, rule))
}

fn apply(labels: &mut Labels, rule: &RelabelConfig) -> bool {
    let value = rule
        .source_labels
        .iter()
        .map(|name| get(labels, name))
        .collect::<Vec<_>>()
        .join(&rule.separator);
    match rule.action {
        Action::Drop => return !rule.regex.is_match(&value),
        Action::Keep => return rule.regex.is_match(&value),
        Action::DropEqual => return get(labels, &rule.target_label) != value,
        Action::KeepEqual => return get(labels, &rule.target_label) == value,
        Action::Replace => {
            let Some(caps) = rule.regex.captures(&value) else {
                return true;
            };
            let mut target = String::new();
            caps.expand(&rule.target_label, &mut target);
            if !is_valid_label_name(&target) {
                return true;
            }
            let mut res = String::new();
            caps.expand(&rule.replacement, &mut res);
            set(labels, &target, res);
        }
        Action::Lowercase => set(labels, &rule.target_label, value.to_lowercase()),
        Action::Uppercase => set(labels, &rule.target_label, value.to_uppercase()),
        Action::HashMod => {
            let digest = md5(value.as_bytes());
            // As relabel.go: the last 8 bytes, big-endian, modulo `modulus`.
            let mut tail = [0u8; 8];
            tail.copy_from_slice(&digest[8..]);
            let m = u64::from_be_bytes(tail) % rule.modulus;
            set(labels, &rule.target_label, m.to_string());
        }
        Action::LabelMap => {
            let snapshot = labels.clone();
            for (name, v) in &snapshot {
                if rule.regex.is_match(name) {
                    let new_name = rule.regex.replace_all(name, rule.replacement.as_str());
                    set(labels, &new_name, v.clone());
                }
            }
        }
        Action::LabelDrop => labels.retain(|(name, _)| !rule.regex.is_match(name)),
        Action::LabelKeep => labels.retain(|(name, _)| rule.regex.is_match(name)),
    }
    true
}

/// MD5 (RFC 1321), only for `hashmod`, which must pick the same shard as Prometheus. Our own
/// 40 lines rather than a crate and its digest/generic-array tree.
pub fn md5(input: &[u8]) -> [u8; 16] {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    // K[i] = floor(abs(sin(i + 1)) * 2^32), as tabulated in RFC 1321.
    let k: [u32; 64] = std::array::from_fn(|i| {
        let i = u32::try_from(i).expect("i < 64");
        let x = (f64::from(i + 1).sin().abs() * 4_294_967_296.0).floor();
        truncate_u32(x)
    });
    let mut state: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    let mut msg = input.to_vec();
    let bit_len = (input.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_le_bytes());
    for block in msg.chunks_exact(64) {
        let m: [u32; 16] = std::array::from_fn(|i| {
            u32::from_le_bytes([
                block[4 * i],
                block[4 * i + 1],
                block[4 * i + 2],
                block[4 * i + 3],
            ])
        });
        let [mut a, mut b, mut c, mut d] = state;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let rotated = a
                .wrapping_add(f)
                .wrapping_add(k[i])
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
    let mut out = [0u8; 16];
    for (i, s) in state.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&s.to_le_bytes());
    }
    out
}

// The sine table values are below 2^32 by construction.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn truncate_u32(x: f64) -> u32 {
    x as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml;

    fn hex(d: [u8; 16]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
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
        assert_eq!(
            get(&l, "shard"),
            (0xd696_3f7d_28e1_7f72u64 % 10).to_string()
        );
    }
}
