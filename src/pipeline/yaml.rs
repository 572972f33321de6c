//! Position-preserving YAML layer: every value remembers `file:line:col` so
//! config errors point at the offending key.
//!
//! Pipeline files are parsed with `saphyr-parser`'s event API into a small
//! document tree ([`Node`]) in which every value and every mapping key carries
//! its [`Origin`]: either a position in a file, or the command-line
//! `--set a.b=v` override that produced it. Typed configuration structs are
//! then read from that tree with [`from_node`], a `serde` deserializer that
//! reports errors at the innermost offending node or key, with a dotted key
//! path (`train.optimizer.lr`, `tests[1].protocol`) and, for typos, a
//! did-you-mean suggestion:
//!
//! ```text
//! pipeline.yaml:7:5: train.lerning_rate: unknown key "lerning_rate"; did you mean "learning_rate"?
//! --set train.lr=abc: train.lr: expected f64, found string "abc"
//! ```
//!
//! # YAML subset and scalar resolution
//!
//! * One document per file. An empty file (or one holding only comments) is `null`.
//! * Plain (unquoted) scalars are resolved with the YAML 1.2 *core schema*:
//!   `null`/`Null`/`NULL`/`~`/empty → [`Value::Null`]; `true`/`false` (also
//!   `True`, `TRUE`, ...) → [`Value::Bool`]; `[-+]?[0-9]+`, `0x..`, `0o..` →
//!   [`Value::Int`]; `1.5`, `1e-4`, `.5`, `.inf`, `-.inf`, `.nan` →
//!   [`Value::Float`]; anything else is a string. YAML 1.1 spellings (`yes`,
//!   `on`, `1_000`, `0755` as octal) are *not* special: they are strings (or, for
//!   `0755`, the decimal integer 755). A plain integer that does not fit in an
//!   `i64` is an error (quote it to keep it as a string).
//! * Quoted and block (`|`, `>`) scalars are always strings.
//! * Mapping keys must be scalars; they are kept as their source text (`1: x`
//!   has the key `"1"`). Duplicate keys in one mapping are an error reported at
//!   the second occurrence.
//! * Anchors and aliases are supported: `*name` is replaced by a copy of the
//!   anchored node, which keeps the positions of the anchor's text. Aliases may
//!   not be used as mapping keys, and total alias expansion is capped (guards
//!   against "billion laughs" inputs). The YAML 1.1 merge key `<<` is **not**
//!   supported: it is an ordinary key (and so an unknown key for strict structs).
//! * Tags (`!!str`, `!custom`) are rejected with an error at the tag.
//!
//! # Deserialization rules ([`from_node`])
//!
//! * Structs come from maps. An empty value (`train:` with nothing after it)
//!   counts as an empty map for structs and maps, so a section whose fields
//!   all have defaults may be left empty; sequences do not get this leniency.
//! * Integers are accepted where floats are expected; nothing else is coerced
//!   (in particular `name: 123` is not a string: quote it).
//! * `Option<T>`: `null` → `None`; a missing field is `None` as usual with serde.
//! * Enums: a unit variant is a plain string (`mode: fast`); other variants are
//!   a single-key map (`method: {noise_da: {sigma: 0.1}}` or the block form).
//!   A struct or newtype variant may also be written as a plain string, which
//!   reads its content from an empty value (handy when all fields default).
//! * Internally tagged / untagged enums and `#[serde(flatten)]` work, but serde
//!   buffers their content, so errors inside them are reported at the enclosing
//!   list item or map value (the tagged map itself) rather than the innermost node.

use crate::util::did_you_mean;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span, Tag};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, Error as _, Expected, IntoDeserializer, MapAccess, SeqAccess,
    Unexpected, VariantAccess, Visitor,
};

// ---------------------------------------------------------------------------
// Document model
// ---------------------------------------------------------------------------

/// A position in a source file, both fields 1-based (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mark {
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// Where a key or value came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Text in a YAML file.
    File { path: PathBuf, mark: Mark },
    /// A command-line override; `arg` is the whole `a.b=v` assignment.
    Override { arg: String },
}

impl fmt::Display for Origin {
    /// `path:line:col` for file positions, `--set a.b=v` for overrides.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, mark } => write!(f, "{}:{}", path.display(), mark),
            Origin::Override { arg } => write!(f, "--set {arg}"),
        }
    }
}

/// A YAML value; children are [`Node`]s so they keep their positions.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in source order; keys are unique.
    Map(Vec<(Key, Node)>),
}

impl Value {
    /// A short description of the kind of value, for messages: "null",
    /// "boolean", "integer", "float", "string", "sequence", "map".
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::Seq(_) => "sequence",
            Value::Map(_) => "map",
        }
    }

    fn unexpected(&self) -> Unexpected<'_> {
        match self {
            Value::Null => Unexpected::Unit,
            Value::Bool(b) => Unexpected::Bool(*b),
            Value::Int(i) => Unexpected::Signed(*i),
            Value::Float(x) => Unexpected::Float(*x),
            Value::Str(s) => Unexpected::Str(s),
            Value::Seq(_) => Unexpected::Seq,
            Value::Map(_) => Unexpected::Map,
        }
    }
}

/// A mapping key with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub origin: Origin,
}

/// A value with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub origin: Origin,
}

/// A configuration error, located at a file position or a `--set` override.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {}{message}", key_path_prefix(.key_path))]
pub struct ConfigError {
    /// `path:line:col`, or `--set a.b=v` for command-line overrides.
    pub location: String,
    /// Dotted path of the offending key (`train.lr`, `methods[1]`); may be empty.
    pub key_path: String,
    pub message: String,
}

fn key_path_prefix(key_path: &str) -> String {
    if key_path.is_empty() { String::new() } else { format!("{key_path}: ") }
}

impl ConfigError {
    pub fn new(location: impl Into<String>, key_path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { location: location.into(), key_path: key_path.into(), message: message.into() }
    }

    /// An error located at `origin`.
    pub fn at(origin: &Origin, key_path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(origin.to_string(), key_path, message)
    }
}

// ---------------------------------------------------------------------------
// Node API
// ---------------------------------------------------------------------------

impl Node {
    pub fn new(value: Value, origin: Origin) -> Self {
        Node { value, origin }
    }

    /// The rendered origin: `path:line:col` or `--set a.b=v`.
    pub fn location(&self) -> String {
        self.origin.to_string()
    }

