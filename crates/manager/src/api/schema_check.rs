//! Test-only: checks a JSON value against a schema of an OpenAPI document, for the parts of
//! JSON Schema that schemars generates (`$ref` into the document, `type`, `properties`,
//! `required`, `additionalProperties`, `items`, `prefixItems`, `oneOf`, `anyOf`, `allOf`,
//! `const`, `enum`, `minimum`, `maximum`). Stricter than JSON Schema in one way: an object key
//! that its schema's `properties` do not list (and no `additionalProperties` schema admits) is
//! an error, so a field serde writes but the document does not describe is caught.

use serde_json::Value;

/// Every place where `value` breaks `schema` (empty: it conforms), each named by its JSON
/// pointer in `value`. `doc` resolves `$ref`s.
pub fn violations(doc: &Value, schema: &Value, value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    check(doc, schema, value, "", &mut out);
    out
}

fn check(doc: &Value, schema: &Value, v: &Value, at: &str, out: &mut Vec<String>) {
    let Some(s) = schema.as_object() else {
        if schema == &Value::Bool(false) {
            out.push(format!("{at}: no value is allowed here"));
        }
        return;
    };
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        match doc.pointer(r.trim_start_matches('#')) {
            Some(target) => check(doc, target, v, at, out),
            None => out.push(format!("{at}: {r} does not resolve")),
        }
    }
    if let Some(t) = s.get("type") {
        let types: Vec<&str> = match t {
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            other => other.as_str().into_iter().collect(),
        };
        if !types.iter().any(|t| is_type(v, t)) {
            out.push(format!("{at}: {v} is not of type {types:?}"));
            return;
        }
    }
    if let Some(c) = s.get("const") {
        if c != v {
            out.push(format!("{at}: {v} is not {c}"));
        }
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            out.push(format!("{at}: {v} is not one of {e:?}"));
        }
    }
    bounds(s, v, at, out);
    branches(doc, s, v, at, out);
    match v {
        Value::Object(o) => object(doc, s, o, at, out),
        Value::Array(a) => array(doc, s, a, at, out),
        _ => {}
    }
}

fn is_type(v: &Value, t: &str) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        _ => false,
    }
}

fn bounds(s: &serde_json::Map<String, Value>, v: &Value, at: &str, out: &mut Vec<String>) {
    let Some(x) = v.as_f64() else { return };
    if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
        if x < min {
            out.push(format!("{at}: {x} is below {min}"));
        }
    }
    if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
        if x > max {
            out.push(format!("{at}: {x} is above {max}"));
        }
    }
}

fn branches(
    doc: &Value,
    s: &serde_json::Map<String, Value>,
    v: &Value,
    at: &str,
    out: &mut Vec<String>,
) {
    let passing = |key: &str| -> Option<(usize, usize)> {
        let all = s.get(key)?.as_array()?;
        let ok = all
            .iter()
            .filter(|b| violations_at(doc, b, v, at).is_empty())
            .count();
        Some((ok, all.len()))
    };
    if let Some((ok, _)) = passing("oneOf") {
        if ok != 1 {
            out.push(format!("{at}: {ok} branches of oneOf match, not one"));
        }
    }
    if let Some((0, _)) = passing("anyOf") {
        out.push(format!("{at}: no branch of anyOf matches"));
    }
    for b in s
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        check(doc, b, v, at, out);
    }
}

fn violations_at(doc: &Value, schema: &Value, v: &Value, at: &str) -> Vec<String> {
    let mut out = Vec::new();
    check(doc, schema, v, at, &mut out);
    out
}

fn object(
    doc: &Value,
    s: &serde_json::Map<String, Value>,
    o: &serde_json::Map<String, Value>,
    at: &str,
    out: &mut Vec<String>,
) {
    for r in s
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(k) = r.as_str().filter(|k| !o.contains_key(*k)) {
            out.push(format!("{at}: required field {k} is missing"));
        }
    }
    let props = s.get("properties").and_then(Value::as_object);
    let extra = s.get("additionalProperties").filter(|a| a.is_object());
    for (k, v) in o {
        let here = format!("{at}/{k}");
        match (props.and_then(|p| p.get(k)), extra) {
            (Some(p), _) => check(doc, p, v, &here, out),
            (None, Some(a)) => check(doc, a, v, &here, out),
            // A key no schema describes: an error only where the schema lists its fields.
            (None, None) if props.is_some() => {
                out.push(format!("{here}: not in the schema's properties"));
            }
            (None, None) => {}
        }
    }
}

fn array(
    doc: &Value,
    s: &serde_json::Map<String, Value>,
    a: &[Value],
    at: &str,
    out: &mut Vec<String>,
) {
    let prefix = s.get("prefixItems").and_then(Value::as_array);
    for (i, v) in a.iter().enumerate() {
        let here = format!("{at}/{i}");
        match prefix.and_then(|p| p.get(i)) {
            Some(p) => check(doc, p, v, &here, out),
            None => {
                if let Some(items) = s.get("items") {
                    check(doc, items, v, &here, out);
                }
            }
        }
    }
}
