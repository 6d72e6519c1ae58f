//! One relabel rule as written in `relabel_configs`, `metric_relabel_configs` and
//! `write_relabel_configs`, validated as Prometheus 2.42's `model/relabel.Config` does.
//!
//! Applying rules is `crate::relabel`'s job (issue 4); this module only decides what loads.

use super::http::unknown;
use super::yaml::{index, join, Located, Node};

/// The eleven relabel actions of Prometheus 2.42.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Set `target_label` to the expanded `replacement` when `regex` matches.
    Replace,
    /// Keep the series/target when `regex` matches the joined source labels.
    Keep,
    /// Drop it when `regex` matches.
    Drop,
    /// Keep it when the joined source labels equal `target_label`'s value.
    KeepEqual,
    /// Drop it when they are equal.
    DropEqual,
    /// Set `target_label` to a hash of the source labels modulo `modulus`.
    HashMod,
    /// Copy labels whose name matches `regex` to the expanded `replacement` name.
    LabelMap,
    /// Remove labels whose name matches `regex`.
    LabelDrop,
    /// Remove labels whose name does not match `regex`.
    LabelKeep,
    /// Set `target_label` to the lowercased source value.
    Lowercase,
    /// Set `target_label` to the uppercased source value.
    Uppercase,
}

impl Action {
    fn parse(text: &str) -> Option<Action> {
        Some(match text.to_ascii_lowercase().as_str() {
            "replace" => Action::Replace,
            "keep" => Action::Keep,
            "drop" => Action::Drop,
            "keepequal" => Action::KeepEqual,
            "dropequal" => Action::DropEqual,
            "hashmod" => Action::HashMod,
            "labelmap" => Action::LabelMap,
            "labeldrop" => Action::LabelDrop,
            "labelkeep" => Action::LabelKeep,
            "lowercase" => Action::Lowercase,
            "uppercase" => Action::Uppercase,
            _ => return None,
        })
    }

    /// The action's name as Prometheus spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Replace => "replace",
            Action::Keep => "keep",
            Action::Drop => "drop",
            Action::KeepEqual => "keepequal",
            Action::DropEqual => "dropequal",
            Action::HashMod => "hashmod",
            Action::LabelMap => "labelmap",
            Action::LabelDrop => "labeldrop",
            Action::LabelKeep => "labelkeep",
            Action::Lowercase => "lowercase",
            Action::Uppercase => "uppercase",
        }
    }
}

/// A validated relabel rule. The regex is compiled anchored (`^(?:re)$`) as Prometheus does.
#[derive(Debug, Clone)]
pub struct RelabelConfig {
    /// Labels whose values are joined with `separator` and matched.
    pub source_labels: Vec<String>,
    /// Joins the source values (default `;`).
    pub separator: String,
    /// The regex as written (default `(.*)`).
    pub regex_text: String,
    /// The anchored, compiled regex.
    pub regex: regex_lite::Regex,
    /// A shortcut for matching (not capturing) when the regex is `.*`, literals or a literal
    /// prefix: most keep, drop, labeldrop and labelkeep rules.
    pub fast: FastMatch,
    /// Divisor for `hashmod`.
    pub modulus: u64,
    /// Label written by replace, hashmod, lowercase, uppercase; compared by keepequal/dropequal.
    pub target_label: String,
    /// Expansion template (default `$1`).
    pub replacement: String,
    /// What the rule does.
    pub action: Action,
}

impl PartialEq for RelabelConfig {
    fn eq(&self, other: &Self) -> bool {
        self.source_labels == other.source_labels
            && self.separator == other.separator
            && self.regex_text == other.regex_text
            && self.modulus == other.modulus
            && self.target_label == other.target_label
            && self.replacement == other.replacement
            && self.action == other.action
    }
}

/// How a rule's regex can be matched without running it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FastMatch {
    /// `.*` or `(.*)`: any value without a newline (`.` does not match one).
    Any,
    /// `lit.*`: values starting with `lit`, the rest without a newline.
    Prefix(String),
    /// `a|b|c`: exactly one of the literals.
    Literals(Vec<String>),
    /// Anything else: run the regex.
    Regex,
}

impl FastMatch {
    /// The shortcut for a regex as written (before anchoring).
    pub fn of(re: &str) -> FastMatch {
        // Characters with no meaning in RE2 syntax outside a class; `(?flags)` and escapes
        // are left to the regex.
        let literal = |t: &str| !t.contains(|c| "\\.+*?()|[]{}^$".contains(c));
        if re == ".*" || re == "(.*)" {
            FastMatch::Any
        } else if let Some(prefix) = re.strip_suffix(".*").filter(|p| literal(p)) {
            FastMatch::Prefix(prefix.to_owned())
        } else if re.split('|').all(literal) {
            FastMatch::Literals(re.split('|').map(str::to_owned).collect())
        } else {
            FastMatch::Regex
        }
    }
}

