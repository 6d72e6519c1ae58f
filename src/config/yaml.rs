//! YAML as Prometheus reads it: a located node tree, and typed decoding with Go yaml.v2's rules.
//!
//! Prometheus decodes `prometheus.yml` with `gopkg.in/yaml.v2` in strict mode. What that means,
//! and what this module reproduces:
//! - YAML 1.1 scalars: plain `yes`/`no`/`on`/`off`/`y`/`n` are booleans, `0x1f` and `017` are
//!   integers, `~`/`null`/empty are null. A quoted scalar is always a string.
//! - A string field takes the raw text of any scalar (`a: 123` gives "123"); a null sets the
//!   field's zero value (not its default).
//! - Anchors, aliases and `<<` merge keys; explicit keys win over merged ones.
//! - Strict mode: an unknown key and a key given twice in one mapping are errors.
//!
//! We build our own small tree from saphyr-parser's events rather than deserialising with serde:
//! every node keeps its line, so every error can say `file:line: key.path: reason`, and scalar
//! resolution follows yaml.v2 (YAML 1.1) instead of a YAML 1.2 core schema. Rejected: serde-saphyr
//! (350 KB, errors without our key path) and the libyaml ports (no merge keys, no `yes` booleans).

use saphyr_parser::{Event, Parser, ScalarStyle};

/// Most nodes one document may expand to, aliases included. A real prometheus.yml has a few
/// thousand; the cap stops an alias bomb ("billion laughs") from exhausting memory.
const MAX_NODES: usize = 1 << 20;
/// Nodes aliases may copy whatever the document's size: enough for a config that reuses a
/// 300-node relabel block in 200 jobs. Together with [`ALIAS_RATIO`] this is our version of
/// yaml.v3's alias-ratio check (`allowedAliasRatio` in decode.go), which yaml.v2 lacks: a
/// document whose aliases copy far more than it writes is a bomb, refused while the copies
/// are still small (65,536 nodes, about 5 MiB), where [`MAX_NODES`] alone let a ten-line
/// bomb build a million-node tree (hundreds of MiB, and the heap fragmented after it).
const ALIAS_FLOOR: usize = 1 << 16;
/// Past [`ALIAS_FLOOR`], aliases may copy at most this many nodes per node written in the
/// text: a large config that anchors generously stays within it, a bomb (each level
/// copying the one before ten times) does not.
const ALIAS_RATIO: usize = 16;

/// One YAML node with the 1-based line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// What the node holds.
    pub kind: Kind,
    /// 1-based line of the node's first character.
    pub line: u32,
}

/// The content of a [`Node`].
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A scalar: its text, and whether it was written plain (only plain scalars resolve to
    /// null, booleans and numbers).
    Scalar {
        /// The scalar's text, escapes resolved.
        text: String,
        /// Written without quotes (and without a `!!str` tag).
        plain: bool,
    },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in document order, merge keys not yet applied (see [`Node::entries`]).
    Map(Vec<(Node, Node)>),
}

/// A located decoding error; [`super::ConfigError`] adds the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// 1-based line the error points at.
    pub line: u32,
    /// Key path, e.g. `scrape_configs[0].relabel_configs[1].regex`.
    pub key: String,
    /// What is wrong, lowercase, no trailing period.
    pub reason: String,
}

impl Located {
    /// An error at `line` for `key`.
    pub fn new(line: u32, key: &str, reason: impl Into<String>) -> Self {
        Located {
            line,
            key: key.to_owned(),
            reason: reason.into(),
        }
    }
}

/// A YAML syntax error (the document could not be parsed at all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub col: u32,
    /// The parser's message.
    pub reason: String,
}

/// Parses the first document of `text` into a node tree; `Ok(None)` for an empty document.
///
/// Aliases are expanded (copied), as yaml.v2 does. The document is read twice: a first pass
/// counts the nodes the tree would have and refuses it past `MAX_NODES`, or when aliases
/// copy more than `ALIAS_FLOOR` and `ALIAS_RATIO` allow, before anything is built; only then
/// is the tree built. A refused bomb so costs the parser's own state, never a tree: building
/// even a capped tree and dropping it left glibc's heap fragmented, several MiB that a
/// long-running agent never got back. Allocates the tree; called at start and on reload only.
pub fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    let text = normalize_tabs(text)?;
    measure(&text)?;
    let mut builder = Builder {
        parser: Parser::new_from_str(&text),
        anchors: Vec::new(),
    };
    builder.document()
}

