//! Deserialization: typed values from a node tree, errors carrying line:column and the key
//! path, unknown keys with a "did you mean".

use super::*;

// ---------------------------------------------------------------------------
// Deserialization
// ---------------------------------------------------------------------------

/// Deserializes a typed value from a node tree. Errors carry the position and
/// key path of the innermost offending node or key.
pub(crate) fn from_node<T: DeserializeOwned>(node: &Node) -> Result<T, ConfigError> {
    from_node_at(node, "")
}

/// Like [`from_node`] for a subtree; `key_path` is the subtree's path
/// (e.g. `"train"`), used as the prefix of key paths in errors.
pub(crate) fn from_node_at<T: DeserializeOwned>(node: &Node, key_path: &str) -> Result<T, ConfigError> {
    T::deserialize(NodeDe { node, origin: &node.origin, path: key_path.to_string() })
        .map_err(|e| e.into_config(&node.origin, key_path))
}

pub(super) fn unknown_message(what: &str, plural: &str, word: &str, expected: &[&str]) -> String {
    if let Some(s) = did_you_mean(word, expected) {
        format!("unknown {what} \"{word}\"; did you mean \"{s}\"?")
    } else if expected.is_empty() {
        format!("unknown {what} \"{word}\"; no {plural} are allowed here")
    } else {
        let list: Vec<String> = expected.iter().map(|e| format!("\"{e}\"")).collect();
        format!("unknown {what} \"{word}\"; expected one of {}", list.join(", "))
    }
}

pub(super) fn describe(u: &Unexpected<'_>) -> String {
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
pub(super) struct DeError {
    message: String,
    at: Option<(String, String)>,
}

impl DeError {
    pub(super) fn locate(mut self, origin: &Origin, path: &str) -> Self {
        if self.at.is_none() {
            self.at = Some((origin.to_string(), path.to_string()));
        }
        self
    }

    pub(super) fn into_config(self, origin: &Origin, path: &str) -> ConfigError {
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
pub(super) struct NodeDe<'de> {
    node: &'de Node,
    origin: &'de Origin,
    path: String,
}

impl<'de> NodeDe<'de> {
    pub(super) fn of(node: &'de Node, path: String) -> Self {
        NodeDe { node, origin: &node.origin, path }
    }

    pub(super) fn located<T>(&self, r: Result<T, DeError>) -> Result<T, DeError> {
        r.map_err(|e| e.locate(self.origin, &self.path))
    }

    pub(super) fn type_error<T>(&self, exp: &dyn Expected) -> Result<T, DeError> {
        self.located(Err(de::Error::invalid_type(self.node.value.unexpected(), exp)))
    }

    pub(super) fn visit_entries<V: Visitor<'de>>(
        &self,
        entries: &'de [(Key, Node)],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let mut access = MapDe { iter: entries.iter(), pending: None, path: &self.path };
        let r = visitor.visit_map(&mut access);
        self.located(r)
    }

    pub(super) fn visit_items<V: Visitor<'de>>(&self, items: &'de [Node], visitor: V) -> Result<V::Value, DeError> {
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

pub(super) struct SeqDe<'de, 'p> {
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

pub(super) struct MapDe<'de, 'p> {
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
pub(super) struct KeyDe<'de, 'p> {
    key: &'de Key,
    path: &'p str,
}

impl KeyDe<'_, '_> {
    pub(super) fn located<T>(&self, r: Result<T, DeError>) -> Result<T, DeError> {
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
pub(super) struct BareVariant<'de, 'p> {
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
    pub(super) fn empty(&self) -> NodeDe<'de> {
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
pub(super) struct MapVariant<'de> {
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
