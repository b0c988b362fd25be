//! Whether a live object already carries what the operator would apply, so that a
//! steady world costs no write.

use serde_json::Value;

/// `true` when every field set in `desired` has the same value in `live`.
///
/// Objects are compared key by key (fields the API server or other managers added
/// to `live` do not matter); arrays must have the same length and match element by
/// element, since the operator owns the lists it sets; `null` in `desired` means
/// "not set" and matches anything. A `false`, empty list or empty object in
/// `desired` also matches a field `live` lacks: the API server's Go types omit
/// such zero values when they serialize an object.
pub fn covers(live: &Value, desired: &Value) -> bool {
    match (live, desired) {
        (_, Value::Null) => true,
        (Value::Object(l), Value::Object(d)) => d.iter().all(|(k, dv)| match l.get(k) {
            Some(lv) => covers(lv, dv),
            None => is_zero(dv),
        }),
        (Value::Array(l), Value::Array(d)) => {
            l.len() == d.len() && l.iter().zip(d).all(|(lv, dv)| covers(lv, dv))
        }
        (l, d) => l == d,
    }
}

/// A value the API server leaves out when it serializes an object.
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::covers;
    use serde_json::json;

    #[test]
    fn fields_added_by_the_server_do_not_count() {
        let live = json!({"spec": {"clusterIP": "None", "type": "ClusterIP", "ports": [{"port": 8080, "protocol": "TCP"}]}});
        let desired = json!({"spec": {"clusterIP": "None", "ports": [{"port": 8080}]}});
        assert!(covers(&live, &desired));
    }

    #[test]
    fn a_changed_or_missing_field_or_list_length_counts() {
        let live = json!({"metadata": {"labels": {"a": "1"}}, "ports": [{"port": 1}, {"port": 2}]});
        assert!(!covers(&live, &json!({"metadata": {"labels": {"a": "2"}}})));
        assert!(!covers(&live, &json!({"metadata": {"labels": {"b": "1"}}})));
        assert!(!covers(&live, &json!({"ports": [{"port": 1}]})));
        assert!(covers(&live, &json!({"ports": [{"port": 1}, {}], "x": null})));
    }

    #[test]
    fn zero_values_the_server_omits_match_their_absence() {
        let live = json!({"spec": {"clusterIP": "None"}});
        assert!(covers(
            &live,
            &json!({"spec": {"publishNotReadyAddresses": false, "x": [], "y": {}}})
        ));
        assert!(!covers(
            &live,
            &json!({"spec": {"publishNotReadyAddresses": true}})
        ));
        assert!(
            !covers(&live, &json!({"spec": {"port": 0}})),
            "a number is compared, zero or not"
        );
    }
}