/// Walks the first document of `text` counting the nodes [`parse`] would build, aliases'
/// copies included, and refuses it as [`Budget`] says. Allocates one `(anchor, size)` pair
/// per anchor and one entry per open collection, nothing per node.
/// Returns the count.
fn measure(text: &str) -> Result<usize, SyntaxError> {
    let mut parser = Parser::new_from_str(text);
    let mut budget = Budget::default();
    // Anchor id → the node count of what it names (latest definition last).
    let mut sizes: Vec<(usize, usize)> = Vec::new();
    // Open collections: their anchor and the node count when they started.
    let mut open: Vec<(usize, usize)> = Vec::new();
    loop {
        let (ev, span) = next_event(&mut parser)?;
        let line = line_of(&span);
        match ev {
            Event::DocumentEnd | Event::StreamEnd => return Ok(budget.nodes),
            Event::Scalar(_, _, anchor, _) => {
                budget.written(line)?;
                if anchor > 0 {
                    sizes.push((anchor, 1));
                }
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                budget.written(line)?;
                open.push((anchor, budget.nodes - 1));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((anchor, start)) = open.pop() {
                    if anchor > 0 {
                        sizes.push((anchor, budget.nodes - start));
                    }
                }
            }
            Event::Alias(id) => {
                let Some(&(_, size)) = sizes.iter().rev().find(|(a, _)| *a == id) else {
                    return Err(unknown_anchor(line));
                };
                budget.copied(line, size)?;
            }
            Event::Nothing | Event::StreamStart | Event::DocumentStart(_) => {}
        }
    }
}

/// What one document may build: [`MAX_NODES`] in all, and alias copies within
/// `max(ALIAS_FLOOR, ALIAS_RATIO × nodes written)`.
#[derive(Debug, Default)]
struct Budget {
    /// Nodes so far, aliases' copies included.
    nodes: usize,
    /// Of `nodes`, those copied by aliases.
    aliased: usize,
}

impl Budget {
    /// One node written in the text, at `line`.
    fn written(&mut self, line: u32) -> Result<(), SyntaxError> {
        self.add(line, 1)
    }

    /// `size` nodes an alias at `line` copies.
    fn copied(&mut self, line: u32, size: usize) -> Result<(), SyntaxError> {
        let written = self.nodes - self.aliased;
        self.aliased = self.aliased.saturating_add(size);
        let limit = ALIAS_FLOOR.max(written.saturating_mul(ALIAS_RATIO));
        if self.aliased > limit {
            return Err(SyntaxError {
                line,
                col: 1,
                reason: format!(
                    "aliases expand to more than {limit} nodes ({written} nodes written)"
                ),
            });
        }
        self.add(line, size)
    }

    fn add(&mut self, line: u32, n: usize) -> Result<(), SyntaxError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(SyntaxError {
                line,
                col: 1,
                reason: format!("document expands to more than {MAX_NODES} nodes"),
            });
        }
        Ok(())
    }
}

fn unknown_anchor(line: u32) -> SyntaxError {
    SyntaxError {
        line,
        col: 1,
        reason: "unknown anchor".to_owned(),
    }
}

/// The parser's next event, its error located, or the end of input as an error.
fn next_event<'a>(
    parser: &mut Parser<'a, saphyr_parser::StrInput<'a>>,
) -> Result<(Event<'a>, saphyr_parser::Span), SyntaxError> {
    match parser.next_event() {
        Some(Ok(ev)) => Ok(ev),
        Some(Err(e)) => Err(SyntaxError {
            line: u32::try_from(e.marker().line()).unwrap_or(u32::MAX),
            col: u32::try_from(e.marker().col() + 1).unwrap_or(u32::MAX),
            reason: e.info().to_owned(),
        }),
        None => Err(SyntaxError {
            line: 0,
            col: 0,
            reason: "unexpected end of input".to_owned(),
        }),
    }
}

