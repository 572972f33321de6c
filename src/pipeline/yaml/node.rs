//! The document model: nodes with their source positions, and the `--set` edits on it.

use super::*;

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

    pub(super) fn unexpected(&self) -> Unexpected<'_> {
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

pub(super) fn key_path_prefix(key_path: &str) -> String {
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
    pub(crate) fn location(&self) -> String {
        self.origin.to_string()
    }

    /// An error located at this node, e.g. for semantic validation after
    /// deserialization (`cfg.lookup("train.lr").unwrap().error("train.lr", "must be > 0")`).
    pub fn error(&self, key_path: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::at(&self.origin, key_path, message)
    }

    pub(crate) fn is_null(&self) -> bool {
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
    pub(crate) fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
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
    pub(crate) fn lookup(&self, key_path: &str) -> Option<&Node> {
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
    pub(crate) fn merge(&mut self, overlay: Node) {
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
    pub(crate) fn remove_key(&mut self, key: &str) -> Option<Node> {
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
    pub(crate) fn set_path(&mut self, assignment: &str) -> Result<(), ConfigError> {
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

    pub(super) fn set_origin_recursive(&mut self, origin: &Origin) {
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
    pub(super) fn size(&self) -> (usize, usize) {
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

pub(super) fn display_path(path: &str) -> &str {
    if path.is_empty() { "<root>" } else { path }
}

pub(super) fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

pub(super) enum Seg {
    Key(String),
    Index(usize),
}

/// Parses `a.b[2].c` into segments.
pub(super) fn parse_key_path(path: &str) -> Result<Vec<Seg>, String> {
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
