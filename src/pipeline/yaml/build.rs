//! Parsing: saphyr's event stream built into nodes (anchors, aliases, plain-scalar typing,
//! depth and alias-expansion limits).

use super::*;

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/// Maximum nesting depth of collections.
pub(super) const MAX_DEPTH: usize = 128;
/// Maximum number of nodes produced by alias expansion, all aliases together.
pub(super) const MAX_ALIAS_NODES: usize = 100_000;

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

pub(super) struct Builder<'a> {
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    path: &'a Path,
    /// anchor id → (node, node count, nesting height)
    anchors: HashMap<usize, (Node, usize, usize)>,
    alias_budget: usize,
}

impl<'a> Builder<'a> {
    pub(super) fn origin(&self, span: &Span) -> Origin {
        Origin::File {
            path: self.path.to_path_buf(),
            mark: Mark { line: span.start.line(), col: span.start.col() + 1 },
        }
    }

    pub(super) fn err(&self, span: &Span, key_path: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::at(&self.origin(span), key_path, message)
    }

    pub(super) fn scan_err(&self, e: ScanError) -> ConfigError {
        let m = e.marker();
        ConfigError::new(
            format!("{}:{}:{}", self.path.display(), m.line(), m.col() + 1),
            "",
            format!("YAML syntax error: {}", e.info()),
        )
    }

    pub(super) fn next(&mut self) -> Result<(Event<'a>, Span), ConfigError> {
        match self.parser.next_event() {
            Some(Ok(ev)) => Ok(ev),
            Some(Err(e)) => Err(self.scan_err(e)),
            None => {
                Err(ConfigError::new(self.path.display().to_string(), "", "YAML syntax error: unexpected end of input"))
            }
        }
    }

    pub(super) fn document(&mut self) -> Result<Node, ConfigError> {
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

    pub(super) fn check_tag(&self, tag: Option<&Tag>, span: &Span, key_path: &str) -> Result<(), ConfigError> {
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

    pub(super) fn register_anchor(&mut self, anchor: usize, node: &Node) {
        if anchor != 0 {
            let (count, height) = node.size();
            self.anchors.insert(anchor, (node.clone(), count, height));
        }
    }

    pub(super) fn node(
        &mut self,
        ev: Event<'a>,
        span: Span,
        key_path: &str,
        depth: usize,
    ) -> Result<Node, ConfigError> {
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

pub(super) fn span_at_start() -> Span {
    Span::empty(saphyr_parser::Marker::new(0, 1, 0))
}

/// Resolves a plain scalar with the YAML 1.2 core schema.
pub(super) fn resolve_plain(s: &str) -> Result<Value, String> {
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

pub(super) fn strip_sign(s: &str) -> &str {
    s.strip_prefix(['-', '+']).unwrap_or(s)
}

/// `[-+]?[0-9]+`
pub(super) fn is_decimal_int(s: &str) -> bool {
    let d = strip_sign(s);
    !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())
}

/// `0x[0-9a-fA-F]+` / `0o[0-7]+`
pub(super) fn radix_digits<'s>(s: &'s str, prefix: &str, radix: u32) -> Option<&'s str> {
    let d = s.strip_prefix(prefix)?;
    (!d.is_empty() && d.chars().all(|c| c.is_digit(radix))).then_some(d)
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`
pub(super) fn is_float(s: &str) -> bool {
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