/// Brings tabs to libyaml's (and so yaml.v2's) rules before saphyr, a YAML 1.2 parser, reads
/// the text: a tab in block indentation is refused ("found character that cannot start any
/// token"), and a tab after a mapping colon (`key:<TAB>value`), which libyaml reads as white
/// space and saphyr refuses, becomes a space (same width, so columns stay right). Lines inside
/// a block scalar (`|`, `>`) are content and left alone.
fn normalize_tabs(text: &str) -> Result<std::borrow::Cow<'_, str>, SyntaxError> {
    if !text.contains('\t') {
        return Ok(std::borrow::Cow::Borrowed(text));
    }
    let mut out = String::with_capacity(text.len());
    let mut block_scalar_indent: Option<usize> = None;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let indent = line.len() - line.trim_start_matches([' ', '\t']).len();
        let content = line[indent..].trim_end_matches(['\n', '\r']);
        if content.is_empty() {
            out.push_str(line);
            continue;
        }
        if let Some(parent) = block_scalar_indent {
            if indent > parent {
                out.push_str(line);
                continue;
            }
            block_scalar_indent = None;
        }
        if content.starts_with('#') && !line[..indent].contains('\t') {
            out.push_str(line);
            continue;
        }
        if line[..indent].contains('\t') {
            return Err(SyntaxError {
                line: u32::try_from(i + 1).unwrap_or(u32::MAX),
                col: 1,
                reason: "found character that cannot start any token (a tab in indentation)"
                    .to_owned(),
            });
        }
        let body = content.split(" #").next().unwrap_or("").trim_end();
        let header = body.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-' || c == '+');
        if header.ends_with('|') || header.ends_with('>') {
            block_scalar_indent = Some(indent);
        }
        out.push_str(&line[..indent]);
        let mut quote: Option<char> = None;
        let mut prev = ' ';
        for c in line[indent..].chars() {
            match (quote, c) {
                (None, '\'' | '"') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, '#') if prev == ' ' => quote = Some('\n'),
                _ => {}
            }
            if c == '\t' && prev == ':' && quote.is_none() {
                out.push(' ');
            } else {
                out.push(c);
            }
            prev = c;
        }
    }
    Ok(std::borrow::Cow::Owned(out))
}

/// Builds the tree of a document [`measure`] has accepted, so within its caps.
struct Builder<'a> {
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    /// Anchored nodes by anchor id (saphyr numbers anchors from 1).
    anchors: Vec<(usize, Node)>,
}

/// What one event contributed while building a node.
enum Step {
    Node(Node),
    SeqEnd,
    MapEnd,
    DocEnd,
}

fn line_of(span: &saphyr_parser::Span) -> u32 {
    u32::try_from(span.start.line()).unwrap_or(u32::MAX)
}

impl<'a> Builder<'a> {
    fn next(&mut self) -> Result<(Event<'a>, saphyr_parser::Span), SyntaxError> {
        next_event(&mut self.parser)
    }

    fn document(&mut self) -> Result<Option<Node>, SyntaxError> {
        loop {
            let (ev, _) = self.next()?;
            match ev {
                Event::StreamStart | Event::Nothing => {}
                Event::StreamEnd => return Ok(None),
                Event::DocumentStart(_) => break,
                _ => {}
            }
        }
        match self.step()? {
            Step::Node(n) => Ok(Some(n)),
            Step::DocEnd => Ok(None),
            Step::SeqEnd | Step::MapEnd => Err(SyntaxError {
                line: 0,
                col: 0,
                reason: "unbalanced document".to_owned(),
            }),
        }
    }

