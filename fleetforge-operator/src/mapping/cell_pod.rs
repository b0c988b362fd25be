//! The cell Pod and the world's headless Service, exactly as the operator
//! server-side-applies them.
//!
//! Everything here is a pure function of the `WorldSpec`, the converted core
//! [`World`] and the cell: the same inputs always give the same object, so applying
//! it again is a no-op for the API server and a steady world costs no writes.
//!
//! A cell's Pod spec is immutable once created (Kubernetes forbids most Pod spec
//! updates), which is why only what never changes during a cell's life (world,
//! cell id, incarnation, bounds) goes into its environment, while what may change
//! (its role, once sessions are handed over) lives in annotations only.

use std::collections::BTreeMap;

use fleetforge_core::contract::{self, PREVIOUS_TOKEN_FILE, TOKEN_FILE, env};
use fleetforge_core::naming::dns_label;
use fleetforge_core::{Bounds, CellRef, Role, World};
use fleetforge_crd::WorldSpec;
use fleetforge_crd::keys::{
    ANNOTATION_ACTIVE_SINCE, ANNOTATION_BOUNDS, ANNOTATION_CELL, ANNOTATION_EPOCH, ANNOTATION_INCARNATION,
    ANNOTATION_LAYOUT, ANNOTATION_REVISION, ANNOTATION_ROLE, ANNOTATION_TOKEN_FINGERPRINT, ANNOTATION_WORLD,
    LABEL_MANAGED_BY, LABEL_WORLD, cell_labels, encode_bounds, encode_epoch, encode_layout, encode_role,
    world_labels,
};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PodSecurityContext, PodSpec, Probe, ResourceRequirements, SeccompProfile, Secret,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, TopologySpreadConstraint, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use thiserror::Error;

/// The HTTP port of the cell contract, as a container port: health, readiness,
/// metrics, load and hand-over endpoints all live on it.
pub const CELL_HTTP_PORT: i32 = contract::HTTP_PORT as i32;
/// Name of [`CELL_HTTP_PORT`] on the container and the Service; probes refer to the
/// port by this name so the number is written in one place only.
pub const CELL_PORT_NAME: &str = "http";
/// Name of the game-server container in a cell Pod.
pub const CELL_CONTAINER: &str = "cell";
/// User and group id the cell runs as: any non-zero id satisfies `runAsNonRoot`;
/// 65532 is the conventional "nonroot" user of distroless images, so images built
/// on them own their files under it.
pub const CELL_UID: i64 = 65532;
/// Where the writable scratch volume is mounted: the root filesystem is read-only.
pub const TMP_MOUNT: &str = "/tmp";
/// Size cap of the scratch volume. It counts against the node's ephemeral storage,
/// so a runaway cell is evicted rather than filling the node's disk.
pub const TMP_SIZE_LIMIT: &str = "64Mi";
/// Where the world's token Secret is mounted in a cell (its
/// [`contract::env::TOKEN_DIR`]).
pub const TOKEN_MOUNT: &str = "/var/run/fleetforge/cell-token";
/// Name of the token volume in a cell Pod.
const TOKEN_VOLUME: &str = "cell-token";

/// Why a desired object could not be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DesiredError {
    /// The WorldSpec lacks a metadata field the object needs. Objects read from the
    /// API server always carry them; this guards against objects built by hand.
    #[error("WorldSpec has no {0}: it must be read from the API server before its cells are built")]
    MissingMetadata(&'static str),
}

/// The WorldSpec's name, namespace and owner reference, or which one is missing.
pub fn owner(ws: &WorldSpec) -> Result<(String, String, OwnerReference), DesiredError> {
    // An empty string is as unusable as an absent one.
    let required = |value: &Option<String>, path: &'static str| {
        value
            .clone()
            .filter(|v| !v.is_empty())
            .ok_or(DesiredError::MissingMetadata(path))
    };
    let name = required(&ws.metadata.name, "metadata.name")?;
    let namespace = required(&ws.metadata.namespace, "metadata.namespace")?;
    let uid = required(&ws.metadata.uid, "metadata.uid")?;
    // Built by hand rather than with `controller_owner_ref`, which leaves
    // blockOwnerDeletion unset: with it set, a foreground deletion of the world
    // waits until its cells are gone, so "world deleted" really means "no cell
    // left". (It requires the operator's RBAC to allow `update` on
    // `worldspecs/finalizers` where OwnerReferencesPermissionEnforcement is on.)
    let reference = OwnerReference {
        api_version: WorldSpec::api_version(&()).into_owned(),
        kind: WorldSpec::kind(&()).into_owned(),
        name: name.clone(),
        uid,
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    Ok((name, namespace, reference))
}

