//! What the API server does to a WorldSpec on create, done offline: apply the
//! schema defaults, check the OpenAPI bounds the schema declares, and evaluate its
//! CEL rules (with kube's `cel` feature).
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::OnceLock;

use fleetforge_crd::{CustomResourceExt, WorldSpec};
use kube::core::cel::{Validator, apply_defaults};
use serde_json::{Value, json};

/// The CRD's `openAPIV3Schema`, as JSON.
pub fn schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let crd = WorldSpec::crd();
        let s = crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap();
        serde_json::to_value(s).unwrap()
    })
}

/// A complete, valid WorldSpec object to mutate in tests.
pub fn base() -> Value {
    json!({
        "apiVersion": "fleetforge.io/v1",
        "kind": "WorldSpec",
        "metadata": {"name": "arena", "namespace": "games"},
        "spec": {
            "gameServerImage": "game/server:1.0",
            "topology": {
                "initialCells": 4,
                "worldBoundaries": {"xMin": 0.0, "xMax": 100.0, "yMin": 0.0, "yMax": 100.0}
            }
        }
    })
}

/// Violations of the schema's checks (type, required, minimum, maximum,
/// exclusive bounds, minLength, pattern, min/maxProperties, maxItems, and the
/// `allOf`/`anyOf`/`not` junctors), each as `path: problem`. As in OpenAPI, a
/// check about one kind of value (a bound, `required`, a pattern) passes values
/// of any other kind; only `type` says what kind a value must be.
pub fn schema_violations(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    if value.is_null() {
        if schema.get("nullable") != Some(&json!(true)) {
            out.push(format!("{path}: must not be null"));
        }
        return;
    }
    if schema.get("x-kubernetes-int-or-string") == Some(&json!(true))
        && !(value.is_string() || value.is_i64() || value.is_u64())
    {
        out.push(format!("{path}: must be an integer or a string"));
        return;
    }
    let wrong_type = match schema.get("type").and_then(Value::as_str) {
        Some("object") => (!value.is_object()).then_some("an object"),
        Some("array") => (!value.is_array()).then_some("an array"),
        Some("string") => (!value.is_string()).then_some("a string"),
        Some("boolean") => (!value.is_boolean()).then_some("a boolean"),
        Some("integer") => (!(value.is_i64() || value.is_u64())).then_some("an integer"),
        Some("number") => (!value.is_number()).then_some("a number"),
        _ => None,
    };
    if let Some(want) = wrong_type {
        out.push(format!("{path}: must be {want}"));
        return;
    }
    if let Some(obj) = value.as_object() {
        for r in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let r = r.as_str().unwrap();
            if !obj.contains_key(r) {
                out.push(format!("{path}.{r}: required"));
            }
        }
        let count = obj.len() as u64;
        if schema
            .get("minProperties")
            .and_then(Value::as_u64)
            .is_some_and(|m| count < m)
        {
            out.push(format!("{path}: too few properties"));
        }
        if schema
            .get("maxProperties")
            .and_then(Value::as_u64)
            .is_some_and(|m| count > m)
        {
            out.push(format!("{path}: too many properties"));
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (k, v) in obj {
                if let Some(s) = props.get(k) {
                    schema_violations(s, v, &format!("{path}.{k}"), out);
                }
            }
        }
    }
    if let Some(items) = value.as_array() {
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && items.len() as u64 > max
        {
            out.push(format!("{path}: at most {max} items"));
        }
        if let Some(s) = schema.get("items") {
            for (i, v) in items.iter().enumerate() {
                schema_violations(s, v, &format!("{path}[{i}]"), out);
            }
        }
    }
    if let Some(s) = value.as_str() {
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && (s.chars().count() as u64) < min
        {
            out.push(format!("{path}: at least {min} characters"));
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
            && !matches(pattern, s)
        {
            out.push(format!("{path}: does not match the pattern"));
        }
    }
    if let Some(v) = value.as_f64()
        && !schema
            .get("x-kubernetes-int-or-string")
            .is_some_and(|f| f == true)
    {
        let flag = |k: &str| schema.get(k) == Some(&json!(true));
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && (v < min || (flag("exclusiveMinimum") && v == min))
        {
            out.push(format!("{path}: below the minimum {min}"));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && (v > max || (flag("exclusiveMaximum") && v == max))
        {
            out.push(format!("{path}: above the maximum {max}"));
        }
        // The real API server also checks the declared integer format.
        if schema.get("format") == Some(&json!("uint32")) && !(0.0..=f64::from(u32::MAX)).contains(&v) {
            out.push(format!("{path}: out of range for uint32"));
        }
    }
    for s in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        schema_violations(s, value, path, out);
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array)
        && !any.iter().any(|s| valid(s, value))
    {
        out.push(format!("{path}: must validate at least one schema (anyOf)"));
    }
    if let Some(not) = schema.get("not")
        && valid(not, value)
    {
        out.push(format!("{path}: must not validate the schema (not)"));
    }
}

/// Whether `value` passes every check of `schema`.
fn valid(schema: &Value, value: &Value) -> bool {
    let mut out = Vec::new();
    schema_violations(schema, value, "", &mut out);
    out.is_empty()
}

/// Whether `s` matches the regular expression `pattern`, evaluated by CEL's
/// `matches` (RE2 syntax, as the API server's own pattern check).
fn matches(pattern: &str, s: &str) -> bool {
    use kube::core::cel::cel::{Context, Program, Value as Cel};
    let program = Program::compile("s.matches(p)").unwrap();
    let mut ctx = Context::default();
    ctx.add_variable_from_value("s", s);
    ctx.add_variable_from_value("p", pattern);
    matches!(program.execute(&ctx), Ok(Cel::Bool(true)))
}

/// What the API server would say about creating `obj`: schema violations first,
/// then failed CEL rules (by message). Empty when it would be admitted.
pub fn admission_errors(obj: &Value) -> Vec<String> {
    let defaulted = apply_defaults(schema(), obj);
    let mut out = Vec::new();
    schema_violations(schema(), &defaulted, "", &mut out);
    if !out.is_empty() {
        // The API server stops at schema errors too (CEL runs on well-typed objects only).
        return out;
    }
    if let Err(errs) = Validator::new().validate(schema(), obj, None) {
        out.extend(errs.iter().map(|e| e.message.clone()));
    }
    out
}

/// Whether the API server would admit `obj`.
pub fn admitted(obj: &Value) -> bool {
    admission_errors(obj).is_empty()
}

/// Sets the value at a dotted path (`spec.scaling.minCells`), creating objects
/// on the way.
pub fn set(obj: &mut Value, path: &str, v: Value) {
    let mut cur = obj;
    let parts: Vec<&str> = path.split('.').collect();
    for p in &parts[..parts.len() - 1] {
        if cur.get(*p).is_none() {
            cur[*p] = json!({});
        }
        cur = &mut cur[*p];
    }
    cur[parts[parts.len() - 1]] = v;
}

/// Removes the value at a dotted path.
pub fn remove(obj: &mut Value, path: &str) {
    let (parent, last) = path.rsplit_once('.').unwrap();
    let mut cur = obj;
    for p in parent.split('.') {
        cur = &mut cur[p];
    }
    cur.as_object_mut().unwrap().remove(last);
}

/// Parses `obj` as a WorldSpec and converts it.
pub fn convert(obj: &Value) -> Result<fleetforge_core::World, fleetforge_crd::SpecError> {
    let ws: WorldSpec = serde_json::from_value(obj.clone()).unwrap();
    fleetforge_crd::to_world(&ws)
}