    fn step(&mut self) -> Result<Step, SyntaxError> {
        let (ev, span) = self.next()?;
        let line = line_of(&span);
        let (node, anchor) = match ev {
            Event::DocumentEnd | Event::StreamEnd => return Ok(Step::DocEnd),
            Event::SequenceEnd => return Ok(Step::SeqEnd),
            Event::MappingEnd => return Ok(Step::MapEnd),
            Event::Alias(id) => {
                let Some((_, node)) = self.anchors.iter().rev().find(|(a, _)| *a == id) else {
                    return Err(unknown_anchor(line));
                };
                return Ok(Step::Node(node.clone()));
            }
            Event::Scalar(text, style, anchor, tag) => {
                // An explicit `!!str` makes a plain scalar a string, as a quote would.
                let tagged_str = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let plain = style == ScalarStyle::Plain && !tagged_str;
                let node = Node {
                    kind: Kind::Scalar {
                        text: text.into_owned(),
                        plain,
                    },
                    line,
                };
                (node, anchor)
            }
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                loop {
                    match self.step()? {
                        Step::Node(n) => items.push(n),
                        Step::SeqEnd => break,
                        Step::MapEnd | Step::DocEnd => {
                            return Err(SyntaxError {
                                line,
                                col: 1,
                                reason: "unterminated sequence".to_owned(),
                            })
                        }
                    }
                }
                (
                    Node {
                        kind: Kind::Seq(items),
                        line,
                    },
                    anchor,
                )
            }
            Event::MappingStart(anchor, _) => {
                let mut entries = Vec::new();
                loop {
                    let key = match self.step()? {
                        Step::Node(n) => n,
                        Step::MapEnd => break,
                        Step::SeqEnd | Step::DocEnd => {
                            return Err(SyntaxError {
                                line,
                                col: 1,
                                reason: "unterminated mapping".to_owned(),
                            })
                        }
                    };
                    let Step::Node(value) = self.step()? else {
                        return Err(SyntaxError {
                            line: key.line,
                            col: 1,
                            reason: "mapping key without value".to_owned(),
                        });
                    };
                    entries.push((key, value));
                }
                (
                    Node {
                        kind: Kind::Map(entries),
                        line,
                    },
                    anchor,
                )
            }
            Event::Nothing | Event::StreamStart | Event::DocumentStart(_) => {
                return Err(SyntaxError {
                    line,
                    col: 1,
                    reason: "unexpected document start".to_owned(),
                })
            }
        };
        if anchor > 0 {
            self.anchors.push((anchor, node.clone()));
        }
        Ok(Step::Node(node))
    }
}

/// A plain scalar resolved the way yaml.v2 resolves untagged YAML 1.1 scalars.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Resolved<'a> {
    /// `~`, `null`, `Null`, `NULL`, or nothing.
    Null,
    /// `true`/`yes`/`on`/`y` and their negatives, in yaml.v2's spellings.
    Bool(bool),
    /// An integer that fits i64.
    Int(i64),
    /// An integer above i64::MAX that fits u64.
    Uint(u64),
    /// A float (`1.5`, `1e3`, `.inf`, `.nan`).
    Float(f64),
    /// Anything else, and every quoted scalar.
    Str(&'a str),
}