/// Name of world `world`'s headless Service: `<world>-cells`, shortened with a
/// stable hash when too long.
///
/// Service names must be DNS-1035 labels (starting with a letter) while a world's
/// name may start with a digit; such names get a `w` in front. The `-cells` suffix
/// keeps the name clear of a Service the world's owner may already have named after
/// the world (a gateway, say).
pub fn service_name(world: &str) -> String {
    world_object_name(world, "cells")
}

/// The name of the Secret holding a world's cell token.
pub fn token_secret_name(world: &str) -> String {
    world_object_name(world, "cell-token")
}

/// `<world>-<suffix>` as a DNS-1035 label (it starts with a letter, as Service
/// names must), shortened with a hash when too long.
fn world_object_name(world: &str, suffix: &str) -> String {
    let prefix = if world.starts_with(|c: char| c.is_ascii_alphabetic()) {
        world.to_owned()
    } else {
        format!("w{world}")
    };
    dns_label(&prefix, suffix)
}

/// The Pod of one cell incarnation, as the operator server-side-applies it.
///
/// `world` must be the conversion of `ws` ([`fleetforge_crd::to_world`]): the layout
/// key and revision recorded on the Pod come from it, so the planner can tell a
/// cell of an older layout or revision when it reads the Pod back. `role` is the
/// role to record: [`Role::Incoming`] for a cell waiting for a hand-over, or
/// [`Role::Active`] with the time it took over its space. `epoch` is the layout
/// epoch stamped on a cell created active ([`ANNOTATION_EPOCH`]; the executor
/// picks it above every mark in the world), `None` for an incoming cell. When
/// re-applying the Pod of an existing active cell, pass the `since` and `epoch`
/// read back from the cluster, not fresh ones, or every reconcile would rewrite
/// the annotations.
pub fn desired_pod(
    ws: &WorldSpec,
    world: &World,
    cell: &CellRef,
    bounds: &Bounds,
    role: Role,
    epoch: Option<u64>,
) -> Result<Pod, DesiredError> {
    let (world_name, namespace, owner_ref) = owner(ws)?;
    let pod_name = cell.process_name(&world_name);
    let bounds_json = encode_bounds(bounds);

    let mut annotations = BTreeMap::from([
        (ANNOTATION_WORLD.to_owned(), world_name.clone()),
        (ANNOTATION_CELL.to_owned(), cell.id.to_string()),
        (ANNOTATION_INCARNATION.to_owned(), cell.incarnation.to_string()),
        (ANNOTATION_BOUNDS.to_owned(), bounds_json.clone()),
        (ANNOTATION_LAYOUT.to_owned(), encode_layout(world.layout_key())),
        (ANNOTATION_REVISION.to_owned(), world.revision.clone()),
    ]);
    let (role_value, since) = encode_role(role);
    annotations.insert(ANNOTATION_ROLE.to_owned(), role_value.to_owned());
    if let Some(since) = since {
        annotations.insert(ANNOTATION_ACTIVE_SINCE.to_owned(), since);
    }
    if let Some(epoch) = epoch {
        annotations.insert(ANNOTATION_EPOCH.to_owned(), encode_epoch(epoch));
    }

    // Resolved from current or deprecated names and defaults exactly as the
    // world's revision digest was, so the Pod carries what the revision says.
    let capacity = ws.spec.capacity.resources();
    let resources = ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), capacity.cpu_request.quantity),
            ("memory".to_owned(), capacity.memory_request.quantity),
        ])),
        limits: Some(BTreeMap::from([
            ("cpu".to_owned(), capacity.cpu_limit.quantity),
            ("memory".to_owned(), capacity.memory_limit.quantity),
        ])),
        ..ResourceRequirements::default()
    };

    let env = vec![
        env_value(env::WORLD, world_name.clone()),
        env_value(env::CELL_ID, cell.id.to_string()),
        env_value(env::INCARNATION, cell.incarnation.to_string()),
        env_value(env::BOUNDS, bounds_json),
        env_value(env::HTTP_PORT, CELL_HTTP_PORT.to_string()),
        env_field(env::POD_IP, "status.podIP"),
        env_field(env::POD_NAME, "metadata.name"),
        env_field(env::POD_NAMESPACE, "metadata.namespace"),
        env_value(env::CAPACITY, world.players_per_cell.to_string()),
        env_value(env::TOKEN_DIR, TOKEN_MOUNT.to_owned()),
    ];

    let container = Container {
        name: CELL_CONTAINER.to_owned(),
        image: Some(ws.spec.game_server_image.clone()),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some(CELL_PORT_NAME.to_owned()),
            container_port: CELL_HTTP_PORT,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        // Readiness gates hand-overs: a split waits for its children to be Ready,
        // so it is probed often (every 2 s) to keep a split fast.
        readiness_probe: Some(http_probe("/readyz", 2, 1)),
        // Liveness is slower and more forgiving: with `restartPolicy: Never` a
        // failed liveness probe ends the cell for good (the operator then replaces
        // it and counts the sessions lost), so it must mean "hung", not "busy".
        liveness_probe: Some(http_probe("/healthz", 10, 3)),
        resources: Some(resources),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "tmp".to_owned(),
                mount_path: TMP_MOUNT.to_owned(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: TOKEN_VOLUME.to_owned(),
                mount_path: TOKEN_MOUNT.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        // A crashed cell is replaced, not restarted: the last log lines are what
        // tells its owner why, and they end up in the Pod status and Events.
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    };

    let spec = PodSpec {
        containers: vec![container],
        // A crashed cell has lost its sessions; restarting it in place would hide
        // that and bring it back with an empty world. The operator replaces it with
        // the next incarnation and accounts for what was lost.
        restart_policy: Some("Never".to_owned()),
        // Cells never talk to the API server; no token means nothing to steal.
        automount_service_account_token: Some(false),
        // Service environment variables grow with every Service in the namespace
        // (one per world) and cells discover nothing through them.
        enable_service_links: Some(false),
        // Gives each ready cell a stable DNS name under the world's headless Service.
        hostname: Some(pod_name.clone()),
        subdomain: Some(service_name(&world_name)),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(CELL_UID),
            run_as_group: Some(CELL_UID),
            // The token files are readable by the cell's group only.
            fs_group: Some(CELL_UID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        // Spread a world's cells over nodes, as a preference: one lost node then
        // costs few cells, and scheduling never blocks on it.
        topology_spread_constraints: Some(vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: "kubernetes.io/hostname".to_owned(),
            when_unsatisfiable: "ScheduleAnyway".to_owned(),
            label_selector: Some(LabelSelector {
                match_labels: Some(world_labels(&world_name)),
                ..LabelSelector::default()
            }),
            ..TopologySpreadConstraint::default()
        }]),
        volumes: Some(vec![
            Volume {
                name: "tmp".to_owned(),
                empty_dir: Some(EmptyDirVolumeSource {
                    size_limit: Some(Quantity(TMP_SIZE_LIMIT.to_owned())),
                    ..EmptyDirVolumeSource::default()
                }),
                ..Volume::default()
            },
            // The Pod names the Secret; the token itself is never in its spec.
            Volume {
                name: TOKEN_VOLUME.to_owned(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(token_secret_name(&world_name)),
                    default_mode: Some(0o440),
                    optional: Some(false),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            },
        ]),
        ..PodSpec::default()
    };

    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(pod_name),
            namespace: Some(namespace),
            labels: Some(cell_labels(&world_name, &cell.id)),
            annotations: Some(annotations),
            owner_references: Some(vec![owner_ref]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    })
}

