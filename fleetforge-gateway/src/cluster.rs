//! From the cluster's objects to the directory's plain data: a cell Pod the
//! operator manages becomes a [`CellEntry`] of its world, and a WorldSpec that
//! opts in becomes a [`Publication`].
//!
//! Only what the operator wrote and the kubelet reports is read: the cell's
//! identity, bounds and role from the Pod's annotations (the same keys and
//! decoders the operator uses, from `fleetforge_crd::keys`), its readiness,
//! termination and address from the Pod itself. An object that cannot be read is
//! an error naming the object and the field, never a guess: the gateway leaves it
//! out and counts it, so a malformed Pod cannot send a player anywhere.

use std::fmt;
use std::net::IpAddr;

use fleetforge_core::{Bounds, CellId, CellRef};
use fleetforge_crd::WorldSpec;
use fleetforge_crd::keys::{
    ANNOTATION_ACTIVE_SINCE, ANNOTATION_BOUNDS, ANNOTATION_CELL, ANNOTATION_EPOCH, ANNOTATION_INCARNATION,
    ANNOTATION_ROLE, ANNOTATION_WORLD, AnnotationError, decode_bounds, decode_epoch, decode_incarnation,
    decode_role,
};
use k8s_openapi::api::core::v1::Pod;
use thiserror::Error;

use crate::directory::CellEntry;

/// A world, by namespace and name: what a request names and what cell Pods
/// point to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorldKey {
    /// The WorldSpec's namespace.
    pub namespace: String,
    /// The WorldSpec's name.
    pub name: String,
}

impl WorldKey {
    /// The world `name` in `namespace`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for WorldKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What the gateway serves of a world that opts in (`spec.gateway.enabled`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Publication {
    /// The world's bounds, which locate queries are read against.
    pub bounds: Bounds,
    /// The port the world's game servers take players on.
    pub game_port: u16,
}

/// An object the gateway could not read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{object}: {field}: {problem}")]
pub struct ReadError {
    /// `pod namespace/name` or `worldspec namespace/name`.
    pub object: String,
    /// The annotation key or field path at fault.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl ReadError {
    fn pod(pod: &Pod, field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            object: format!("pod {}", object_ref(&pod.metadata)),
            field: field.into(),
            problem: problem.into(),
        }
    }

    fn annotation(pod: &Pod, e: AnnotationError) -> Self {
        Self::pod(pod, e.key, e.problem)
    }
}

fn object_ref(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or("?"),
        meta.name.as_deref().unwrap_or("?")
    )
}

/// The world key of a WorldSpec, if it has a namespace and a name.
pub fn world_key(ws: &WorldSpec) -> Option<WorldKey> {
    Some(WorldKey::new(
        ws.metadata.namespace.clone()?,
        ws.metadata.name.clone()?,
    ))
}

/// What the gateway publishes of `ws`: `None` when the world does not opt in.
/// A world that opts in but whose spec the operator would refuse is an error
/// (the gateway does not publish it; the operator reports it as Degraded).
pub fn publication(ws: &WorldSpec) -> Result<Option<Publication>, ReadError> {
    let gateway = &ws.spec.gateway;
    if !gateway.enabled {
        return Ok(None);
    }
    let object = format!("worldspec {}", object_ref(&ws.metadata));
    if gateway.game_port == 0 {
        return Err(ReadError {
            object,
            field: "spec.gateway.gamePort".to_owned(),
            problem: "must be 1-65535".to_owned(),
        });
    }
    let world = fleetforge_crd::to_world(ws).map_err(|e| ReadError {
        object,
        field: e.paths().next().unwrap_or("spec").to_owned(),
        problem: e.to_string(),
    })?;
    Ok(Some(Publication {
        bounds: world.bounds,
        game_port: gateway.game_port,
    }))
}

/// The world a cell Pod belongs to and the cell it runs.
pub fn cell_of_pod(pod: &Pod) -> Result<(WorldKey, CellEntry), ReadError> {
    let annotations = pod.metadata.annotations.as_ref();
    let get = |key: &'static str| -> Result<&str, ReadError> {
        annotations
            .and_then(|a| a.get(key))
            .map(String::as_str)
            .ok_or_else(|| ReadError::pod(pod, key, "annotation missing"))
    };
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .ok_or_else(|| ReadError::pod(pod, "metadata.namespace", "missing"))?;
    let world = WorldKey::new(namespace, get(ANNOTATION_WORLD)?);
    let id = get(ANNOTATION_CELL)?
        .parse::<CellId>()
        .map_err(|e| ReadError::pod(pod, ANNOTATION_CELL, e.to_string()))?;
    let incarnation =
        decode_incarnation(get(ANNOTATION_INCARNATION)?).map_err(|e| ReadError::annotation(pod, e))?;
    let bounds = decode_bounds(get(ANNOTATION_BOUNDS)?).map_err(|e| ReadError::annotation(pod, e))?;
    let since = annotations
        .and_then(|a| a.get(ANNOTATION_ACTIVE_SINCE))
        .map(String::as_str);
    let role = decode_role(get(ANNOTATION_ROLE)?, since).map_err(|e| ReadError::annotation(pod, e))?;
    let stamped_epoch = annotations
        .and_then(|a| a.get(ANNOTATION_EPOCH))
        .map(|v| decode_epoch(v))
        .transpose()
        .map_err(|e| ReadError::annotation(pod, e))?;
    let status = pod.status.as_ref();
    let address = status
        .and_then(|s| s.pod_ip.as_deref())
        .filter(|ip| !ip.is_empty())
        .map(|ip| {
            ip.parse::<IpAddr>()
                .map_err(|e| ReadError::pod(pod, "status.podIP", format!("{ip:?}: {e}")))
        })
        .transpose()?;
    Ok((
        world,
        CellEntry {
            cell: CellRef { id, incarnation },
            bounds,
            role,
            ready: is_ready(pod),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            address,
            stamped_epoch,
        },
    ))
}