impl Node {
    /// Resolves a scalar; `None` for sequences and mappings.
    pub fn resolve(&self) -> Option<Resolved<'_>> {
        match &self.kind {
            Kind::Scalar { text, plain: true } => Some(resolve_plain(text)),
            Kind::Scalar { text, plain: false } => Some(Resolved::Str(text)),
            Kind::Seq(_) | Kind::Map(_) => None,
        }
    }

    /// True for a null scalar (which decodes to a zero value).
    pub fn is_null(&self) -> bool {
        matches!(self.resolve(), Some(Resolved::Null))
    }

    /// The YAML kind, for error messages: "a mapping", "a sequence", "a string", ….
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Seq(_) => "a sequence".to_owned(),
            Kind::Map(_) => "a mapping".to_owned(),
            Kind::Scalar { text, .. } => format!("{:?}", excerpt(text)),
        }
    }

    /// The entries of a mapping with `<<` merge keys applied: explicit keys first (a key given
    /// twice is an error, as in yaml.v2's strict mode), then merged keys that are not already
    /// present (from a sequence of merged mappings, the first one wins). A null node is an
    /// empty mapping.
    pub fn entries<'n>(&'n self, key: &str) -> Result<Vec<(&'n str, &'n Node)>, Located> {
        let mut out: Vec<(&'n str, &'n Node)> = Vec::new();
        self.collect_entries(key, &mut out, true)?;
        Ok(out)
    }

    fn collect_entries<'n>(
        &'n self,
        key: &str,
        out: &mut Vec<(&'n str, &'n Node)>,
        explicit: bool,
    ) -> Result<(), Located> {
        let entries = match &self.kind {
            Kind::Map(entries) => entries,
            _ if self.is_null() => return Ok(()),
            _ => {
                return Err(Located::new(
                    self.line,
                    key,
                    format!("expected a mapping, got {}", self.describe()),
                ))
            }
        };
        let first_new = out.len();
        let mut merges = Vec::new();
        for (k, v) in entries {
            let name = match &k.kind {
                Kind::Scalar { text, plain } => {
                    if *plain && text == "<<" {
                        merges.push(v);
                        continue;
                    }
                    text.as_str()
                }
                _ => {
                    return Err(Located::new(
                        k.line,
                        key,
                        format!("mapping key must be a scalar, got {}", k.describe()),
                    ))
                }
            };
            if let Some(pos) = out.iter().position(|(n, _)| *n == name) {
                if explicit || pos >= first_new {
                    return Err(Located::new(
                        k.line,
                        &join(key, name),
                        "key given twice in one mapping",
                    ));
                }
                // A merged-in key under an explicit one: the explicit key wins.
                continue;
            }
            out.push((name, v));
        }
        for m in merges {
            match &m.kind {
                Kind::Seq(items) => {
                    for item in items {
                        item.merge_into(key, out)?;
                    }
                }
                _ => m.merge_into(key, out)?,
            }
        }
        Ok(())
    }

    fn merge_into<'n>(
        &'n self,
        key: &str,
        out: &mut Vec<(&'n str, &'n Node)>,
    ) -> Result<(), Located> {
        if !matches!(self.kind, Kind::Map(_)) {
            return Err(Located::new(
                self.line,
                key,
                "merge key (<<) needs a mapping or a sequence of mappings",
            ));
        }
        let mut merged = Vec::new();
        self.collect_entries(key, &mut merged, true)?;
        for (name, v) in merged {
            if !out.iter().any(|(n, _)| *n == name) {
                out.push((name, v));
            }
        }
        Ok(())
    }

    /// The items of a sequence; a null node is an empty sequence.
    pub fn items(&self, key: &str) -> Result<&[Node], Located> {
        match &self.kind {
            Kind::Seq(items) => Ok(items),
            _ if self.is_null() => Ok(&[]),
            _ => Err(Located::new(
                self.line,
                key,
                format!("expected a sequence, got {}", self.describe()),
            )),
        }
    }

    /// A string field: the raw text of any scalar; null gives "".
    pub fn string(&self, key: &str) -> Result<String, Located> {
        match &self.kind {
            Kind::Scalar { text, .. } => {
                if self.is_null() {
                    Ok(String::new())
                } else {
                    Ok(text.clone())
                }
            }
            _ => Err(Located::new(
                self.line,
                key,
                format!("expected a string, got {}", self.describe()),
            )),
        }
    }

    /// A boolean field: a plain YAML 1.1 boolean; null gives false.
    pub fn boolean(&self, key: &str) -> Result<bool, Located> {
        match self.resolve() {
            Some(Resolved::Bool(b)) => Ok(b),
            Some(Resolved::Null) => Ok(false),
            _ => Err(Located::new(
                self.line,
                key,
                format!("expected true or false, got {}", self.describe()),
            )),
        }
    }

    /// An unsigned integer field (Go `uint`, 64-bit): as yaml.v2, a non-negative integer or a
    /// float that fits (truncated); null gives 0.
    pub fn unsigned(&self, key: &str) -> Result<u64, Located> {
        let bad = || {
            Located::new(
                self.line,
                key,
                format!("expected a non-negative integer, got {}", self.describe()),
            )
        };
        match self.resolve() {
            Some(Resolved::Null) => Ok(0),
            Some(Resolved::Int(i)) => u64::try_from(i).map_err(|_| bad()),
            Some(Resolved::Uint(u)) => Ok(u),
            Some(Resolved::Float(f)) if (0.0..18_446_744_073_709_551_616.0).contains(&f) => {
                Ok(float_to_u64(f))
            }
            _ => Err(bad()),
        }
    }

    /// A signed integer field (Go `int`, 64-bit): as yaml.v2, an integer or a float that fits
    /// (truncated); null gives 0.
    pub fn signed(&self, key: &str) -> Result<i64, Located> {
        let bad = || {
            Located::new(
                self.line,
                key,
                format!("expected an integer, got {}", self.describe()),
            )
        };
        match self.resolve() {
            Some(Resolved::Null) => Ok(0),
            Some(Resolved::Int(i)) => Ok(i),
            Some(Resolved::Uint(u)) => i64::try_from(u).map_err(|_| bad()),
            Some(Resolved::Float(f))
                if (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f) =>
            {
                Ok(float_to_i64(f))
            }
            _ => Err(bad()),
        }
    }
}