/// The world's headless Service, as the operator server-side-applies it.
///
/// Headless (`clusterIP: None`): game clients and gateways resolve the world's name
/// to the IPs of its cells and pick the cell owning their position themselves; a
/// virtual IP would load-balance players onto cells that do not own their space.
/// Only Ready cells are published (`publishNotReadyAddresses: false`), so a cell
/// still starting or failing its probes receives no new players. It selects by the
/// world label and the managed-by label, not the cell label, so every cell of the
/// world, of any incarnation, is behind it.
///
/// It carries the fingerprint of the tokens in the world's token Secret
/// (the cells room's `WorldTokens::fingerprint`), written after the Secret.
pub fn desired_service(ws: &WorldSpec, token_fingerprint: &str) -> Result<Service, DesiredError> {
    let (world_name, namespace, owner_ref) = owner(ws)?;
    let labels = world_labels(&world_name);
    let selector: BTreeMap<String, String> = labels
        .iter()
        .filter(|(k, _)| *k == LABEL_WORLD || *k == LABEL_MANAGED_BY)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(Service {
        metadata: ObjectMeta {
            name: Some(service_name(&world_name)),
            namespace: Some(namespace),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([
                (ANNOTATION_WORLD.to_owned(), world_name),
                (
                    ANNOTATION_TOKEN_FINGERPRINT.to_owned(),
                    token_fingerprint.to_owned(),
                ),
            ])),
            owner_references: Some(vec![owner_ref]),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            selector: Some(selector),
            publish_not_ready_addresses: Some(false),
            ports: Some(vec![ServicePort {
                name: Some(CELL_PORT_NAME.to_owned()),
                port: CELL_HTTP_PORT,
                target_port: Some(IntOrString::String(CELL_PORT_NAME.to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

/// The Secret holding the world's cell tokens, mounted by its cell Pods: the
/// `current` token, and the `previous` one while a key rotation reaches every cell.
pub fn desired_token_secret(
    ws: &WorldSpec,
    current: &str,
    previous: Option<&str>,
) -> Result<Secret, DesiredError> {
    let (world_name, namespace, owner_ref) = owner(ws)?;
    let mut data = BTreeMap::from([(TOKEN_FILE.to_owned(), ByteString(current.as_bytes().to_vec()))]);
    if let Some(previous) = previous {
        data.insert(
            PREVIOUS_TOKEN_FILE.to_owned(),
            ByteString(previous.as_bytes().to_vec()),
        );
    }
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(token_secret_name(&world_name)),
            namespace: Some(namespace),
            labels: Some(world_labels(&world_name)),
            annotations: Some(BTreeMap::from([(ANNOTATION_WORLD.to_owned(), world_name)])),
            owner_references: Some(vec![owner_ref]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    })
}

fn env_value(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value),
        value_from: None,
    }
}

fn env_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                api_version: None,
            }),
            ..EnvVarSource::default()
        }),
    }
}