    /// An error located at this node, e.g. for semantic validation after
    /// deserialization (`cfg.lookup("train.lr").unwrap().error("train.lr", "must be > 0")`).
    pub fn error(&self, key_path: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::at(&self.origin, key_path, message)
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// Map lookup; `None` if this is not a map or has no such key.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Mutable map lookup.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        match &mut self.value {
            Value::Map(entries) => entries.iter_mut().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The key (with its origin) of a map entry.
    pub fn get_key(&self, key: &str) -> Option<&Key> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(k, _)| k),
            _ => None,
        }
    }

    /// Follows a key path such as `train.optimizer.lr` or `methods[1].sigma`.
    pub fn lookup(&self, key_path: &str) -> Option<&Node> {
        let segs = parse_key_path(key_path).ok()?;
        let mut cur = self;
        for seg in &segs {
            cur = match seg {
                Seg::Key(k) => cur.get(k)?,
                Seg::Index(i) => match &cur.value {
                    Value::Seq(items) => items.get(*i)?,
                    _ => return None,
                },
            };
        }
        Some(cur)
    }

    /// Deep merge: when both sides are maps, keys merge one by one
    /// recursively (keys new in `overlay` are appended, existing keys keep
    /// their position); anything else (scalars, sequences, null) replaces.
    pub fn merge(&mut self, overlay: Node) {
        let Node { value, origin } = overlay;
        match (&mut self.value, value) {
            (Value::Map(base), Value::Map(over)) => {
                for (key, node) in over {
                    match base.iter_mut().find(|(k, _)| k.name == key.name) {
                        Some((_, slot)) => slot.merge(node),
                        None => base.push((key, node)),
                    }
                }
            }
            (_, value) => {
                self.value = value;
                self.origin = origin;
            }
        }
    }

    /// Removes a map entry, returning its value.
    pub fn remove_key(&mut self, key: &str) -> Option<Node> {
        match &mut self.value {
            Value::Map(entries) => {
                let i = entries.iter().position(|(k, _)| k.name == key)?;
                Some(entries.remove(i).1)
            }
            _ => None,
        }
    }

    /// Applies a command-line override `a.b.c=value`.
    ///
    /// The value is parsed as a YAML scalar or flow value (`3`, `1e-4`,
    /// `true`, `[1, 2]`, `{a: 1}`, `foo`, `"quoted"`; empty means null) and
    /// every node of it gets `Origin::Override { arg }`. Missing keys are
    /// created (and an empty `null` section becomes a map), so a typo'd path is
    /// reported later by strict deserialization as an unknown key. Path
    /// segments may index existing sequence items: `methods[1].sigma=0.2`.
    /// Setting a key inside a scalar or sequence is an error naming the path.
    /// On error `self` is left unchanged.
    pub fn set_path(&mut self, assignment: &str) -> Result<(), ConfigError> {
        let origin = Origin::Override { arg: assignment.to_string() };
        let Some((lhs, rhs)) = assignment.split_once('=') else {
            return Err(ConfigError::at(&origin, "", "expected an assignment `key.path=value`"));
        };
        let lhs = lhs.trim();
        if lhs.is_empty() {
            return Err(ConfigError::at(&origin, "", "empty key path before `=`"));
        }
        let segs = parse_key_path(lhs).map_err(|msg| ConfigError::at(&origin, lhs, msg))?;

        let mut value = parse(rhs, Path::new("--set"))
            .map_err(|e| ConfigError::at(&origin, lhs, format!("invalid value: {}", e.message)))?;
        value.set_origin_recursive(&origin);

        let mut copy = self.clone();
        let mut cur = &mut copy;
        let mut path = String::new();
        for seg in &segs {
            match seg {
                Seg::Key(name) => {
                    if cur.is_null() {
                        cur.value = Value::Map(Vec::new());
                    }
                    let (kind, at) = (cur.value.kind(), cur.origin.to_string());
                    let Value::Map(entries) = &mut cur.value else {
                        return Err(ConfigError::at(
                            &origin,
                            path.as_str(),
                            format!(
                                "cannot set key \"{name}\": `{}` is a {kind} (from {at}), not a map",
                                display_path(&path)
                            ),
                        ));
                    };
                    let i = match entries.iter().position(|(k, _)| k.name == *name) {
                        Some(i) => i,
                        None => {
                            entries.push((
                                Key { name: name.clone(), origin: origin.clone() },
                                Node::new(Value::Null, origin.clone()),
                            ));
                            entries.len() - 1
                        }
                    };
                    cur = &mut entries[i].1;
                    path = join_key(&path, name);
                }
                Seg::Index(i) => {
                    let (kind, at) = (cur.value.kind(), cur.origin.to_string());
                    let Value::Seq(items) = &mut cur.value else {
                        return Err(ConfigError::at(
                            &origin,
                            path.as_str(),
                            format!(
                                "cannot index [{i}]: `{}` is a {kind} (from {at}), not a sequence",
                                display_path(&path)
                            ),
                        ));
                    };
                    let len = items.len();
                    let Some(item) = items.get_mut(*i) else {
                        return Err(ConfigError::at(
                            &origin,
                            path.as_str(),
                            format!("index [{i}] is out of range: the sequence has {len} items"),
                        ));
                    };
                    cur = item;
                    path = format!("{path}[{i}]");
                }
            }
        }
        *cur = value;
        *self = copy;
        Ok(())
    }

    fn set_origin_recursive(&mut self, origin: &Origin) {
        self.origin = origin.clone();
        match &mut self.value {
            Value::Seq(items) => items.iter_mut().for_each(|n| n.set_origin_recursive(origin)),
            Value::Map(entries) => {
                for (k, v) in entries {
                    k.origin = origin.clone();
                    v.set_origin_recursive(origin);
                }
            }
            _ => {}
        }
    }

    /// (number of nodes, nesting height) of this subtree.
    fn size(&self) -> (usize, usize) {
        let children: Box<dyn Iterator<Item = &Node>> = match &self.value {
            Value::Seq(items) => Box::new(items.iter()),
            Value::Map(entries) => Box::new(entries.iter().map(|(_, v)| v)),
            _ => return (1, 0),
        };
        children.fold((1, 1), |(count, height), child| {
            let (c, h) = child.size();
            (count + c, height.max(h + 1))
        })
    }
}

fn display_path(path: &str) -> &str {
    if path.is_empty() { "<root>" } else { path }
}

fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

enum Seg {
    Key(String),
    Index(usize),
}

/// Parses `a.b[2].c` into segments.
fn parse_key_path(path: &str) -> Result<Vec<Seg>, String> {
    let mut segs = Vec::new();
    for (n, part) in path.split('.').enumerate() {
        let (name, mut rest) = match part.find('[') {
            Some(i) => part.split_at(i),
            None => (part, ""),
        };
        let name = name.trim();
        if name.is_empty() && (rest.is_empty() || n > 0) {
            return Err(format!("empty segment in key path `{path}`"));
        }
        if !name.is_empty() {
            segs.push(Seg::Key(name.to_string()));
        }
        while !rest.is_empty() {
            let close = rest.find(']').ok_or_else(|| format!("unclosed `[` in key path `{path}`"))?;
            let index = rest[1..close]
                .trim()
                .parse::<usize>()
                .map_err(|_| format!("invalid index `{}` in key path `{path}`", &rest[..=close]))?;
            segs.push(Seg::Index(index));
            rest = &rest[close + 1..];
            if !rest.is_empty() && !rest.starts_with('[') {
                return Err(format!("unexpected `{rest}` after index in key path `{path}`"));
            }
        }
    }
    Ok(segs)
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/// Maximum nesting depth of collections.
const MAX_DEPTH: usize = 128;
/// Maximum number of nodes produced by alias expansion, all aliases together.
const MAX_ALIAS_NODES: usize = 100_000;

/// Reads and parses a YAML file.
pub fn load(path: &Path) -> Result<Node, ConfigError> {
    let src = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(path.display().to_string(), "", format!("cannot read file: {e}")))?;
    parse(&src, path)
}

/// Parses one YAML document. `path` is only used for positions in errors and
/// origins. Syntax errors are reported as `path:line:col: YAML syntax error: ...`.
pub fn parse(src: &str, path: &Path) -> Result<Node, ConfigError> {
    let mut b =
        Builder { parser: Parser::new_from_str(src), path, anchors: HashMap::new(), alias_budget: MAX_ALIAS_NODES };
    b.document()
}