// Go converts a float to an integer by truncation toward zero; `as` does the same for values
// in range, which the callers check.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn float_to_u64(f: f64) -> u64 {
    f as u64
}

#[allow(clippy::cast_possible_truncation)]
fn float_to_i64(f: f64) -> i64 {
    f as i64
}

/// `key.name`, or `name` at the top.
pub fn join(key: &str, name: &str) -> String {
    if key.is_empty() {
        name.to_owned()
    } else {
        format!("{key}.{name}")
    }
}

/// `key[i]`.
pub fn index(key: &str, i: usize) -> String {
    format!("{key}[{i}]")
}

/// At most 64 bytes of `text` (on a char boundary), for messages.
pub fn excerpt(text: &str) -> &str {
    if text.len() <= 64 {
        return text;
    }
    let mut end = 64;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// yaml.v2's resolution of an untagged plain scalar (its `resolve.go`, YAML 1.1 flavour).
pub fn resolve_plain(text: &str) -> Resolved<'_> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True" | "TRUE" => {
            return Resolved::Bool(true)
        }
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False" | "FALSE" => {
            return Resolved::Bool(false)
        }
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Resolved::Float(f64::INFINITY)
        }
        "-.inf" | "-.Inf" | "-.INF" => return Resolved::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Resolved::Float(f64::NAN),
        _ => {}
    }
    let first = text.as_bytes()[0];
    if !(first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.')) {
        return Resolved::Str(text);
    }
    // yaml.v2 drops every underscore before trying the numeric forms.
    let plain: String = text.chars().filter(|&c| c != '_').collect();
    if let Some(i) = go_parse_int(&plain) {
        return Resolved::Int(i);
    }
    if let Some(u) = go_parse_uint(&plain) {
        return Resolved::Uint(u);
    }
    if is_yaml_float(&plain) {
        if let Ok(f) = plain.parse::<f64>() {
            return Resolved::Float(f);
        }
    }
    for (prefix, negative) in [("0b", false), ("-0b", true)] {
        if let Some(bits) = plain.strip_prefix(prefix) {
            if let Ok(v) = i64::from_str_radix(bits, 2) {
                return Resolved::Int(if negative { -v } else { v });
            }
        }
    }
    Resolved::Str(text)
}