/// Whether the Pod is running and passes its readiness probe: the kubelet's
/// `Ready` condition, which is what a Service's endpoints follow too.
fn is_ready(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use fleetforge_core::{Role, Timestamp};
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    use super::*;

    fn pod(annotations: &[(&str, &str)], ip: Option<&str>, ready: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("w-c0-0".into()),
                namespace: Some("games".into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect::<BTreeMap<_, _>>(),
                ),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: ip.map(str::to_owned),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    const BOUNDS: &str = r#"{"x":{"min":0.0,"max":100.0},"y":{"min":0.0,"max":50.0}}"#;

    fn active() -> Vec<(&'static str, &'static str)> {
        vec![
            (ANNOTATION_WORLD, "w"),
            (ANNOTATION_CELL, "c0-1"),
            (ANNOTATION_INCARNATION, "2"),
            (ANNOTATION_BOUNDS, BOUNDS),
            (ANNOTATION_ROLE, "active"),
            (ANNOTATION_ACTIVE_SINCE, "1700000000000"),
        ]
    }

    #[test]
    fn an_active_ready_cell_pod_is_read_whole() {
        let mut a = active();
        a.push((ANNOTATION_EPOCH, "1700000000123"));
        let (world, entry) = cell_of_pod(&pod(&a, Some("10.1.2.3"), true)).unwrap();
        assert_eq!(world, WorldKey::new("games", "w"));
        assert_eq!(entry.cell.to_string(), "c0-1#2");
        assert_eq!(entry.bounds, decode_bounds(BOUNDS).unwrap());
        assert_eq!(
            entry.role,
            Role::Active {
                since: Timestamp::from_millis(1_700_000_000_000)
            }
        );
        assert!(entry.ready && !entry.terminating);
        assert_eq!(entry.address, Some("10.1.2.3".parse().unwrap()));
        assert_eq!(entry.stamped_epoch, Some(1_700_000_000_123));
        assert!(entry.serving());
    }

    #[test]
    fn readiness_address_and_termination_come_from_the_pod() {
        let (_, e) = cell_of_pod(&pod(&active(), None, false)).unwrap();
        assert!(!e.ready && e.address.is_none() && e.stamped_epoch.is_none());
        let mut p = pod(&active(), Some("10.1.2.3"), true);
        p.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let (_, e) = cell_of_pod(&p).unwrap();
        assert!(e.terminating && !e.serving());
        let mut p = pod(&active(), Some("10.1.2.3"), true);
        p.status.as_mut().unwrap().phase = Some("Failed".into());
        assert!(!cell_of_pod(&p).unwrap().1.ready);
    }

    #[test]
    fn every_unreadable_field_is_named() {
        type Case<'a> = (Vec<(&'a str, &'a str)>, Option<&'a str>, &'a str);
        let cases: Vec<Case<'_>> = vec![
            (active()[1..].to_vec(), None, ANNOTATION_WORLD),
            (
                active()
                    .into_iter()
                    .filter(|(k, _)| *k != ANNOTATION_CELL)
                    .collect(),
                None,
                ANNOTATION_CELL,
            ),
            (
                active()
                    .into_iter()
                    .map(|(k, v)| if k == ANNOTATION_BOUNDS { (k, "{") } else { (k, v) })
                    .collect(),
                None,
                ANNOTATION_BOUNDS,
            ),
            (
                active()
                    .into_iter()
                    .map(|(k, v)| if k == ANNOTATION_ROLE { (k, "boss") } else { (k, v) })
                    .collect(),
                None,
                ANNOTATION_ROLE,
            ),
            (
                active()
                    .into_iter()
                    .filter(|(k, _)| *k != ANNOTATION_ACTIVE_SINCE)
                    .collect(),
                None,
                ANNOTATION_ACTIVE_SINCE,
            ),
            (
                active()
                    .into_iter()
                    .map(|(k, v)| {
                        if k == ANNOTATION_INCARNATION {
                            (k, "-1")
                        } else {
                            (k, v)
                        }
                    })
                    .collect(),
                None,
                ANNOTATION_INCARNATION,
            ),
            (
                active().into_iter().chain([(ANNOTATION_EPOCH, "soon")]).collect(),
                None,
                ANNOTATION_EPOCH,
            ),
            (active(), Some("not-an-ip"), "status.podIP"),
        ];
        for (annotations, ip, field) in cases {
            let e = cell_of_pod(&pod(&annotations, ip, true)).unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(e.to_string().starts_with("pod games/w-c0-0: "), "{e}");
        }
    }
}
