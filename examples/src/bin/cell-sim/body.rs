//! Reading JSON request bodies field by field, so that a bad request is answered
//! with the path of the field at fault (`targets[1].address: ...`) rather than a
//! line and column.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// The fields of a JSON object.
pub type Fields = Map<String, Value>;

/// The body parsed as a JSON object.
pub fn object(body: &[u8]) -> Result<Fields, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("body: not valid JSON: {e}"))?;
    as_object(value, "body")
}

/// `value` as a JSON object; `path` names it in the error.
pub fn as_object(value: Value, path: &str) -> Result<Fields, String> {
    match value {
        Value::Object(fields) => Ok(fields),
        other => Err(format!("{path}: expected a JSON object, got {}", kind(&other))),
    }
}

/// `value` as an array; `path` names it in the error.
pub fn as_array(value: Value, path: &str) -> Result<Vec<Value>, String> {
    match value {
        Value::Array(items) => Ok(items),
        other => Err(format!("{path}: expected a JSON array, got {}", kind(&other))),
    }
}

/// `value` as a `T`; `path` names it in the error.
pub fn decode<T: DeserializeOwned>(value: Value, path: &str) -> Result<T, String> {
    serde_json::from_value(value).map_err(|e| format!("{path}: {e}"))
}

/// Takes field `name` out of `fields` (`null` counts as absent); `prefix` is the
/// path of the object, empty at the top level.
pub fn take<T: DeserializeOwned>(fields: &mut Fields, prefix: &str, name: &str) -> Result<Option<T>, String> {
    match fields.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => decode(v, &join(prefix, name)).map(Some),
    }
}

/// Fails on the first field left in `fields`: every known one has been taken, so
/// it is a typo the caller would otherwise never notice.
pub fn no_other_fields(fields: &Fields, prefix: &str) -> Result<(), String> {
    match fields.keys().next() {
        Some(name) => Err(format!("{}: unknown field", join(prefix, name))),
        None => Ok(()),
    }
}

/// The path of field `name` of the object at `prefix`.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

/// What kind of JSON value `v` is, for error messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_field() {
        let mut f = object(br#"{"add": "many", "oops": 1}"#).unwrap();
        let e = take::<u32>(&mut f, "", "add").unwrap_err();
        assert!(e.starts_with("add: invalid type"), "{e}");
        assert_eq!(no_other_fields(&f, "").unwrap_err(), "oops: unknown field");
        let mut f = object(br#"{"spread": null}"#).unwrap();
        assert_eq!(
            take::<f64>(&mut f, "distribution.around", "spread").unwrap(),
            None
        );
        assert!(
            object(b"[1]")
                .unwrap_err()
                .starts_with("body: expected a JSON object")
        );
        assert!(object(b"{").unwrap_err().starts_with("body: not valid JSON"));
        let e = take::<u32>(&mut object(br#"{"n": -1}"#).unwrap(), "a.b", "n").unwrap_err();
        assert!(e.starts_with("a.b.n: "), "{e}");
    }
}