/// Go's `strconv.ParseInt(s, 0, 64)`: sign, then `0x`/`0o`/`0b` prefixes or a leading `0` for
/// octal.
fn go_parse_int(s: &str) -> Option<i64> {
    let (negative, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let magnitude = go_parse_uint(body)?;
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// Go's `strconv.ParseUint(s, 0, 64)` (no sign).
fn go_parse_uint(s: &str) -> Option<u64> {
    let (radix, digits) = if let Some(rest) = s.strip_prefix("0x").or(s.strip_prefix("0X")) {
        (16, rest)
    } else if let Some(rest) = s.strip_prefix("0o").or(s.strip_prefix("0O")) {
        (8, rest)
    } else if let Some(rest) = s.strip_prefix("0b").or(s.strip_prefix("0B")) {
        (2, rest)
    } else if s.len() > 1 && s.starts_with('0') {
        (8, &s[1..])
    } else {
        (10, s)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// yaml.v2's float shape: `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn is_yaml_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if i < b.len() && b[i] == b'.' {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if i < b.len() && b[i] == b'.' {
            i += 1;
            digits(&mut i);
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Node {
        parse(text).expect("parses").expect("not empty")
    }

    #[test]
    fn yaml11_scalars_resolve_as_yaml_v2_does() {
        let cases: &[(&str, Resolved<'_>)] = &[
            ("", Resolved::Null),
            ("~", Resolved::Null),
            ("yes", Resolved::Bool(true)),
            ("Off", Resolved::Bool(false)),
            ("y", Resolved::Bool(true)),
            ("0x1f", Resolved::Int(31)),
            ("017", Resolved::Int(15)),
            ("1_000", Resolved::Int(1000)),
            ("-5", Resolved::Int(-5)),
            ("18446744073709551615", Resolved::Uint(u64::MAX)),
            ("1e3", Resolved::Float(1000.0)),
            ("1.5", Resolved::Float(1.5)),
            (".5", Resolved::Float(0.5)),
            ("0b101", Resolved::Int(5)),
            ("1.2.3", Resolved::Str("1.2.3")),
            ("15s", Resolved::Str("15s")),
            ("yesterday", Resolved::Str("yesterday")),
        ];
        for (text, want) in cases {
            assert_eq!(resolve_plain_or_null(text), *want, "{text:?}");
        }
    }

    fn resolve_plain_or_null(text: &str) -> Resolved<'_> {
        if text.is_empty() {
            Resolved::Null
        } else {
            resolve_plain(text)
        }
    }

    #[test]
    fn quoted_scalars_stay_strings() {
        let n = doc("a: 'yes'\nb: \"12\"\nc: !!str true\n");
        let e = n.entries("").expect("mapping");
        assert_eq!(e[0].1.resolve(), Some(Resolved::Str("yes")));
        assert_eq!(e[1].1.resolve(), Some(Resolved::Str("12")));
        assert_eq!(e[2].1.resolve(), Some(Resolved::Str("true")));
        assert!(e[0].1.boolean("a").is_err());
    }

    #[test]
    fn merge_keys_and_aliases() {
        let n = doc("base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\nlist: [*b, *b]\n");
        let top = n.entries("").expect("mapping");
        let used = top[1].1.entries("use").expect("mapping");
        let pairs: Vec<(&str, String)> = used
            .iter()
            .map(|(k, v)| (*k, v.string(k).expect("scalar")))
            .collect();
        assert_eq!(
            pairs,
            vec![("y", "3".to_owned()), ("x", "1".to_owned())],
            "explicit y wins over merged y"
        );
        assert_eq!(top[2].1.items("list").expect("seq").len(), 2);
    }

    #[test]
    fn duplicate_keys_are_errors_with_their_line() {
        let n = doc("a: 1\nb: 2\na: 3\n");
        let err = n.entries("").expect_err("duplicate");
        assert_eq!(err.line, 3);
        assert_eq!(err.key, "a");
        assert_eq!(err.reason, "key given twice in one mapping");
    }

    #[test]
    fn lines_are_one_based() {
        let n = doc("# comment\nglobal:\n  scrape_interval: 5s\n");
        let top = n.entries("").expect("mapping");
        let global = top[0].1.entries("global").expect("mapping");
        assert_eq!(global[0].1.line, 3);
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let err = parse("a: [1, 2\nb: 3\n").expect_err("unterminated flow");
        assert!(err.line >= 1, "{err:?}");
        assert!(parse("\ta: 1\n").is_err(), "tabs cannot indent");
        assert!(parse("a:\tb\n").is_ok(), "a tab after a key is white space");
        assert!(
            parse("a: |\n  x\n  \ty\nb: 1\n").is_ok(),
            "block scalar content"
        );
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = parse(&text).expect_err("expands to 10^8 nodes");
        // Refused at a4's fifth alias, while the copies are 67,885 nodes, not 10^8.
        assert_eq!(
            (err.line, err.reason.as_str()),
            (
                5,
                "aliases expand to more than 65536 nodes (21 nodes written)"
            )
        );
        // The classic billion laughs, strings doubling through nine levels.
        let mut lol = String::from("a: &a [\"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\"]\n");
        for (prev, next) in ('a'..='h').zip('b'..='i') {
            let items = vec![format!("*{prev}"); 9].join(", ");
            lol.push_str(&format!("{next}: &{next} [{items}]\n"));
        }
        let err = parse(&lol).expect_err("expands to 9^9 nodes");
        assert!(
            err.reason
                .starts_with("aliases expand to more than 65536 nodes"),
            "{err:?}"
        );
    }

    /// The nodes of a built tree, counted the naive way.
    fn node_count(node: &Node) -> usize {
        match &node.kind {
            Kind::Scalar { .. } => 1,
            Kind::Seq(items) => 1 + items.iter().map(node_count).sum::<usize>(),
            Kind::Map(entries) => {
                1 + entries
                    .iter()
                    .map(|(k, v)| node_count(k) + node_count(v))
                    .sum::<usize>()
            }
        }
    }

    #[test]
    fn measure_counts_the_nodes_the_builder_builds() {
        let docs = [
            "a: 1\n",
            "a: &x [1, 2, {b: c}]\nb: *x\nc: [*x, *x]\n",
            "base: &b {x: 1, y: [2, 3]}\nj:\n  <<: *b\n  z: 4\n",
            "a: &x 1\nb: &x [2]\nc: *x\n",
            "- &a [1]\n- &b [*a, *a]\n- [*b, *b, *a]\n",
        ];
        for text in docs {
            let tree = doc(text);
            assert_eq!(measure(text), Ok(node_count(&tree)), "{text}");
        }
    }

    #[test]
    fn a_document_over_the_node_cap_is_refused() {
        let items = |n: usize| format!("[{}]", vec!["x"; n].join(","));
        // The sequence and its items: exactly the cap (measured only: building a million
        // nodes would slow the suite under qemu), then one more.
        assert_eq!(measure(&items(MAX_NODES - 1)), Ok(MAX_NODES));
        let err = parse(&items(MAX_NODES)).expect_err("one node over");
        assert_eq!(err.reason, "document expands to more than 1048576 nodes");
    }

    #[test]
    fn generous_anchor_use_is_accepted() {
        // 200 jobs reusing one 301-node relabel block: 60,200 nodes copied, under the floor.
        let mut text = String::from("block: &b [");
        text.push_str(&vec!["x"; 300].join(", "));
        text.push_str("]\njobs:\n");
        for _ in 0..200 {
            text.push_str("  - *b\n");
        }
        let n = doc(&text);
        let Kind::Map(entries) = &n.kind else {
            panic!("{n:?}")
        };
        assert_eq!(node_count(&entries[1].1), 1 + 200 * 301);
        // Past the floor, a document may copy 16 nodes per node it writes: 8,000 targets and
        // 100 jobs write about 9,400 nodes, so 100 copies of 1,001 nodes pass, 1,000 do not.
        let large = |jobs: usize| {
            let mut text = String::from("block: &b [");
            text.push_str(&vec!["x"; 1000].join(", "));
            text.push_str("]\ntargets: [");
            text.push_str(&vec!["t"; 8000].join(", "));
            text.push_str("]\njobs:\n");
            for i in 0..jobs {
                text.push_str(&format!("  - {{name: j{i}, b: *b}}\n"));
            }
            parse(&text)
        };
        assert!(large(100).is_ok(), "{:?}", large(100));
        let err = large(1000).expect_err("1,000 copies");
        assert!(
            err.reason.starts_with("aliases expand to more than 1"),
            "{err:?}"
        );
    }

    #[test]
    fn integer_fields_follow_go_conversions() {
        let n = doc("a: 1.5\nb: -1\nc: '5'\nd: 0x10\ne:\n");
        let e = n.entries("").expect("mapping");
        assert_eq!(e[0].1.unsigned("a"), Ok(1));
        assert!(e[1].1.unsigned("b").is_err());
        assert!(e[2].1.unsigned("c").is_err());
        assert_eq!(e[3].1.unsigned("d"), Ok(16));
        assert_eq!(e[4].1.unsigned("e"), Ok(0));
        assert_eq!(e[1].1.signed("b"), Ok(-1));
    }

    #[test]
    fn empty_documents_are_none() {
        assert_eq!(parse(""), Ok(None));
        assert_eq!(parse("# only a comment\n"), Ok(None));
    }
}
