//! Reading a request body into this crate's types, so that every refusal names its field and
//! is sorted into the right status.
//!
//! serde_json reading straight into a derived type cannot do either: a wrong JSON type and a
//! value that breaks a rule are both one `serde_json::Error` with a message, a derived struct
//! also accepts an array, and a number is only known as what it became (18446744073709551616
//! comes back as 18446744073709552000). So a body is read in two steps:
//!
//! 1. serde_json checks the syntax and [`Node`] keeps the document as written: numbers as their
//!    text, object keys in order, duplicates included.
//! 2. [`typed`] feeds a derived type from the node through [`NodeDeserializer`], whose error
//!    type, [`Refusal`], records which kind of refusal serde raised; serde_path_to_error
//!    records where.
//!
//! The kinds map onto the API's rule: wrong JSON types, arrays for objects, missing, unknown
//! or repeated fields are the request's structure (400); a well-typed value that breaks a
//! rule (a string of the wrong shape, an enum value not in the set, a whole number out of
//! range) is invalid (422).

use serde::de::value::{MapDeserializer, SeqDeserializer, StrDeserializer};
use serde::de::{self, DeserializeOwned, Deserializer, IntoDeserializer, Unexpected, Visitor};
use serde_json::value::RawValue;
use std::fmt;

/// A JSON document as written.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Null,
    Bool(bool),
    /// The number's text, exactly as it appears in the body.
    Number(String),
    String(String),
    Array(Vec<Node>),
    /// Entries in body order; a repeated key appears twice (and the derived types refuse it).
    Object(Vec<(String, Node)>),
}

/// One step of a field path: an object key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

impl Node {
    /// Reads a JSON text.
    ///
    /// # Errors
    /// serde_json's syntax error (not JSON, not UTF-8, trailing data).
    pub fn read(body: &[u8]) -> Result<Node, serde_json::Error> {
        let raw: Box<RawValue> = serde_json::from_slice(body)?;
        Node::from_raw(&raw)
    }

    /// The node of an already parsed value (numbers as serde_json prints them).
    pub fn from_value(value: &serde_json::Value) -> Node {
        use serde_json::Value;
        match value {
            Value::Null => Node::Null,
            Value::Bool(b) => Node::Bool(*b),
            Value::Number(n) => Node::Number(n.to_string()),
            Value::String(s) => Node::String(s.clone()),
            Value::Array(items) => Node::Array(items.iter().map(Node::from_value).collect()),
            Value::Object(m) => Node::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), Node::from_value(v)))
                    .collect(),
            ),
        }
    }

    fn from_raw(raw: &RawValue) -> Result<Node, serde_json::Error> {
        let text = raw.get().trim();
        Ok(match text.as_bytes().first() {
            Some(b'{') => {
                let Entries(entries) = serde_json::from_str(text)?;
                Node::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| Ok((k, Node::from_raw(&v)?)))
                        .collect::<Result<_, serde_json::Error>>()?,
                )
            }
            Some(b'[') => {
                let items: Vec<Box<RawValue>> = serde_json::from_str(text)?;
                Node::Array(
                    items
                        .iter()
                        .map(|v| Node::from_raw(v))
                        .collect::<Result<_, _>>()?,
                )
            }
            Some(b'"') => Node::String(serde_json::from_str(text)?),
            Some(b't') => Node::Bool(true),
            Some(b'f') => Node::Bool(false),
            Some(b'n') => Node::Null,
            // serde_json has checked the syntax: anything else is a number.
            _ => Node::Number(text.to_string()),
        })
    }

    /// The object's entries, or None for any other kind of value.
    pub fn entries(&self) -> Option<&[(String, Node)]> {
        match self {
            Node::Object(entries) => Some(entries),
            _ => None,
        }
    }

    /// The value at `path` below this one.
    pub fn at(&self, path: &[Step]) -> Option<&Node> {
        let Some((first, rest)) = path.split_first() else {
            return Some(self);
        };
        let next = match (self, first) {
            (Node::Object(entries), Step::Key(key)) => {
                entries.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
            }
            (Node::Array(items), Step::Index(i)) => items.get(*i),
            _ => None,
        }?;
        next.at(rest)
    }

    /// The value as a message quotes it: numbers as typed, strings as they are, and the kind
    /// of anything bigger.
    pub fn typed(&self) -> String {
        match self {
            Node::Null => "null".into(),
            Node::Bool(b) => b.to_string(),
            Node::Number(text) => text.clone(),
            Node::String(s) => s.chars().take(80).collect(),
            Node::Array(_) => "an array".into(),
            Node::Object(_) => "an object".into(),
        }
    }

    /// What kind of JSON value this is, for "expected an object, got an array".
    pub fn kind(&self) -> String {
        match self {
            Node::String(s) => format!("the string \"{}\"", s.chars().take(80).collect::<String>()),
            other => other.typed(),
        }
    }
}