fn http_probe(path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(CELL_PORT_NAME.to_owned()),
            scheme: Some("HTTP".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(failure_threshold),
        timeout_seconds: Some(1),
        ..Probe::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::world_spec;
    use fleetforge_core::naming::is_dns1123_label;
    use fleetforge_core::{CellId, Timestamp};
    use fleetforge_crd::keys::{LABEL_CELL, LABEL_NAME};

    fn cell(id: &str, incarnation: u32) -> CellRef {
        CellRef {
            id: id.parse::<CellId>().unwrap(),
            incarnation,
        }
    }

    fn bounds() -> Bounds {
        Bounds::rect((0.0, 500.0), (250.0, 500.0)).unwrap()
    }

    #[test]
    fn pod_identity_labels_annotations_and_owner() {
        let (ws, world) = world_spec("meadow");
        let pod = desired_pod(&ws, &world, &cell("c1-0", 2), &bounds(), Role::Incoming, None).unwrap();
        let meta = &pod.metadata;
        assert_eq!(meta.name.as_deref(), Some("meadow-c1-0-r2"));
        assert_eq!(meta.namespace.as_deref(), Some("games"));
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_WORLD], "meadow");
        assert_eq!(labels[LABEL_CELL], "c1-0");
        assert_eq!(labels[LABEL_MANAGED_BY], "fleetforge");
        assert_eq!(labels[LABEL_NAME], "fleetforge-cell");
        let ann = meta.annotations.as_ref().unwrap();
        assert_eq!(ann[ANNOTATION_WORLD], "meadow");
        assert_eq!(ann[ANNOTATION_CELL], "c1-0");
        assert_eq!(ann[ANNOTATION_INCARNATION], "2");
        assert_eq!(ann[ANNOTATION_BOUNDS], encode_bounds(&bounds()));
        assert_eq!(ann[ANNOTATION_LAYOUT], encode_layout(world.layout_key()));
        assert_eq!(ann[ANNOTATION_REVISION], world.revision);
        assert_eq!(ann[ANNOTATION_ROLE], "incoming");
        assert!(!ann.contains_key(ANNOTATION_ACTIVE_SINCE));
        assert!(!ann.contains_key(ANNOTATION_EPOCH));
        let owners = meta.owner_references.as_ref().unwrap();
        assert_eq!(owners.len(), 1);
        let o = &owners[0];
        assert_eq!(
            (o.api_version.as_str(), o.kind.as_str(), o.name.as_str()),
            ("fleetforge.io/v1", "WorldSpec", "meadow")
        );
        assert_eq!(o.uid, "0b5c8a52-0000-4000-8000-000000000001");
        assert_eq!((o.controller, o.block_owner_deletion), (Some(true), Some(true)));

        let active = desired_pod(
            &ws,
            &world,
            &cell("c0", 0),
            &bounds(),
            Role::Active {
                since: Timestamp(1_700_000_000_000),
            },
            Some(1_700_000_000_002),
        )
        .unwrap();
        let ann = active.metadata.annotations.unwrap();
        assert_eq!(active.metadata.name.as_deref(), Some("meadow-c0"));
        assert_eq!(ann[ANNOTATION_ROLE], "active");
        assert_eq!(ann[ANNOTATION_ACTIVE_SINCE], "1700000000000");
        assert_eq!(ann[ANNOTATION_EPOCH], "1700000000002");
    }

    #[test]
    fn pod_spec_meets_the_restricted_standard_and_the_cell_contract() {
        let (ws, world) = world_spec("meadow");
        let pod = desired_pod(&ws, &world, &cell("c3", 0), &bounds(), Role::Incoming, None).unwrap();
        let spec = pod.spec.unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert_eq!(spec.subdomain.as_deref(), Some("meadow-cells"));
        let psc = spec.security_context.unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert!(psc.run_as_user.is_some_and(|u| u > 0));
        assert!(psc.run_as_group.is_some_and(|g| g > 0));
        assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");

        assert_eq!(spec.containers.len(), 1);
        let c = &spec.containers[0];
        assert_eq!(c.image.as_deref(), Some("game/server:1.0"));
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_owned()][..])
        );
        assert!(sc.capabilities.as_ref().unwrap().add.is_none());

        let ports = c.ports.as_ref().unwrap();
        assert_eq!(
            (ports[0].name.as_deref(), ports[0].container_port),
            (Some("http"), 8080)
        );
        let probe_path = |p: &Option<Probe>| {
            let get = p.as_ref().unwrap().http_get.as_ref().unwrap();
            assert_eq!(get.port, IntOrString::String("http".into()));
            get.path.clone().unwrap()
        };
        assert_eq!(probe_path(&c.readiness_probe), "/readyz");
        assert_eq!(probe_path(&c.liveness_probe), "/healthz");

        let res = c.resources.as_ref().unwrap();
        let (req, lim) = (res.requests.as_ref().unwrap(), res.limits.as_ref().unwrap());
        assert_eq!(req["cpu"].0, "250m");
        assert_eq!(req["memory"].0, "128Mi");
        assert_eq!(lim["cpu"].0, "500m");
        assert_eq!(lim["memory"].0, "256Mi");

        let env: BTreeMap<_, _> = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| (e.name.as_str(), e))
            .collect();
        assert_eq!(env[env::WORLD].value.as_deref(), Some("meadow"));
        assert_eq!(env[env::CELL_ID].value.as_deref(), Some("c3"));
        assert_eq!(env[env::INCARNATION].value.as_deref(), Some("0"));
        assert_eq!(
            fleetforge_crd::keys::decode_bounds(env[env::BOUNDS].value.as_deref().unwrap()).unwrap(),
            bounds()
        );
        assert_eq!(env[env::HTTP_PORT].value.as_deref(), Some("8080"));
        let pod_ip = env[env::POD_IP].value_from.as_ref().unwrap();
        assert_eq!(pod_ip.field_ref.as_ref().unwrap().field_path, "status.podIP");

        // /tmp is the writable emptyDir the read-only root filesystem needs.
        let mount = &c.volume_mounts.as_ref().unwrap()[0];
        assert_eq!(mount.mount_path, "/tmp");
        let volume = spec
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == mount.name)
            .unwrap();
        assert!(volume.empty_dir.is_some());
    }

    #[test]
    fn same_inputs_give_the_same_pod() {
        let (ws, world) = world_spec("meadow");
        let a = desired_pod(&ws, &world, &cell("c0-1", 0), &bounds(), Role::Incoming, None).unwrap();
        let b = desired_pod(&ws, &world, &cell("c0-1", 0), &bounds(), Role::Incoming, None).unwrap();
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap()
        );
    }

    #[test]
    fn metadata_missing_from_the_spec_is_an_error() {
        let (ws, world) = world_spec("meadow");
        for (field, clear) in [
            (
                "metadata.uid",
                (|ws: &mut WorldSpec| ws.metadata.uid = None) as fn(&mut WorldSpec),
            ),
            ("metadata.namespace", |ws| ws.metadata.namespace = None),
            ("metadata.name", |ws| ws.metadata.name = Some(String::new())),
        ] {
            let mut broken = ws.clone();
            clear(&mut broken);
            assert_eq!(
                desired_pod(&broken, &world, &cell("c0", 0), &bounds(), Role::Incoming, None).unwrap_err(),
                DesiredError::MissingMetadata(field)
            );
            assert_eq!(
                desired_service(&broken, "f").unwrap_err(),
                DesiredError::MissingMetadata(field)
            );
        }
    }

    #[test]
    fn service_is_headless_and_selects_every_cell_of_the_world() {
        let (ws, world) = world_spec("meadow");
        let svc = desired_service(&ws, "f").unwrap();
        assert_eq!(svc.metadata.name.as_deref(), Some("meadow-cells"));
        assert_eq!(svc.metadata.namespace.as_deref(), Some("games"));
        assert_eq!(
            svc.metadata.owner_references.as_ref().unwrap()[0].controller,
            Some(true)
        );
        let spec = svc.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(false));
        let port = &spec.ports.as_ref().unwrap()[0];
        assert_eq!((port.name.as_deref(), port.port), (Some("http"), 8080));
        // The selector matches the labels of cells of any id and incarnation, and
        // not those of another world.
        let selector = spec.selector.unwrap();
        let matches =
            |labels: &BTreeMap<String, String>| selector.iter().all(|(k, v)| labels.get(k) == Some(v));
        for pod in [
            desired_pod(&ws, &world, &cell("c0", 0), &bounds(), Role::Incoming, None).unwrap(),
            desired_pod(&ws, &world, &cell("c3-01", 4), &bounds(), Role::Incoming, None).unwrap(),
        ] {
            assert!(matches(pod.metadata.labels.as_ref().unwrap()));
        }
        assert!(!matches(&fleetforge_crd::keys::cell_labels(
            "pasture",
            &CellId::root(0)
        )));
    }

    #[test]
    fn service_names_are_dns_1035_labels() {
        for world in ["meadow", "1st-world", &"w".repeat(253), "a.b.c"] {
            let name = service_name(world);
            assert!(is_dns1123_label(&name), "{name}");
            assert!(name.starts_with(|c: char| c.is_ascii_lowercase()), "{name}");
        }
        assert_ne!(service_name(&"w".repeat(200)), service_name(&"w".repeat(201)));
    }
}
