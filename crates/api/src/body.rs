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

/// Deepest nesting of arrays and objects a body may have, in levels (the top-level object is
/// level 1). Drover's own bodies are about 4 deep; the limit leaves room and keeps every later
/// walk over a [`Node`] (which recurses once per level) shallow.
pub const MAX_DEPTH: usize = 32;

/// Why a body could not be read as a [`Node`].
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Not JSON: serde_json's syntax error (not UTF-8, trailing data, ...).
    #[error(transparent)]
    Syntax(#[from] serde_json::Error),
    /// Arrays and objects nested deeper than `limit` levels; `path` is the value that would
    /// open level `limit + 1`.
    #[error(
        "{}: arrays and objects nest deeper than {limit} levels",
        at_path(path)
    )]
    TooDeep { path: Vec<Step>, limit: usize },
}

/// A path as messages spell it: `config.nic.mac`, `arguments.capabilities[0].state`, or
/// `the body` for the top.
fn at_path(path: &[Step]) -> String {
    match path_text(path) {
        p if p.is_empty() => "the body".into(),
        p => p,
    }
}

/// A path as messages spell it: `config.nic.mac`, `arguments.capabilities[0].state` (keys cut
/// to 64 characters; empty for the top).
pub fn path_text(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.extend(key.chars().take(64));
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

impl Node {
    /// Reads a JSON text, in two linear passes and without recursion: serde_json checks the
    /// syntax (it skips a raw value with a loop, not per level), then [`Builder`] builds the
    /// node with an explicit stack, refusing nesting beyond [`MAX_DEPTH`] levels before it
    /// opens the level after the limit.
    ///
    /// # Errors
    /// [`ReadError::Syntax`] for a body that is not JSON, [`ReadError::TooDeep`] naming where
    /// the limit was hit.
    pub fn read(body: &[u8]) -> Result<Node, ReadError> {
        let raw: Box<RawValue> = serde_json::from_slice(body)?;
        Builder::new(raw.get()).run()
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

/// An array or object being built, with where the next value goes.
enum Frame {
    Array(Vec<Node>),
    /// The entries so far and the key of the value being read.
    Object(Vec<(String, Node)>, String),
}

impl Frame {
    /// Where the value being read sits in its container.
    fn step(&self) -> Step {
        match self {
            Frame::Array(items) => Step::Index(items.len()),
            Frame::Object(_, key) => Step::Key(key.clone()),
        }
    }

    fn push(&mut self, value: Node) {
        match self {
            Frame::Array(items) => items.push(value),
            Frame::Object(entries, key) => entries.push((std::mem::take(key), value)),
        }
    }

    fn into_node(self) -> Node {
        match self {
            Frame::Array(items) => Node::Array(items),
            Frame::Object(entries, _) => Node::Object(entries),
        }
    }
}

/// Builds a [`Node`] from a JSON text serde_json has already checked, in one pass over its
/// bytes with an explicit stack of at most [`MAX_DEPTH`] frames.
struct Builder<'a> {
    text: &'a str,
    /// Byte offset of the next byte to read.
    at: usize,
    stack: Vec<Frame>,
}

/// A syntax error in text serde_json accepted: cannot happen, but is an error, not a panic.
fn unexpected(at: usize) -> ReadError {
    ReadError::Syntax(de::Error::custom(format!("unexpected input at byte {at}")))
}

impl<'a> Builder<'a> {
    fn new(text: &'a str) -> Self {
        Builder {
            text,
            at: 0,
            stack: Vec::new(),
        }
    }

    fn peek(&mut self) -> Option<u8> {
        let bytes = self.text.as_bytes();
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = bytes.get(self.at) {
            self.at += 1;
        }
        bytes.get(self.at).copied()
    }

    /// Consumes `byte` (after whitespace).
    fn expect(&mut self, byte: u8) -> Result<(), ReadError> {
        if self.peek() != Some(byte) {
            return Err(unexpected(self.at));
        }
        self.at += 1;
        Ok(())
    }

    /// A string token starting at the current byte (a `"`), unescaped.
    fn string(&mut self) -> Result<String, ReadError> {
        self.peek();
        let start = self.at;
        self.expect(b'"')?;
        let bytes = self.text.as_bytes();
        let mut escaped = false;
        loop {
            match bytes.get(self.at) {
                Some(b'\\') => {
                    escaped = true;
                    self.at += 2;
                }
                Some(b'"') => break,
                Some(_) => self.at += 1,
                None => return Err(unexpected(self.at)),
            }
        }
        self.at += 1;
        let token = self
            .text
            .get(start..self.at)
            .ok_or_else(|| unexpected(start))?;
        match token.get(1..token.len().saturating_sub(1)) {
            Some(plain) if !escaped => Ok(plain.to_string()),
            _ => Ok(serde_json::from_str(token)?),
        }
    }

    /// A literal or number: its text.
    fn scalar(&mut self) -> &'a str {
        let start = self.at;
        let bytes = self.text.as_bytes();
        while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E' | b'a'..=b'z') =
            bytes.get(self.at)
        {
            self.at += 1;
        }
        self.text.get(start..self.at).unwrap_or_default()
    }

    /// Opens an array or object at the current byte (`[` or `{`): the empty container when it
    /// closes at once, else None with its frame pushed and the reader at its first value.
    fn open(&mut self, open: u8) -> Result<Option<Node>, ReadError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(ReadError::TooDeep {
                path: self.stack.iter().map(Frame::step).collect(),
                limit: MAX_DEPTH,
            });
        }
        self.at += 1;
        let close = if open == b'[' { b']' } else { b'}' };
        if self.peek() == Some(close) {
            self.at += 1;
            return Ok(Some(if open == b'[' {
                Node::Array(Vec::new())
            } else {
                Node::Object(Vec::new())
            }));
        }
        let frame = if open == b'[' {
            Frame::Array(Vec::new())
        } else {
            let key = self.string()?;
            self.expect(b':')?;
            Frame::Object(Vec::new(), key)
        };
        self.stack.push(frame);
        Ok(None)
    }

    fn run(mut self) -> Result<Node, ReadError> {
        loop {
            // A value starts here.
            let mut value = match self.peek() {
                Some(open @ (b'[' | b'{')) => match self.open(open)? {
                    Some(empty) => empty,
                    None => continue,
                },
                Some(b'"') => Node::String(self.string()?),
                Some(_) => match self.scalar() {
                    "true" => Node::Bool(true),
                    "false" => Node::Bool(false),
                    "null" => Node::Null,
                    // serde_json has checked the syntax: anything else is a number.
                    "" => return Err(unexpected(self.at)),
                    number => Node::Number(number.to_string()),
                },
                None => return Err(unexpected(self.at)),
            };
            // The value is complete: hand it to its container, closing each container it
            // completes, until one continues with another value.
            loop {
                let Some(mut top) = self.stack.pop() else {
                    return Ok(value);
                };
                top.push(value);
                match self.peek() {
                    Some(b',') => {
                        self.at += 1;
                        if let Frame::Object(_, key) = &mut top {
                            *key = self.string()?;
                            self.expect(b':')?;
                        }
                        self.stack.push(top);
                        break;
                    }
                    Some(b']' | b'}') => {
                        self.at += 1;
                        value = top.into_node();
                    }
                    _ => return Err(unexpected(self.at)),
                }
            }
        }
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
#[path = "body_tests.rs"]
mod tests;