struct Builder<'a> {
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    path: &'a Path,
    /// anchor id → (node, node count, nesting height)
    anchors: HashMap<usize, (Node, usize, usize)>,
    alias_budget: usize,
}

impl<'a> Builder<'a> {
    fn origin(&self, span: &Span) -> Origin {
        Origin::File {
            path: self.path.to_path_buf(),
            mark: Mark { line: span.start.line(), col: span.start.col() + 1 },
        }
    }

    fn err(&self, span: &Span, key_path: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::at(&self.origin(span), key_path, message)
    }

    fn scan_err(&self, e: ScanError) -> ConfigError {
        let m = e.marker();
        ConfigError::new(
            format!("{}:{}:{}", self.path.display(), m.line(), m.col() + 1),
            "",
            format!("YAML syntax error: {}", e.info()),
        )
    }

    fn next(&mut self) -> Result<(Event<'a>, Span), ConfigError> {
        match self.parser.next_event() {
            Some(Ok(ev)) => Ok(ev),
            Some(Err(e)) => Err(self.scan_err(e)),
            None => {
                Err(ConfigError::new(self.path.display().to_string(), "", "YAML syntax error: unexpected end of input"))
            }
        }
    }

    fn document(&mut self) -> Result<Node, ConfigError> {
        let (ev, span) = self.next()?;
        if ev != Event::StreamStart {
            return Err(self.err(&span, "", format!("unexpected YAML event {ev:?}")));
        }
        let (ev, span) = self.next()?;
        let root = match ev {
            Event::StreamEnd => return Ok(Node::new(Value::Null, self.origin(&span_at_start()))),
            Event::DocumentStart(_) => {
                let (ev, span) = self.next()?;
                self.node(ev, span, "", 0)?
            }
            ev => return Err(self.err(&span, "", format!("unexpected YAML event {ev:?}"))),
        };
        loop {
            let (ev, span) = self.next()?;
            match ev {
                Event::DocumentEnd => {}
                Event::StreamEnd => return Ok(root),
                Event::DocumentStart(_) => {
                    return Err(self.err(&span, "", "a second YAML document; only one document per file is supported"));
                }
                ev => return Err(self.err(&span, "", format!("unexpected YAML event {ev:?}"))),
            }
        }
    }

    fn check_tag(&self, tag: Option<&Tag>, span: &Span, key_path: &str) -> Result<(), ConfigError> {
        match tag {
            None => Ok(()),
            Some(tag) => {
                let shown = if tag.is_yaml_core_schema() {
                    format!("!!{}", tag.suffix)
                } else if tag.handle == "!" {
                    format!("!{}", tag.suffix)
                } else {
                    format!("!<{}{}>", tag.handle, tag.suffix)
                };
                Err(self.err(
                    span,
                    key_path,
                    format!("YAML tags are not supported (found `{shown}`); quote the value to get a string"),
                ))
            }
        }
    }

    fn register_anchor(&mut self, anchor: usize, node: &Node) {
        if anchor != 0 {
            let (count, height) = node.size();
            self.anchors.insert(anchor, (node.clone(), count, height));
        }
    }

    fn node(&mut self, ev: Event<'a>, span: Span, key_path: &str, depth: usize) -> Result<Node, ConfigError> {
        if depth > MAX_DEPTH {
            return Err(self.err(&span, key_path, format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        let origin = self.origin(&span);
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                self.check_tag(tag.as_deref(), &span, key_path)?;
                let value = if style == ScalarStyle::Plain {
                    resolve_plain(&text).map_err(|msg| self.err(&span, key_path, msg))?
                } else {
                    Value::Str(text.into_owned())
                };
                let node = Node::new(value, origin);
                self.register_anchor(anchor, &node);
                Ok(node)
            }
            Event::SequenceStart(anchor, tag) => {
                self.check_tag(tag.as_deref(), &span, key_path)?;
                let mut items = Vec::new();
                loop {
                    let (ev, span) = self.next()?;
                    if ev == Event::SequenceEnd {
                        break;
                    }
                    let item_path = format!("{key_path}[{}]", items.len());
                    items.push(self.node(ev, span, &item_path, depth + 1)?);
                }
                let node = Node::new(Value::Seq(items), origin);
                self.register_anchor(anchor, &node);
                Ok(node)
            }
            Event::MappingStart(anchor, tag) => {
                self.check_tag(tag.as_deref(), &span, key_path)?;
                let mut entries: Vec<(Key, Node)> = Vec::new();
                let mut seen: HashMap<String, Origin> = HashMap::new();
                loop {
                    let (ev, kspan) = self.next()?;
                    let name = match ev {
                        Event::MappingEnd => break,
                        Event::Scalar(text, _, kanchor, tag) => {
                            self.check_tag(tag.as_deref(), &kspan, key_path)?;
                            if kanchor != 0 {
                                let n = Node::new(Value::Str(text.to_string()), self.origin(&kspan));
                                self.register_anchor(kanchor, &n);
                            }
                            text.into_owned()
                        }
                        Event::Alias(_) => {
                            return Err(self.err(&kspan, key_path, "aliases cannot be used as mapping keys"));
                        }
                        _ => {
                            return Err(self.err(
                                &kspan,
                                key_path,
                                "mapping keys must be scalars (complex keys are not supported)",
                            ));
                        }
                    };
                    let child_path = join_key(key_path, &name);
                    let key_origin = self.origin(&kspan);
                    if let Some(first) = seen.get(&name) {
                        return Err(ConfigError::at(
                            &key_origin,
                            child_path,
                            format!("duplicate key \"{name}\" (first defined at {first})"),
                        ));
                    }
                    seen.insert(name.clone(), key_origin.clone());
                    let (ev, vspan) = self.next()?;
                    let value = self.node(ev, vspan, &child_path, depth + 1)?;
                    entries.push((Key { name, origin: key_origin }, value));
                }
                let node = Node::new(Value::Map(entries), origin);
                self.register_anchor(anchor, &node);
                Ok(node)
            }
            Event::Alias(id) => {
                let Some((node, count, height)) = self.anchors.get(&id) else {
                    return Err(self.err(
                        &span,
                        key_path,
                        "alias refers to an anchor that is still being defined (recursive aliases are not supported)",
                    ));
                };
                if *count > self.alias_budget {
                    return Err(self.err(
                        &span,
                        key_path,
                        format!("aliases expand to more than {MAX_ALIAS_NODES} nodes"),
                    ));
                }
                if depth + height > MAX_DEPTH {
                    return Err(self.err(&span, key_path, format!("nesting deeper than {MAX_DEPTH} levels")));
                }
                self.alias_budget -= *count;
                Ok(node.clone())
            }
            ev => Err(self.err(&span, key_path, format!("unexpected YAML event {ev:?}"))),
        }
    }
}

fn span_at_start() -> Span {
    Span::empty(saphyr_parser::Marker::new(0, 1, 0))
}

/// Resolves a plain scalar with the YAML 1.2 core schema.
fn resolve_plain(s: &str) -> Result<Value, String> {
    Ok(match s {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => Value::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => Value::Float(f64::NAN),
        _ => {
            let too_big =
                || format!("integer {s} does not fit in a 64-bit signed integer (quote it to use it as a string)");
            if is_decimal_int(s) {
                Value::Int(s.parse::<i64>().map_err(|_| too_big())?)
            } else if let Some(digits) = radix_digits(s, "0x", 16) {
                Value::Int(i64::from_str_radix(digits, 16).map_err(|_| too_big())?)
            } else if let Some(digits) = radix_digits(s, "0o", 8) {
                Value::Int(i64::from_str_radix(digits, 8).map_err(|_| too_big())?)
            } else if is_float(s) {
                match s.parse::<f64>() {
                    Ok(x) => Value::Float(x),
                    Err(_) => Value::Str(s.to_string()),
                }
            } else {
                Value::Str(s.to_string())
            }
        }
    })
}

fn strip_sign(s: &str) -> &str {
    s.strip_prefix(['-', '+']).unwrap_or(s)
}

/// `[-+]?[0-9]+`
fn is_decimal_int(s: &str) -> bool {
    let d = strip_sign(s);
    !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())
}