/// An object's entries in order, duplicates kept (a map type would drop them).
struct Entries(Vec<(String, Box<RawValue>)>);

impl<'de> de::Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Why serde refused a value, by kind: the first five are the request's structure (400), the
/// last three a value that breaks a rule (422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("expected {expected}")]
    Type { expected: String },
    #[error("expected {expected}")]
    Length { expected: String },
    #[error("missing field {0}")]
    Missing(&'static str),
    #[error("unknown field {field}; expected one of {}", expected.join(", "))]
    Unknown {
        field: String,
        expected: &'static [&'static str],
    },
    #[error("field {0} given twice")]
    Duplicate(&'static str),
    #[error("expected {expected}")]
    Value { expected: String },
    #[error("'{variant}' is not valid: expected one of {}", expected.join(", "))]
    Variant {
        variant: String,
        expected: &'static [&'static str],
    },
    #[error("{0}")]
    Custom(String),
}

impl Refusal {
    /// Whether this is about the request's structure (400) rather than a value's rule (422).
    pub fn is_structure(&self) -> bool {
        !matches!(
            self,
            Refusal::Value { .. } | Refusal::Variant { .. } | Refusal::Custom(_)
        )
    }
}

/// serde's words for what a visitor expects, in the API's: a request knows objects, arrays,
/// strings and numbers, not structs, sequences and `f64`.
fn plain(expected: &dyn de::Expected) -> String {
    let text = expected.to_string();
    if text.starts_with("struct ") || text == "a map" {
        "an object".into()
    } else if text.starts_with("enum ") || text == "variant identifier" {
        "a string".into()
    } else if text == "a sequence" || text.starts_with("tuple") {
        "an array".into()
    } else if text == "f64" || text == "f32" {
        "a number".into()
    } else {
        text
    }
}

impl de::Error for Refusal {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Refusal::Custom(msg.to_string())
    }
    fn invalid_type(_: Unexpected, expected: &dyn de::Expected) -> Self {
        Refusal::Type {
            expected: plain(expected),
        }
    }
    fn invalid_value(_: Unexpected, expected: &dyn de::Expected) -> Self {
        Refusal::Value {
            expected: plain(expected),
        }
    }
    fn invalid_length(_: usize, expected: &dyn de::Expected) -> Self {
        Refusal::Length {
            expected: plain(expected),
        }
    }
    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        Refusal::Variant {
            variant: variant.chars().take(64).collect(),
            expected,
        }
    }
    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        Refusal::Unknown {
            field: field.chars().take(64).collect(),
            expected,
        }
    }
    fn missing_field(field: &'static str) -> Self {
        Refusal::Missing(field)
    }
    fn duplicate_field(field: &'static str) -> Self {
        Refusal::Duplicate(field)
    }
}

/// A refusal and where it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The path of the value refused (for a missing or unknown field, of its object).
    pub path: Vec<Step>,
    pub refusal: Refusal,
}

/// Reads `node` as a `T`.
///
/// # Errors
/// The first refusal, with its path.
pub fn typed<T: DeserializeOwned>(node: &Node) -> Result<T, Located> {
    serde_path_to_error::deserialize(NodeDeserializer(node)).map_err(|e| {
        let path = e
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Map { key } => Some(Step::Key(key.clone())),
                serde_path_to_error::Segment::Seq { index } => Some(Step::Index(*index)),
                _ => None,
            })
            .collect();
        Located {
            path,
            refusal: e.into_inner(),
        }
    })
}

/// Feeds a [`Node`] to a derived type.
#[derive(Debug, Clone, Copy)]
pub struct NodeDeserializer<'a>(pub &'a Node);

impl<'de> IntoDeserializer<'de, Refusal> for NodeDeserializer<'_> {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

/// serde_json's reading of a number: an integer that fits u64 or i64 as one, anything else
/// (a fraction, an exponent, an integer beyond 64 bits) as an f64.
fn visit_number<'de, V: Visitor<'de>>(text: &str, v: V) -> Result<V::Value, Refusal> {
    if !text.contains(['.', 'e', 'E']) {
        if let Ok(n) = text.parse::<u64>() {
            return v.visit_u64(n);
        }
        if let Ok(n) = text.parse::<i64>() {
            return v.visit_i64(n);
        }
    }
    match text.parse::<f64>() {
        Ok(n) => v.visit_f64(n),
        Err(_) => Err(de::Error::invalid_type(Unexpected::Other(text), &v)),
    }
}

impl NodeDeserializer<'_> {
    fn unexpected(&self) -> Unexpected<'_> {
        match self.0 {
            Node::Null => Unexpected::Unit,
            Node::Bool(b) => Unexpected::Bool(*b),
            Node::Number(text) => Unexpected::Other(text),
            Node::String(s) => Unexpected::Str(s),
            Node::Array(_) => Unexpected::Seq,
            Node::Object(_) => Unexpected::Map,
        }
    }
}