impl RelabelConfig {
    /// Whether the anchored regex matches `value`, by the shortcut when there is one.
    pub fn matches(&self, value: &str) -> bool {
        match &self.fast {
            FastMatch::Any => !value.contains('\n'),
            FastMatch::Prefix(p) => value
                .strip_prefix(p.as_str())
                .is_some_and(|rest| !rest.contains('\n')),
            FastMatch::Literals(l) => l.iter().any(|lit| lit == value),
            FastMatch::Regex => self.regex.is_match(value),
        }
    }
}

/// Prometheus' label name rule (2.42, before UTF-8 names): `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Prometheus' `relabelTarget`: a label name that may contain `$1`, `${name}` references.
fn is_valid_relabel_target(s: &str) -> bool {
    // ^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$ — written out by hand: a sequence of pieces,
    // each a letter/underscore, or `$` followed by `{word}` or a word, or a word character
    // after the first piece.
    let b = s.as_bytes();
    if b.is_empty() {
        return false;
    }
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    let mut started = false;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_alphabetic() || c == b'_' {
            i += 1;
        } else if c == b'$' {
            if b.get(i + 1) == Some(&b'{') {
                let close = b[i + 2..].iter().position(|&x| x == b'}');
                match close {
                    Some(n) if n > 0 && b[i + 2..i + 2 + n].iter().all(|&x| word(x)) => {
                        i += n + 3;
                    }
                    _ => return false,
                }
            } else {
                let n = b[i + 1..].iter().take_while(|&&x| word(x)).count();
                if n == 0 {
                    return false;
                }
                i += n + 1;
            }
        } else if started && c.is_ascii_digit() {
            i += 1;
        } else {
            return false;
        }
        started = true;
    }
    true
}

/// Compiles `re` the way Prometheus does: fully anchored, RE2 syntax (as regex-lite reads it).
pub fn compile_anchored(re: &str) -> Result<regex_lite::Regex, String> {
    regex_lite::Regex::new(&format!("^(?:{re})$")).map_err(|e| {
        format!(
            "error parsing regexp {re:?}: {}",
            first_line(&e.to_string())
        )
    })
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}

/// Decodes a list of relabel rules; `what` names the list for Prometheus' null-rule message.
pub fn relabel_configs(node: &Node, key: &str, what: &str) -> Result<Vec<RelabelConfig>, Located> {
    let mut out = Vec::new();
    for (i, item) in node.items(key)?.iter().enumerate() {
        let k = index(key, i);
        if item.is_null() {
            return Err(Located::new(
                item.line,
                &k,
                format!("empty or null {what} relabeling rule"),
            ));
        }
        out.push(relabel_config(item, &k)?);
    }
    Ok(out)
}

