//! Tests of the body reader (`body.rs`).

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

/// The reviewer's crash: a body nested far beyond the limit is refused where it crosses
/// the limit, in one linear pass, without recursing per level.
#[test]
fn deep_nesting_is_refused_where_it_crosses_the_limit() {
    let depth = 100_000;
    for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
        let body = format!(
            "{{\"name\":{}1{}}}",
            open.repeat(depth),
            close.repeat(depth)
        );
        let started = std::time::Instant::now();
        let err = Node::read(body.as_bytes()).expect_err("too deep");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let ReadError::TooDeep { path, limit } = &err else {
            panic!("{err}");
        };
        assert_eq!(*limit, MAX_DEPTH);
        assert_eq!(path.len(), MAX_DEPTH, "{err}");
        assert_eq!(path[0], key("name"));
        let inner = if open == "[" {
            Step::Index(0)
        } else {
            key("a")
        };
        assert!(path[1..].iter().all(|s| *s == inner), "{err}");
        assert!(err.to_string().starts_with("name"), "{err}");
    }
    // Unbalanced brackets are serde_json's syntax error, found without recursing either.
    let open_only = "[".repeat(depth);
    assert!(matches!(
        Node::read(open_only.as_bytes()),
        Err(ReadError::Syntax(_))
    ));
    // The path names the index and key where the limit was hit.
    let nested = format!(
        "{{\"list\": [0, 1, {}{}]}}",
        "[".repeat(MAX_DEPTH),
        "]".repeat(MAX_DEPTH)
    );
    let err = Node::read(nested.as_bytes()).expect_err("too deep");
    assert!(err.to_string().starts_with("list[2][0]"), "{err}");
}

#[test]
fn nesting_up_to_the_limit_reads_as_written() {
    let at_limit = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
    let mut node = Node::read(at_limit.as_bytes()).expect("at the limit");
    for _ in 1..MAX_DEPTH {
        let Node::Array(mut items) = node else {
            panic!("an array");
        };
        node = items.pop().expect("one item");
    }
    assert_eq!(node, Node::Array(Vec::new()));
    let body = r#" { "a" : [ 1 , -2.5e3 , "x\"y\u00e9" , true , false , null , { } , [ ] ] ,
        "a" : { "b\n" : "\u00e9t\u00e9" } , "c" : "caf\u00e9 é" } "#
        .as_bytes();
    let node = Node::read(body).expect("JSON");
    let value: serde_json::Value = serde_json::from_slice(body).expect("JSON");
    let entries = node.entries().expect("object");
    assert_eq!(entries.len(), 3, "duplicates kept");
    assert_eq!(
        entries[0].1,
        Node::Array(vec![
            Node::Number("1".into()),
            Node::Number("-2.5e3".into()),
            Node::String("x\"y\u{e9}".into()),
            Node::Bool(true),
            Node::Bool(false),
            Node::Null,
            Node::Object(Vec::new()),
            Node::Array(Vec::new()),
        ])
    );
    assert_eq!(
        node.at(&[key("a"), key("b\n")]),
        Some(&Node::String("\u{e9}t\u{e9}".into()))
    );
    assert_eq!(
        node.at(&[key("c")]).map(Node::typed),
        value["c"].as_str().map(str::to_string)
    );
    for bad in ["", "{", "[1,]", "{\"a\" 1}", "1 2", "\"\\x\""] {
        assert!(
            matches!(Node::read(bad.as_bytes()), Err(ReadError::Syntax(_))),
            "{bad}"
        );
    }
    assert_eq!(
        Node::read(b" 7 ").expect("a number"),
        Node::Number("7".into())
    );
}
