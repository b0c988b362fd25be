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

/// Violations of the schema's structural checks (type, required, minimum,
/// maximum, exclusive bounds, minLength), each as `path: problem`.
pub fn schema_violations(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    if value.is_null() {
        if schema.get("nullable") != Some(&json!(true)) {
            out.push(format!("{path}: must not be null"));
        }
        return;
    }
    if schema.get("x-kubernetes-int-or-string") == Some(&json!(true)) {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            out.push(format!("{path}: must be an integer or a string"));
        }
        return;
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let Some(obj) = value.as_object() else {
                out.push(format!("{path}: must be an object"));
                return;
            };
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
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, v) in obj {
                    if let Some(s) = props.get(k) {
                        schema_violations(s, v, &format!("{path}.{k}"), out);
                    }
                }
            }
        }
        Some("array") => {
            let Some(items) = value.as_array() else {
                out.push(format!("{path}: must be an array"));
                return;
            };
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
        Some("string") => match value.as_str() {
            None => out.push(format!("{path}: must be a string")),
            Some(s) => {
                if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                    && (s.chars().count() as u64) < min
                {
                    out.push(format!("{path}: at least {min} characters"));
                }
            }
        },
        Some("boolean") if !value.is_boolean() => out.push(format!("{path}: must be a boolean")),
        Some(t @ ("integer" | "number")) => {
            if t == "integer" && !(value.is_i64() || value.is_u64()) {
                out.push(format!("{path}: must be an integer"));
                return;
            }
            let Some(v) = value.as_f64() else {
                out.push(format!("{path}: must be a number"));
                return;
            };
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
        _ => {}
    }
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