fn relabel_config(node: &Node, key: &str) -> Result<RelabelConfig, Located> {
    let mut source_labels: Option<Vec<String>> = None;
    let mut separator = ";".to_owned();
    let mut regex_text: Option<String> = None;
    let mut modulus = 0;
    let mut target_label = String::new();
    let mut replacement = "$1".to_owned();
    let mut action = Some(Action::Replace);
    for (name, value) in node.entries(key)? {
        let k = join(key, name);
        match name {
            "source_labels" => {
                let mut names = Vec::new();
                for (i, item) in value.items(&k)?.iter().enumerate() {
                    let label = item.string(&index(&k, i))?;
                    if !item.is_null() && !is_valid_label_name(&label) {
                        return Err(Located::new(
                            item.line,
                            &index(&k, i),
                            format!("{label:?} is not a valid label name"),
                        ));
                    }
                    names.push(label);
                }
                source_labels = if value.is_null() { None } else { Some(names) };
            }
            "separator" => separator = value.string(&k)?,
            "regex" => regex_text = Some(value.string(&k)?),
            "modulus" => modulus = value.unsigned(&k)?,
            "target_label" => target_label = value.string(&k)?,
            "replacement" => replacement = value.string(&k)?,
            "action" => {
                let text = value.string(&k)?;
                if value.is_null() {
                    action = None;
                } else {
                    action = Some(Action::parse(&text).ok_or_else(|| {
                        Located::new(value.line, &k, format!("unknown relabel action {text:?}"))
                    })?);
                }
            }
            _ => return Err(unknown(value.line, &k)),
        }
    }
    let err = |reason: String| Located::new(node.line, key, reason);
    let Some(action) = action else {
        return Err(err("relabel action cannot be empty".to_owned()));
    };
    let regex_given = regex_text.is_some();
    let regex_text = regex_text.unwrap_or_else(|| "(.*)".to_owned());
    let regex = compile_anchored(&regex_text).map_err(err)?;
    let a = action.as_str();
    use Action::{
        DropEqual, HashMod, KeepEqual, LabelDrop, LabelKeep, LabelMap, Lowercase, Replace,
        Uppercase,
    };
    if modulus == 0 && action == HashMod {
        return Err(err(
            "relabel configuration for hashmod requires non-zero modulus".to_owned(),
        ));
    }
    let writes_target = matches!(
        action,
        Replace | HashMod | Lowercase | Uppercase | KeepEqual | DropEqual
    );
    if writes_target && target_label.is_empty() {
        return Err(err(format!(
            "relabel configuration for {a} action requires 'target_label' value"
        )));
    }
    let strict_target = matches!(action, Lowercase | Uppercase | KeepEqual | DropEqual);
    if (matches!(action, Replace) || strict_target) && !is_valid_relabel_target(&target_label) {
        return Err(err(format!(
            "{target_label:?} is invalid 'target_label' for {a} action"
        )));
    }
    if (strict_target || action == HashMod) && !is_valid_label_name(&target_label) {
        return Err(err(format!(
            "{target_label:?} is invalid 'target_label' for {a} action"
        )));
    }
    if strict_target && replacement != "$1" {
        return Err(err(format!("'replacement' can not be set for {a} action")));
    }
    if action == LabelMap && !is_valid_relabel_target(&replacement) {
        return Err(err(format!(
            "{replacement:?} is invalid 'replacement' for {a} action"
        )));
    }
    if matches!(action, KeepEqual | DropEqual)
        && (regex_given || modulus != 0 || separator != ";" || replacement != "$1")
    {
        return Err(err(format!(
            "{a} action requires only 'source_labels' and `target_label`, and no other fields"
        )));
    }
    if matches!(action, LabelDrop | LabelKeep)
        && (source_labels.is_some()
            || !target_label.is_empty()
            || modulus != 0
            || separator != ";"
            || replacement != "$1")
    {
        return Err(err(format!(
            "{a} action requires only 'regex', and no other fields"
        )));
    }
    Ok(RelabelConfig {
        source_labels: source_labels.unwrap_or_default(),
        separator,
        fast: FastMatch::of(&regex_text),
        regex_text,
        regex,
        modulus,
        target_label,
        replacement,
        action,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_matching_agrees_with_the_regex() {
        let regexes = [
            ".*",
            "(.*)",
            "go_.*",
            "id|image",
            "a",
            "",
            "a|",
            "node-exporter|kube:x",
            "ü.*",
            "a.b",
            "(a)",
            "a+",
            "(?i)a",
            "a\\.b",
            "[a]",
            "x.*y",
            "a|b.*",
        ];
        let values = [
            "",
            "a",
            "A",
            "id",
            "image",
            "images",
            "go_",
            "go_gc",
            "go_gc\nx",
            "\n",
            "x\ny",
            "node-exporter",
            "kube:x",
            "ü",
            "üx",
            "a.b",
            "axb",
            "a|",
            "ab",
            "xzy",
        ];
        let mut fast = 0;
        for re in regexes {
            let fm = FastMatch::of(re);
            if fm != FastMatch::Regex {
                fast += 1;
            }
            let rule = RelabelConfig {
                source_labels: vec![],
                separator: ";".into(),
                regex_text: re.into(),
                regex: compile_anchored(re).expect("valid"),
                fast: fm,
                modulus: 0,
                target_label: String::new(),
                replacement: "$1".into(),
                action: Action::Drop,
            };
            for v in values {
                assert_eq!(rule.matches(v), rule.regex.is_match(v), "{re:?} on {v:?}");
            }
        }
        assert_eq!(fast, 9, "the shortcut covers the plain shapes");
    }

    #[test]
    fn relabel_targets_follow_prometheus_pattern() {
        for ok in [
            "a", "_a", "a1", "${1}", "$1", "foo_$1", "$1_bar", "${name}x", "a$b",
        ] {
            assert!(is_valid_relabel_target(ok), "{ok}");
        }
        for bad in ["", "1a", "a-b", "${}", "$", "a.b", "${1", "a b"] {
            assert!(!is_valid_relabel_target(bad), "{bad}");
        }
    }

    #[test]
    fn label_names() {
        assert!(is_valid_label_name("__name__"));
        assert!(is_valid_label_name("a1"));
        assert!(!is_valid_label_name("1a"));
        assert!(!is_valid_label_name(""));
        assert!(!is_valid_label_name("a.b"));
    }

    #[test]
    fn regexes_are_anchored() {
        let re = compile_anchored("a|b").expect("valid");
        assert!(re.is_match("a"));
        assert!(!re.is_match("ab"));
        assert!(compile_anchored("(").is_err());
    }
}