/// `0x[0-9a-fA-F]+` / `0o[0-7]+`
fn radix_digits<'s>(s: &'s str, prefix: &str, radix: u32) -> Option<&'s str> {
    let d = s.strip_prefix(prefix)?;
    (!d.is_empty() && d.chars().all(|c| c.is_digit(radix))).then_some(d)
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`
fn is_float(s: &str) -> bool {
    let b = strip_sign(s).as_bytes();
    let digits = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let mut i = digits(0);
    let int_digits = i;
    let mut frac_digits = 0;
    if i < b.len() && b[i] == b'.' {
        frac_digits = digits(i + 1);
        i += 1 + frac_digits;
    }
    if int_digits == 0 && frac_digits == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
            i += 1;
        }
        let e = digits(i);
        if e == 0 {
            return false;
        }
        i += e;
    }
    i == b.len()
}

// ---------------------------------------------------------------------------
// Deserialization
// ---------------------------------------------------------------------------

/// Deserializes a typed value from a node tree. Errors carry the position and
/// key path of the innermost offending node or key.
pub fn from_node<T: DeserializeOwned>(node: &Node) -> Result<T, ConfigError> {
    from_node_at(node, "")
}

/// Like [`from_node`] for a subtree; `key_path` is the subtree's path
/// (e.g. `"train"`), used as the prefix of key paths in errors.
pub fn from_node_at<T: DeserializeOwned>(node: &Node, key_path: &str) -> Result<T, ConfigError> {
    T::deserialize(NodeDe { node, origin: &node.origin, path: key_path.to_string() })
        .map_err(|e| e.into_config(&node.origin, key_path))
}

fn unknown_message(what: &str, plural: &str, word: &str, expected: &[&str]) -> String {
    if let Some(s) = did_you_mean(word, expected) {
        format!("unknown {what} \"{word}\"; did you mean \"{s}\"?")
    } else if expected.is_empty() {
        format!("unknown {what} \"{word}\"; no {plural} are allowed here")
    } else {
        let list: Vec<String> = expected.iter().map(|e| format!("\"{e}\"")).collect();
        format!("unknown {what} \"{word}\"; expected one of {}", list.join(", "))
    }
}

fn describe(u: &Unexpected<'_>) -> String {
    match u {
        Unexpected::Bool(b) => format!("boolean {b}"),
        Unexpected::Unsigned(n) => format!("integer {n}"),
        Unexpected::Signed(n) => format!("integer {n}"),
        Unexpected::Float(x) => format!("float {x:?}"),
        Unexpected::Char(c) => format!("character {c:?}"),
        Unexpected::Str(s) => format!("string {s:?}"),
        Unexpected::Bytes(_) => "bytes".to_string(),
        Unexpected::Unit => "null".to_string(),
        Unexpected::Option => "an optional value".to_string(),
        Unexpected::NewtypeStruct => "a newtype struct".to_string(),
        Unexpected::Seq => "a sequence".to_string(),
        Unexpected::Map => "a map".to_string(),
        Unexpected::Enum => "an enum".to_string(),
        Unexpected::UnitVariant => "a unit variant".to_string(),
        Unexpected::NewtypeVariant => "a newtype variant".to_string(),
        Unexpected::TupleVariant => "a tuple variant".to_string(),
        Unexpected::StructVariant => "a struct variant".to_string(),
        Unexpected::Other(s) => s.to_string(),
    }
}

/// Internal serde error: a message plus, once known, the location and key
/// path of the innermost node that failed.
#[derive(Debug)]
struct DeError {
    message: String,
    at: Option<(String, String)>,
}

impl DeError {
    fn locate(mut self, origin: &Origin, path: &str) -> Self {
        if self.at.is_none() {
            self.at = Some((origin.to_string(), path.to_string()));
        }
        self
    }

    fn into_config(self, origin: &Origin, path: &str) -> ConfigError {
        let (location, key_path) = self.at.unwrap_or_else(|| (origin.to_string(), path.to_string()));
        ConfigError { location, key_path, message: self.message }
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError { message: msg.to_string(), at: None }
    }

    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        Self::custom(format_args!("expected {exp}, found {}", describe(&unexp)))
    }

    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        Self::custom(format_args!("invalid value: expected {exp}, found {}", describe(&unexp)))
    }

    fn invalid_length(len: usize, exp: &dyn Expected) -> Self {
        Self::custom(format_args!("expected {exp}, found {len} elements"))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        Self::custom(unknown_message("variant", "variants", variant, expected))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        Self::custom(unknown_message("key", "keys", field, expected))
    }

    fn missing_field(field: &'static str) -> Self {
        Self::custom(format_args!("missing key \"{field}\""))
    }

    fn duplicate_field(field: &'static str) -> Self {
        Self::custom(format_args!("duplicate key \"{field}\""))
    }
}

/// Value every empty struct variant written as a plain string reads from.
static NULL_NODE: Node = Node { value: Value::Null, origin: Origin::Override { arg: String::new() } };

/// Deserializer for one node. `origin` is where errors are reported (normally
/// `node.origin`; differs only for the synthetic null of a bare variant name).
struct NodeDe<'de> {
    node: &'de Node,
    origin: &'de Origin,
    path: String,
}

impl<'de> NodeDe<'de> {
    fn of(node: &'de Node, path: String) -> Self {
        NodeDe { node, origin: &node.origin, path }
    }

    fn located<T>(&self, r: Result<T, DeError>) -> Result<T, DeError> {
        r.map_err(|e| e.locate(self.origin, &self.path))
    }

    fn type_error<T>(&self, exp: &dyn Expected) -> Result<T, DeError> {
        self.located(Err(de::Error::invalid_type(self.node.value.unexpected(), exp)))
    }

    fn visit_entries<V: Visitor<'de>>(&self, entries: &'de [(Key, Node)], visitor: V) -> Result<V::Value, DeError> {
        let mut access = MapDe { iter: entries.iter(), pending: None, path: &self.path };
        let r = visitor.visit_map(&mut access);
        self.located(r)
    }

    fn visit_items<V: Visitor<'de>>(&self, items: &'de [Node], visitor: V) -> Result<V::Value, DeError> {
        let mut access = SeqDe { iter: items.iter().enumerate(), path: &self.path };
        let r = visitor.visit_seq(&mut access).and_then(|v| {
            let left = access.iter.len();
            if left == 0 {
                Ok(v)
            } else {
                Err(de::Error::custom(format_args!(
                    "too many elements: expected {}, found {}",
                    items.len() - left,
                    items.len()
                )))
            }
        });
        self.located(r)
    }
}

impl<'de> de::Deserializer<'de> for NodeDe<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::Float(x) => visitor.visit_f64(*x),
            Value::Str(s) => visitor.visit_borrowed_str(s),
            Value::Seq(items) => return self.visit_items(items, visitor),
            Value::Map(entries) => return self.visit_entries(entries, visitor),
        };
        self.located(r)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            let r = visitor.visit_none();
            self.located(r)
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            let r = visitor.visit_unit();
            self.located(r)
        } else {
            self.type_error(&visitor)
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Seq(items) => self.visit_items(items, visitor),
            _ => self.type_error(&visitor),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Map(entries) => self.visit_entries(entries, visitor),
            Value::Null => self.visit_entries(&[], visitor),
            _ => self.type_error(&visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Str(name) => {
                let r = visitor.visit_enum(BareVariant { name, origin: self.origin, path: &self.path });
                self.located(r)
            }
            Value::Map(entries) if entries.len() == 1 => {
                let (key, value) = &entries[0];
                let r = visitor.visit_enum(MapVariant { key, value, path: join_key(&self.path, &key.name) });
                self.located(r)
            }
            Value::Map(entries) => {
                let msg = format!(
                    "expected {}: a variant name or a map with exactly one key `variant: ...`, found a map with {} keys",
                    &visitor as &dyn Expected,
                    entries.len()
                );
                self.located(Err(de::Error::custom(msg)))
            }
            _ => self.type_error(&visitor),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf identifier
    }
}

struct SeqDe<'de, 'p> {
    iter: std::iter::Enumerate<std::slice::Iter<'de, Node>>,
    path: &'p str,
}

impl<'de> SeqAccess<'de> for SeqDe<'de, '_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, DeError> {
        match self.iter.next() {
            Some((i, node)) => {
                // Errors escaping the element (serde-buffered content of
                // tagged/untagged enums) belong to the element.
                let path = format!("{}[{i}]", self.path);
                seed.deserialize(NodeDe::of(node, path.clone())).map(Some).map_err(|e| e.locate(&node.origin, &path))
            }
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct MapDe<'de, 'p> {
    iter: std::slice::Iter<'de, (Key, Node)>,
    pending: Option<(&'de Node, String)>,
    path: &'p str,
}

impl<'de> MapAccess<'de> for MapDe<'de, '_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        match self.iter.next() {
            Some((key, value)) => {
                let path = join_key(self.path, &key.name);
                let r = seed.deserialize(KeyDe { key, path: &path }).map(Some);
                self.pending = Some((value, path));
                r
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let (node, path) = self.pending.take().ok_or_else(|| de::Error::custom("value requested before key"))?;
        seed.deserialize(NodeDe::of(node, path.clone())).map_err(|e| e.locate(&node.origin, &path))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

/// Deserializer for a mapping key: a string, parsed on demand as a number or
/// boolean when the target asks for one (e.g. `HashMap<u32, _>`).
struct KeyDe<'de, 'p> {
    key: &'de Key,
    path: &'p str,
}

impl KeyDe<'_, '_> {
    fn located<T>(&self, r: Result<T, DeError>) -> Result<T, DeError> {
        r.map_err(|e| e.locate(&self.key.origin, self.path))
    }
}

macro_rules! key_parse {
    ($($method:ident => $visit:ident : $ty:ty),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            let r = match self.key.name.trim().parse::<$ty>() {
                Ok(v) => visitor.$visit(v),
                Err(_) => visitor.visit_borrowed_str(&self.key.name),
            };
            self.located(r)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for KeyDe<'de, '_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = visitor.visit_borrowed_str(&self.key.name);
        self.located(r)
    }

    key_parse! {
        deserialize_bool => visit_bool: bool,
        deserialize_i8 => visit_i8: i8,
        deserialize_i16 => visit_i16: i16,
        deserialize_i32 => visit_i32: i32,
        deserialize_i64 => visit_i64: i64,
        deserialize_i128 => visit_i128: i128,
        deserialize_u8 => visit_u8: u8,
        deserialize_u16 => visit_u16: u16,
        deserialize_u32 => visit_u32: u32,
        deserialize_u64 => visit_u64: u64,
        deserialize_u128 => visit_u128: u128,
        deserialize_f32 => visit_f32: f32,
        deserialize_f64 => visit_f64: f64,
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let r = visitor.visit_enum(self.key.name.as_str().into_deserializer());
        self.located(r)
    }

    serde::forward_to_deserialize_any! {
        char str string bytes byte_buf unit unit_struct seq tuple tuple_struct
        map struct identifier ignored_any
    }
}

/// An enum written as a plain string: `mode: fast`.
struct BareVariant<'de, 'p> {
    name: &'de str,
    origin: &'de Origin,
    path: &'p str,
}

impl<'de, 'p> EnumAccess<'de> for BareVariant<'de, 'p> {
    type Error = DeError;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self), DeError> {
        let v = seed.deserialize(self.name.into_deserializer())?;
        Ok((v, self))
    }
}

impl<'de> BareVariant<'de, '_> {
    /// The content of a variant written without one: an empty value.
    fn empty(&self) -> NodeDe<'de> {
        NodeDe { node: &NULL_NODE, origin: self.origin, path: self.path.to_string() }
    }
}

impl<'de> VariantAccess<'de> for BareVariant<'de, '_> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(self.empty())
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, _visitor: V) -> Result<V::Value, DeError> {
        Err(de::Error::custom(format_args!(
            "variant \"{}\" needs a list of values: write `{}: [...]`",
            self.name, self.name
        )))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_map(self.empty(), visitor)
    }
}

/// An enum written as a single-key map: `method: {noise_da: {sigma: 0.1}}`.
struct MapVariant<'de> {
    key: &'de Key,
    value: &'de Node,
    path: String,
}

impl<'de> EnumAccess<'de> for MapVariant<'de> {
    type Error = DeError;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self), DeError> {
        let v = seed.deserialize(KeyDe { key: self.key, path: &self.path })?;
        Ok((v, self))
    }
}

impl<'de> VariantAccess<'de> for MapVariant<'de> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        if self.value.is_null() {
            Ok(())
        } else {
            Err(DeError::custom(format_args!(
                "variant \"{}\" takes no value, found {}",
                self.key.name,
                describe(&self.value.value.unexpected())
            ))
            .locate(&self.value.origin, &self.path))
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(NodeDe::of(self.value, self.path))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_seq(NodeDe::of(self.value, self.path), visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_map(NodeDe::of(self.value, self.path), visitor)
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    fn p(src: &str) -> Node {
        parse(src, Path::new("cfg.yaml")).unwrap()
    }

    fn perr(src: &str) -> ConfigError {
        parse(src, Path::new("cfg.yaml")).unwrap_err()
    }

    fn de<T: DeserializeOwned>(src: &str) -> Result<T, ConfigError> {
        from_node(&p(src))
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Optimizer {
        lr: f64,
        #[serde(default)]
        momentum: Option<f64>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Train {
        learning_rate: f64,
        epochs: u32,
        #[serde(default)]
        optimizer: Option<Optimizer>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Config {
        name: String,
        train: Train,
    }

    #[test]
    fn syntax_error_position() {
        let e = perr("a: 1\n  b: 2\n");
        assert_eq!(e.location, "cfg.yaml:2:4");
        assert_eq!(e.to_string(), "cfg.yaml:2:4: YAML syntax error: mapping values are not allowed in this context");
        let e = perr("a: 1\nb: \"unterminated\n");
        assert!(e.location.starts_with("cfg.yaml:"), "{e}");
        assert!(e.message.starts_with("YAML syntax error"), "{e}");
    }

    #[test]
    fn typo_key_at_exact_position_with_suggestion() {
        let src = "name: run\ntrain:\n  epochs: 3\n  lerning_rate: 0.1\n";
        let e = de::<Config>(src).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cfg.yaml:4:3: train.lerning_rate: unknown key \"lerning_rate\"; did you mean \"learning_rate\"?"
        );
        // Nothing close: list the expected keys.
        let e = de::<Config>("name: run\ntrain:\n  zzz: 1\n").unwrap_err();
        assert_eq!(e.location, "cfg.yaml:3:3");
        assert_eq!(e.message, "unknown key \"zzz\"; expected one of \"learning_rate\", \"epochs\", \"optimizer\"");
    }

    #[test]
    fn wrong_type_at_value_position() {
        let e = de::<Config>("name: run\ntrain:\n  learning_rate: abc\n  epochs: 3\n").unwrap_err();
        assert_eq!(e.to_string(), "cfg.yaml:3:18: train.learning_rate: expected f64, found string \"abc\"");
        let e = de::<Config>("name: run\ntrain:\n  learning_rate: 1\n  epochs: -2\n").unwrap_err();
        assert_eq!(e.location, "cfg.yaml:4:11");
        assert_eq!(e.key_path, "train.epochs");
        assert_eq!(e.message, "invalid value: expected u32, found integer -2");
        // Quoted numbers stay strings.
        let e = de::<Config>("name: run\ntrain: {learning_rate: '1', epochs: 1}\n").unwrap_err();
        assert_eq!(e.location, "cfg.yaml:2:24");
        assert_eq!(e.message, "expected f64, found string \"1\"");
        // A struct given a scalar.
        let e = de::<Config>("name: run\ntrain: 5\n").unwrap_err();
        assert_eq!(e.to_string(), "cfg.yaml:2:8: train: expected struct Train, found integer 5");
    }

    #[test]
    fn missing_key_at_enclosing_map() {
        let e = de::<Config>("name: run\ntrain:\n  epochs: 3\n").unwrap_err();
        assert_eq!(e.to_string(), "cfg.yaml:3:3: train: missing key \"learning_rate\"");
        let e = de::<Config>("train: {learning_rate: 1, epochs: 1}\n").unwrap_err();
        assert_eq!(e.to_string(), "cfg.yaml:1:1: missing key \"name\"");
        // An empty section is an empty map.
        let e = de::<Config>("name: x\ntrain:\n").unwrap_err();
        assert_eq!(e.to_string(), "cfg.yaml:2:6: train: missing key \"learning_rate\"");
    }

    #[test]
    fn nested_key_path() {
        let src = "name: run\ntrain:\n  learning_rate: 1\n  epochs: 2\n  optimizer:\n    lr: fast\n";
        let e = de::<Config>(src).unwrap_err();
        assert_eq!(e.key_path, "train.optimizer.lr");
        assert_eq!(e.location, "cfg.yaml:6:9");
        let src = "name: run\ntrain:\n  learning_rate: 1\n  epochs: 2\n  optimizer: {lr: 1, momentun: 0.9}\n";
        let e = de::<Config>(src).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cfg.yaml:5:22: train.optimizer.momentun: unknown key \"momentun\"; did you mean \"momentum\"?"
        );
        let ok =
            de::<Config>("name: run\ntrain:\n  learning_rate: 1e-4\n  epochs: 2\n  optimizer: {lr: 3, momentum: ~}\n")
                .unwrap();
        assert_eq!(ok.train.learning_rate, 1e-4);
        assert_eq!(ok.train.optimizer, Some(Optimizer { lr: 3.0, momentum: None }));
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct TestCase {
        name: String,
        protocol: Protocol,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Protocol {
        Full,
        Quick,
        Sampled { fraction: f64 },
        Repeat(u32),
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Suite {
        tests: Vec<TestCase>,
    }

    #[test]
    fn sequence_of_structs_error_path() {
        let src = "tests:\n  - name: a\n    protocol: full\n  - name: b\n    protocol: 7\n";
        let e = de::<Suite>(src).unwrap_err();
        assert_eq!(e.key_path, "tests[1].protocol");
        assert_eq!(e.location, "cfg.yaml:5:15");
        assert_eq!(e.message, "expected enum Protocol, found integer 7");
        let e = de::<Suite>("tests:\n  - name: a\n    protocol: full\n  - protocol: quick\n").unwrap_err();
        assert_eq!(e.to_string(), "cfg.yaml:4:5: tests[1]: missing key \"name\"");
    }

    #[test]
    fn enums_unit_and_struct_variants() {
        let src = "tests:\n  - {name: a, protocol: quick}\n  - name: b\n    protocol:\n      sampled:\n        fraction: 0.5\n  - {name: c, protocol: {repeat: 3}}\n";
        let s = de::<Suite>(src).unwrap();
        assert_eq!(s.tests[0].protocol, Protocol::Quick);
        assert_eq!(s.tests[1].protocol, Protocol::Sampled { fraction: 0.5 });
        assert_eq!(s.tests[2].protocol, Protocol::Repeat(3));

        // Unknown variant, plain string form: value position.
        let e = de::<Suite>("tests:\n  - {name: a, protocol: quik}\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "cfg.yaml:2:25: tests[0].protocol: unknown variant \"quik\"; did you mean \"quick\"?"
        );
        // Unknown variant, map form: the key's position.
        let e = de::<Suite>("tests:\n  - name: a\n    protocol:\n      sampeld: {fraction: 1}\n").unwrap_err();
        assert_eq!(e.location, "cfg.yaml:4:7");
        assert_eq!(e.key_path, "tests[0].protocol.sampeld");
        assert_eq!(e.message, "unknown variant \"sampeld\"; did you mean \"sampled\"?");
        // Error inside a struct variant.
        let e = de::<Suite>("tests:\n  - name: a\n    protocol:\n      sampled: {fraction: x}\n").unwrap_err();
        assert_eq!(e.key_path, "tests[0].protocol.sampled.fraction");
        assert_eq!(e.location, "cfg.yaml:4:27");
        // A struct variant named bare reads an empty map.
        let e = de::<Suite>("tests:\n  - {name: a, protocol: sampled}\n").unwrap_err();
        assert_eq!(e.to_string(), "cfg.yaml:2:25: tests[0].protocol: missing key \"fraction\"");
        // Unit variant with a value.
        let e = de::<Suite>("tests:\n  - {name: a, protocol: {full: 1}}\n").unwrap_err();
        assert_eq!(e.location, "cfg.yaml:2:32");
        assert_eq!(e.message, "variant \"full\" takes no value, found integer 1");
        // Two keys.
        let e = de::<Suite>("tests:\n  - {name: a, protocol: {full: , quick: }}\n").unwrap_err();
        assert_eq!(e.location, "cfg.yaml:2:25");
        assert!(e.message.contains("exactly one key"), "{e}");
    }

    #[test]
    fn merge_profile_overlay() {
        let mut base =
            p("train:\n  lr: 0.1\n  epochs: 10\n  opt: {name: adam, betas: [0.9, 0.99]}\nmethods: [a, b, c]\n");
        let overlay = parse(
            "train:\n  lr: 0.01\n  opt: {betas: [0.5]}\n  extra: true\nmethods: [z]\n",
            Path::new("profile.yaml"),
        )
        .unwrap();
        base.merge(overlay);
        let lr = base.lookup("train.lr").unwrap();
        assert_eq!(lr.value, Value::Float(0.01));
        assert_eq!(lr.location(), "profile.yaml:2:7");
        assert_eq!(base.lookup("train.epochs").unwrap().value, Value::Int(10));
        assert_eq!(base.lookup("train.opt.name").unwrap().value, Value::Str("adam".into()));
        // Lists replace.
        let betas = base.lookup("train.opt.betas").unwrap();
        assert_eq!(betas.value, Value::Seq(vec![Node::new(Value::Float(0.5), betas_origin(betas))]));
        let Value::Seq(methods) = &base.get("methods").unwrap().value else { panic!() };
        assert_eq!(methods.len(), 1);
        assert_eq!(base.lookup("train.extra").unwrap().value, Value::Bool(true));
        // New keys are appended after existing ones.
        let Value::Map(train) = &base.get("train").unwrap().value else { panic!() };
        let names: Vec<_> = train.iter().map(|(k, _)| k.name.as_str()).collect();
        assert_eq!(names, ["lr", "epochs", "opt", "extra"]);

        let removed = base.remove_key("methods").unwrap();
        assert_eq!(removed.location(), "profile.yaml:5:10");
        assert!(base.get("methods").is_none());
        assert!(base.remove_key("methods").is_none());
    }

    fn betas_origin(betas: &Node) -> Origin {
        let Value::Seq(items) = &betas.value else { panic!() };
        items[0].origin.clone()
    }

    #[test]
    fn set_path_creates_and_replaces() {
        let mut cfg = p("name: run\ntrain:\n  learning_rate: 0.1\n  epochs: 3\n");
        cfg.set_path("train.learning_rate=1e-4").unwrap();
        cfg.set_path("train.optimizer.lr=3").unwrap();
        cfg.set_path("name=\"123\"").unwrap();
        let c: Config = from_node(&cfg).unwrap();
        assert_eq!(c.train.learning_rate, 1e-4);
        assert_eq!(c.train.optimizer.unwrap().lr, 3.0);
        assert_eq!(c.name, "123");
        assert_eq!(
            cfg.lookup("train.optimizer").unwrap().origin,
            Origin::Override { arg: "train.optimizer.lr=3".into() }
        );

        // Flow values and types.
        let mut n = p("a: 1\n");
        n.set_path("b=[1, 2.5, x]").unwrap();
        n.set_path("c = true").unwrap();
        n.set_path("d=").unwrap();
        n.set_path("e={k: v}").unwrap();
        assert_eq!(from_node::<(i64, f64, String)>(n.get("b").unwrap()).unwrap(), (1, 2.5, "x".into()));
        assert_eq!(n.get("c").unwrap().value, Value::Bool(true));
        assert!(n.get("d").unwrap().is_null());
        assert_eq!(n.lookup("e.k").unwrap().value, Value::Str("v".into()));

        // Wrong type from an override is reported at the override.
        let mut cfg = p("name: run\ntrain:\n  learning_rate: 0.1\n  epochs: 3\n");
        cfg.set_path("train.learning_rate=abc").unwrap();
        let e = from_node::<Config>(&cfg).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--set train.learning_rate=abc: train.learning_rate: expected f64, found string \"abc\""
        );
        // A typo'd override path becomes an unknown key.
        cfg.set_path("train.learning_rate=0.5").unwrap();
        cfg.set_path("train.epoch=4").unwrap();
        let e = from_node::<Config>(&cfg).unwrap_err();
        assert_eq!(e.to_string(), "--set train.epoch=4: train.epoch: unknown key \"epoch\"; did you mean \"epochs\"?");
    }

    #[test]
    fn set_path_errors_and_indexing() {
        let mut cfg = p("train:\n  lr: 0.1\nmethods:\n  - {sigma: 1}\n  - {sigma: 2}\n");
        let before = cfg.clone();
        let e = cfg.set_path("train.lr").unwrap_err();
        assert_eq!(e.to_string(), "--set train.lr: expected an assignment `key.path=value`");
        let e = cfg.set_path("=3").unwrap_err();
        assert_eq!(e.location, "--set =3");
        assert_eq!(e.message, "empty key path before `=`");
        assert!(cfg.set_path("train..lr=3").is_err());
        let e = cfg.set_path("train.lr.x=1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "--set train.lr.x=1: train.lr: cannot set key \"x\": `train.lr` is a float (from cfg.yaml:2:7), not a map"
        );
        let e = cfg.set_path("train.new.lr[0]=1").unwrap_err();
        assert_eq!(e.key_path, "train.new.lr");
        let e = cfg.set_path("methods[5].sigma=1").unwrap_err();
        assert_eq!(e.message, "index [5] is out of range: the sequence has 2 items");
        let e = cfg.set_path("train.lr=[1, 2").unwrap_err();
        assert_eq!(e.location, "--set train.lr=[1, 2");
        assert!(e.message.starts_with("invalid value: YAML syntax error"), "{e}");
        assert_eq!(cfg, before, "failed set_path must not modify the tree");

        cfg.set_path("methods[1].sigma=0.5").unwrap();
        assert_eq!(cfg.lookup("methods[1].sigma").unwrap().value, Value::Float(0.5));
        assert_eq!(cfg.lookup("methods[0].sigma").unwrap().value, Value::Int(1));
    }

    #[test]
    fn duplicate_key_error() {
        let e = perr("train:\n  lr: 1\n  epochs: 2\n  lr: 3\n");
        assert_eq!(e.to_string(), "cfg.yaml:4:3: train.lr: duplicate key \"lr\" (first defined at cfg.yaml:2:3)");
        let e = perr("{a: 1, a: 2}");
        assert_eq!(e.location, "cfg.yaml:1:8");
    }

    #[test]
    fn scalar_resolution_core_schema() {
        let n = p(concat!(
            "a: ~\nb:\nc: null\nd: true\ne: False\nf: 42\ng: -7\nh: 1e-4\ni: .inf\nj: -.inf\n",
            "k: .nan\nl: 1.5\nm: '3'\nn: \"true\"\no: yes\np: 0x1F\nq: 0o17\nr: 1_000\ns: .5\nt: +3\n",
            "u: 1.\nv: 1e\nw: |\n  block\n",
        ));
        let v = |k: &str| n.get(k).unwrap().value.clone();
        assert_eq!(v("a"), Value::Null);
        assert_eq!(v("b"), Value::Null);
        assert_eq!(v("c"), Value::Null);
        assert_eq!(v("d"), Value::Bool(true));
        assert_eq!(v("e"), Value::Bool(false));
        assert_eq!(v("f"), Value::Int(42));
        assert_eq!(v("g"), Value::Int(-7));
        assert_eq!(v("h"), Value::Float(1e-4));
        assert_eq!(v("i"), Value::Float(f64::INFINITY));
        assert_eq!(v("j"), Value::Float(f64::NEG_INFINITY));
        assert!(matches!(v("k"), Value::Float(x) if x.is_nan()));
        assert_eq!(v("l"), Value::Float(1.5));
        assert_eq!(v("m"), Value::Str("3".into()));
        assert_eq!(v("n"), Value::Str("true".into()));
        assert_eq!(v("o"), Value::Str("yes".into()));
        assert_eq!(v("p"), Value::Int(31));
        assert_eq!(v("q"), Value::Int(15));
        assert_eq!(v("r"), Value::Str("1_000".into()));
        assert_eq!(v("s"), Value::Float(0.5));
        assert_eq!(v("t"), Value::Int(3));
        assert_eq!(v("u"), Value::Float(1.0));
        assert_eq!(v("v"), Value::Str("1e".into()));
        assert_eq!(v("w"), Value::Str("block\n".into()));

        let e = perr("big: 99999999999999999999\n");
        assert_eq!(e.location, "cfg.yaml:1:6");
        assert_eq!(e.key_path, "big");
        // Empty documents are null.
        assert!(p("").is_null());
        assert!(p("# nothing\n").is_null());
    }

    #[test]
    fn documents_tags_and_aliases() {
        let e = perr("a: 1\n---\nb: 2\n");
        assert_eq!(e.location, "cfg.yaml:2:1");
        let e = perr("a: !!str 5\n");
        assert_eq!(
            e.to_string(),
            "cfg.yaml:1:4: a: YAML tags are not supported (found `!!str`); quote the value to get a string"
        );
        assert!(perr("a: !custom {x: 1}\n").message.contains("`!custom`"));

        let n = p("base: &b {lr: 1, epochs: 2}\nrun: *b\n");
        let run = n.get("run").unwrap();
        assert_eq!(run.lookup("epochs").unwrap().value, Value::Int(2));
        let e = perr("a: *nope\n");
        assert_eq!(e.location, "cfg.yaml:1:4");
        let e = perr("&x [1, *x]\n");
        assert!(e.message.contains("recursive"), "{e}");
        // Billion laughs is cut off.
        let mut src = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            src.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(perr(&src).message.contains("aliases expand"));
        // Nesting depth is enforced through aliases too.
        let mut src = String::from("a0: &a0 [x]\n");
        for i in 1..300 {
            src.push_str(&format!("a{i}: &a{i} [*a{}]\n", i - 1));
        }
        assert!(perr(&src).message.contains("nesting deeper"), "{}", perr(&src));
        let deep = format!("{}{}", "[".repeat(150), "]".repeat(150));
        assert!(perr(&deep).message.contains("nesting deeper"), "{}", perr(&deep));
        assert!(perr("[a, b]: 1\n").message.contains("mapping keys must be scalars"));
    }

    #[test]
    fn misc_deserialization() {
        #[derive(Debug, Deserialize, PartialEq)]
        struct Meters(f64);
        #[derive(Debug, Deserialize, PartialEq)]
        #[serde(deny_unknown_fields)]
        struct M {
            dist: Meters,
            opt: Option<u8>,
            #[serde(default)]
            none: Option<u8>,
            pair: (u8, String),
            table: BTreeMap<u32, bool>,
            names: Vec<String>,
            unit: (),
        }
        let m: M =
            de("dist: 3\nopt: 7\nnone: null\npair: [1, x]\ntable: {1: true, 20: false}\nnames: [a, 'b']\nunit: ~\n")
                .unwrap();
        assert_eq!(m.dist, Meters(3.0));
        assert_eq!(m.opt, Some(7));
        assert_eq!(m.none, None);
        assert_eq!(m.pair, (1, "x".into()));
        assert_eq!(m.table, BTreeMap::from([(1, true), (20, false)]));
        assert_eq!(m.names, ["a", "b"]);

        let e = de::<M>("dist: 3\nopt: 7\npair: [1, x, 3]\ntable: {}\nnames: []\nunit:\n").unwrap_err();
        assert_eq!(e.to_string(), "cfg.yaml:3:7: pair: too many elements: expected 2, found 3");
        let e = de::<M>("dist: 3\nopt: 7\npair: [1, x]\ntable: {x: true}\nnames: []\nunit:\n").unwrap_err();
        assert_eq!(e.to_string(), "cfg.yaml:4:9: table.x: expected u32, found string \"x\"");
        let e = de::<M>("dist: 3\nopt: 300\npair: [1, x]\ntable: {}\nnames: []\nunit:\n").unwrap_err();
        assert_eq!(e.to_string(), "cfg.yaml:2:6: opt: invalid value: expected u8, found integer 300");
        let e = de::<M>("dist: 3\nopt: 3\npair: [1, x]\ntable: {}\nnames: oops\nunit:\n").unwrap_err();
        assert_eq!(e.to_string(), "cfg.yaml:5:8: names: expected a sequence, found string \"oops\"");

        // Flatten goes through serde's buffered content.
        #[derive(Debug, Deserialize, PartialEq)]
        struct Flat {
            name: String,
            #[serde(flatten)]
            rest: BTreeMap<String, i64>,
        }
        let f: Flat = de("name: x\na: 1\nb: 2\n").unwrap();
        assert_eq!(f.rest, BTreeMap::from([("a".into(), 1), ("b".into(), 2)]));

        // Subtree with a path prefix.
        let n = p("train:\n  learning_rate: x\n  epochs: 1\n");
        let e = from_node_at::<Train>(n.get("train").unwrap(), "train").unwrap_err();
        assert_eq!(e.to_string(), "cfg.yaml:2:18: train.learning_rate: expected f64, found string \"x\"");

        // Node::error for post-validation.
        let lr = n.lookup("train.learning_rate").unwrap();
        assert_eq!(
            lr.error("train.learning_rate", "must be > 0").to_string(),
            "cfg.yaml:2:18: train.learning_rate: must be > 0"
        );
        assert_eq!(ConfigError::new("x.yaml", "", "boom").to_string(), "x.yaml: boom");
    }

    #[test]
    fn buffered_enums_report_at_the_element() {
        #[derive(Debug, Deserialize, PartialEq)]
        #[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
        enum Step {
            Denoise { sigma: f64 },
            Copy,
        }
        #[derive(Debug, Deserialize, PartialEq)]
        #[serde(untagged)]
        enum Either {
            N(f64),
            S(String),
        }
        let n = p("steps:\n  - kind: denoise\n    sigma: 1\n  - kind: copy\n");
        let v: Vec<Step> = from_node_at(n.get("steps").unwrap(), "steps").unwrap();
        assert_eq!(v, [Step::Denoise { sigma: 1.0 }, Step::Copy]);
        // serde buffers tagged content: the error lands on the list item.
        let n = p("steps:\n  - kind: denoise\n    sigma: x\n");
        let e = from_node_at::<Vec<Step>>(n.get("steps").unwrap(), "steps").unwrap_err();
        assert_eq!(e.to_string(), "cfg.yaml:2:5: steps[0]: expected f64, found string \"x\"");
        // The tag itself is still read from its node.
        let n = p("steps:\n  - kind: cpy\n");
        let e = from_node_at::<Vec<Step>>(n.get("steps").unwrap(), "steps").unwrap_err();
        assert_eq!(e.to_string(), "cfg.yaml:2:11: steps[0].kind: unknown variant \"cpy\"; did you mean \"copy\"?");
        let e = from_node::<Vec<Either>>(&p("[1, a, [x]]")).unwrap_err();
        assert_eq!(e.location, "cfg.yaml:1:8");
        assert_eq!(e.key_path, "[2]");
    }
}