impl<'de> Deserializer<'de> for NodeDeserializer<'_> {
    type Error = Refusal;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Refusal> {
        match self.0 {
            Node::Null => v.visit_unit(),
            Node::Bool(b) => v.visit_bool(*b),
            Node::Number(text) => visit_number(text, v),
            Node::String(s) => v.visit_str(s),
            Node::Array(items) => {
                let mut seq = SeqDeserializer::new(items.iter().map(NodeDeserializer));
                let value = v.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(value)
            }
            Node::Object(entries) => {
                let mut map = MapDeserializer::new(
                    entries
                        .iter()
                        .map(|(k, n)| (StrKey(k.as_str()), NodeDeserializer(n))),
                );
                let value = v.visit_map(&mut map)?;
                map.end()?;
                Ok(value)
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Refusal> {
        match self.0 {
            Node::Null => v.visit_none(),
            _ => v.visit_some(self),
        }
    }

    /// Only an object is a struct: serde's derive would also take an array, field by field.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Refusal> {
        self.deserialize_map(v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Refusal> {
        match self.0 {
            Node::Object(_) => self.deserialize_any(v),
            _ => Err(de::Error::invalid_type(self.unexpected(), &v)),
        }
    }

    /// Enums in requests are strings (unit variants).
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Refusal> {
        match self.0 {
            Node::String(s) => v.visit_enum(StrDeserializer::<Refusal>::new(s)),
            _ => Err(de::Error::invalid_type(self.unexpected(), &v)),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, Refusal> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Refusal> {
        v.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct identifier
    }
}

/// An object key (a `&str` deserializer, here so it may live as long as the node).
#[derive(Debug, Clone, Copy)]
struct StrKey<'a>(&'a str);

impl<'de> IntoDeserializer<'de, Refusal> for StrKey<'_> {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> Deserializer<'de> for StrKey<'_> {
    type Error = Refusal;
    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Refusal> {
        v.visit_str(self.0)
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        x: u32,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        name: String,
        #[serde(default)]
        inner: Option<Inner>,
        #[serde(default)]
        list: Vec<Inner>,
        #[serde(default)]
        flag: bool,
    }

    fn read(body: &str) -> Result<Outer, Located> {
        typed(&Node::read(body.as_bytes()).expect("JSON"))
    }

    fn key(k: &str) -> Step {
        Step::Key(k.into())
    }

    #[test]
    fn numbers_keep_their_text() {
        let node = Node::read(br#"{"a": 18446744073709551616, "b": 2.50, "c": -0}"#).expect("JSON");
        let texts: Vec<String> = ["a", "b", "c"]
            .iter()
            .map(|k| node.at(&[key(k)]).map(Node::typed).unwrap_or_default())
            .collect();
        assert_eq!(texts, ["18446744073709551616", "2.50", "-0"]);
    }

    #[test]
    fn refusals_carry_their_kind_and_path() {
        let ok = read(r#"{"name": "a", "inner": {"x": 1}, "list": [{"x": 2}]}"#).expect("ok");
        assert_eq!(ok.list, vec![Inner { x: 2 }]);
        for (body, path, structure) in [
            (r#"{"name": 1}"#, vec![key("name")], true),
            (r#"["a"]"#, vec![], true),
            (r#"{"name": "a", "inner": [1]}"#, vec![key("inner")], true),
            (r#"{"name": "a", "inner": {}}"#, vec![key("inner")], true),
            (
                r#"{"name": "a", "inner": {"x": 1, "y": 2}}"#,
                vec![key("inner"), key("y")],
                true,
            ),
            (r#"{"name": "a", "name": "b"}"#, vec![], true),
            (
                r#"{"name": "a", "list": [{"x": 1}, {"x": "2"}]}"#,
                vec![key("list"), Step::Index(1), key("x")],
                true,
            ),
            (
                r#"{"name": "a", "inner": {"x": -1}}"#,
                vec![key("inner"), key("x")],
                false,
            ),
            (r#"{"name": "a", "flag": "yes"}"#, vec![key("flag")], true),
        ] {
            let err = read(body).expect_err(body);
            assert_eq!(err.path, path, "{body}: {:?}", err.refusal);
            assert_eq!(
                err.refusal.is_structure(),
                structure,
                "{body}: {:?}",
                err.refusal
            );
        }
    }

    #[test]
    fn duplicate_keys_and_arrays_for_objects_are_structure() {
        let err = read(r#"["a", null, [], false]"#).expect_err("an array is no struct");
        assert_eq!(
            err.refusal,
            Refusal::Type {
                expected: "an object".into()
            }
        );
        let err = read(r#"{"name": "a", "name": "a"}"#).expect_err("twice");
        assert_eq!(err.refusal, Refusal::Duplicate("name"));
    }
}
