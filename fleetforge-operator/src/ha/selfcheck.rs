//! The startup self-check (REQ-SEC-001): before it acts, the operator asks the
//! API server, with SelfSubjectAccessReviews, whether it may make every call its
//! reconcile makes, and fails with the missing permissions named; it also asks
//! about permissions it must not have (reading Secrets, wildcards) and warns.
//!
//! [`REQUIRED`] is the documented set: `deploy/rbac/operator-clusterrole.yaml`
//! grants exactly it, which a test checks.

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::events::{EventType, Recorder, Reporter};

use crate::mapping::events::{EXCESS_PERMISSIONS, event};

/// One permission: a verb on a resource of an API group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Permission {
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// Resource, with `/subresource` where there is one.
    pub resource: &'static str,
    /// Verb.
    pub verb: &'static str,
}

const fn p(group: &'static str, resource: &'static str, verb: &'static str) -> Permission {
    Permission {
        group,
        resource,
        verb,
    }
}

/// What the reconcile needs in every namespace it watches (see the comments in
/// `deploy/rbac/operator-clusterrole.yaml` for why each).
pub const REQUIRED: &[Permission] = &[
    p("fleetforge.io", "worldspecs", "get"),
    p("fleetforge.io", "worldspecs", "list"),
    p("fleetforge.io", "worldspecs", "watch"),
    p("fleetforge.io", "worldspecs", "patch"),
    p("fleetforge.io", "worldspecs/status", "patch"),
    p("fleetforge.io", "worldspecs/finalizers", "update"),
    p("", "pods", "get"),
    p("", "pods", "list"),
    p("", "pods", "watch"),
    p("", "pods", "create"),
    p("", "pods", "patch"),
    p("", "pods", "delete"),
    p("", "services", "get"),
    p("", "services", "list"),
    p("", "services", "watch"),
    p("", "services", "create"),
    p("", "services", "patch"),
    p("policy", "poddisruptionbudgets", "get"),
    p("policy", "poddisruptionbudgets", "list"),
    p("policy", "poddisruptionbudgets", "watch"),
    p("policy", "poddisruptionbudgets", "create"),
    p("policy", "poddisruptionbudgets", "patch"),
    p("", "secrets", "create"),
    p("", "secrets", "patch"),
    p("events.k8s.io", "events", "create"),
    p("events.k8s.io", "events", "patch"),
];

/// What leader election needs on its Lease, in the operator's own namespace.
pub const LEADER_ELECTION: &[Permission] = &[
    p("coordination.k8s.io", "leases", "get"),
    p("coordination.k8s.io", "leases", "create"),
    p("coordination.k8s.io", "leases", "update"),
    p("coordination.k8s.io", "leases", "list"),
    p("coordination.k8s.io", "leases", "watch"),
];

/// Permissions beyond the documented set that the operator warns about.
pub const UNWANTED: &[Permission] = &[
    p("", "secrets", "get"),
    p("", "secrets", "list"),
    p("*", "*", "*"),
    p("rbac.authorization.k8s.io", "clusterroles", "escalate"),
];

/// Where a permission is checked: a namespace, or every namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The permission.
    pub permission: Permission,
    /// The namespace (`None`: cluster-wide).
    pub namespace: Option<String>,
    /// A resource name (the Lease's).
    pub name: Option<String>,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = &self.permission;
        let group = if p.group.is_empty() { "core" } else { p.group };
        write!(f, "{} {}/{}", p.verb, group, p.resource)?;
        if let Some(name) = &self.name {
            write!(f, " {name}")?;
        }
        match &self.namespace {
            Some(ns) => write!(f, " in namespace {ns}"),
            None => write!(f, " in all namespaces"),
        }
    }
}

/// What the self-check found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Required permissions the operator lacks: it cannot run.
    pub missing: Vec<Check>,
    /// Unwanted permissions the operator holds: it runs, with a warning.
    pub excess: Vec<Check>,
}

/// Why the self-check could not finish or the operator must not start.
#[derive(Debug, thiserror::Error)]
pub enum SelfCheckError {
    /// The API server could not be asked.
    #[error("asking the API server what the operator may do: {0}")]
    Api(#[from] kube::Error),
    /// Permissions are missing.
    #[error(
        "the operator lacks permissions it needs (apply deploy/rbac/ or grant them): {}",
        .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    Missing(Vec<Check>),
}

/// The checks for watching `namespaces` (`None`: all) and electing a leader on
/// Lease `lease` in `lease_namespace` (none without leader election).
pub fn checks(namespaces: &[Option<String>], lease: Option<(&str, &str)>) -> (Vec<Check>, Vec<Check>) {
    let mut required = Vec::new();
    let mut unwanted = Vec::new();
    for ns in namespaces {
        for permission in REQUIRED {
            required.push(Check {
                permission: *permission,
                namespace: ns.clone(),
                name: None,
            });
        }
        for permission in UNWANTED {
            unwanted.push(Check {
                permission: *permission,
                namespace: ns.clone(),
                name: None,
            });
        }
    }
    if let Some((namespace, name)) = lease {
        for permission in LEADER_ELECTION {
            required.push(Check {
                permission: *permission,
                namespace: Some(namespace.to_owned()),
                // `create` cannot be granted for a name that does not exist yet.
                name: (permission.verb != "create").then(|| name.to_owned()),
            });
        }
    }
    (required, unwanted)
}

async fn allowed(api: &Api<SelfSubjectAccessReview>, check: &Check) -> Result<bool, kube::Error> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some(check.permission.group.to_owned()),
                resource: Some(
                    check
                        .permission
                        .resource
                        .split('/')
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                ),
                subresource: check
                    .permission
                    .resource
                    .split_once('/')
                    .map(|(_, s)| s.to_owned()),
                verb: Some(check.permission.verb.to_owned()),
                namespace: check.namespace.clone(),
                name: check.name.clone(),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let answer = api.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// Asks the API server about every check. Fails when a required permission is
/// missing; returns the unwanted ones held.
pub async fn self_check(
    client: &Client,
    required: &[Check],
    unwanted: &[Check],
) -> Result<Report, SelfCheckError> {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let mut report = Report::default();
    for check in required {
        if !allowed(&api, check).await? {
            report.missing.push(check.clone());
        }
    }
    if !report.missing.is_empty() {
        return Err(SelfCheckError::Missing(report.missing));
    }
    for check in unwanted {
        if allowed(&api, check).await? {
            report.excess.push(check.clone());
        }
    }
    Ok(report)
}

/// The user the operator authenticates as, by a SelfSubjectReview (which every
/// authenticated user may create).
pub async fn whoami(client: &Client) -> Result<String, kube::Error> {
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = api
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await?;
    Ok(review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .unwrap_or_default())
}

/// Reports permissions beyond the documented set: the gauge, one warning line
/// each, and a Warning Event on `pod` (the operator's own Pod) when known, so
/// `kubectl describe pod` shows it where an admin looks first.
pub async fn warn_excess(client: &Client, report: &Report, pod: Option<ObjectReference>, instance: &str) {
    metrics::gauge!(fleetforge_obs::metrics::EXCESS_PERMISSIONS).set(report.excess.len() as f64);
    for check in &report.excess {
        tracing::warn!(permission = %check, "the operator holds a permission beyond its documented set; narrow its RBAC");
    }
    let (Some(pod), false) = (pod, report.excess.is_empty()) else {
        return;
    };
    let list: Vec<String> = report.excess.iter().map(ToString::to_string).collect();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "fleetforge-operator".to_owned(),
            instance: Some(instance.to_owned()),
        },
    );
    let ev = event(
        EventType::Warning,
        EXCESS_PERMISSIONS,
        "SelfCheck",
        format!(
            "the operator holds {} permission(s) beyond its documented set; narrow its RBAC: {}",
            list.len(),
            list.join("; ")
        ),
    );
    if let Err(e) = recorder.publish(&ev, &pod).await {
        tracing::warn!(error = %e, "could not record the ExcessPermissions Event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The shipped ClusterRole grants exactly [`REQUIRED`], and the leader
    /// election Role exactly [`LEADER_ELECTION`].
    #[test]
    fn the_shipped_rbac_grants_exactly_the_documented_set() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rbac");
        let granted = |file: &str, kind: &str| -> BTreeSet<(String, String, String)> {
            let mut out = BTreeSet::new();
            for doc in fleetforge_testenv::yaml::file_documents(&root.join(file)).unwrap() {
                let v: serde_yaml_ng::Value = serde_yaml_ng::to_value(doc).unwrap();
                if v["kind"].as_str() != Some(kind) {
                    continue;
                }
                for rule in v["rules"].as_sequence().unwrap() {
                    let list = |k: &str| -> Vec<String> {
                        rule[k]
                            .as_sequence()
                            .unwrap()
                            .iter()
                            .map(|s| s.as_str().unwrap().to_owned())
                            .collect()
                    };
                    for g in list("apiGroups") {
                        for r in list("resources") {
                            for verb in list("verbs") {
                                out.insert((g.clone(), r.clone(), verb));
                            }
                        }
                    }
                }
            }
            out
        };
        let own = |ps: &[Permission]| -> BTreeSet<(String, String, String)> {
            ps.iter()
                .map(|p| (p.group.to_owned(), p.resource.to_owned(), p.verb.to_owned()))
                .collect()
        };
        assert_eq!(granted("operator-clusterrole.yaml", "ClusterRole"), own(REQUIRED));
        assert_eq!(
            granted("operator-leader-election.yaml", "Role"),
            own(LEADER_ELECTION)
        );
    }

    #[test]
    fn checks_cover_every_namespace_and_name_the_lease() {
        let (required, unwanted) = checks(&[Some("a".into()), Some("b".into())], Some(("ops", "lease")));
        assert_eq!(required.len(), 2 * REQUIRED.len() + LEADER_ELECTION.len());
        assert_eq!(unwanted.len(), 2 * UNWANTED.len());
        let create = required
            .iter()
            .find(|c| c.permission.resource == "leases" && c.permission.verb == "create")
            .unwrap();
        assert_eq!(create.name, None);
        assert_eq!(
            create.to_string(),
            "create coordination.k8s.io/leases in namespace ops"
        );
        let get = required
            .iter()
            .find(|c| c.permission.resource == "leases" && c.permission.verb == "get")
            .unwrap();
        assert_eq!(
            get.to_string(),
            "get coordination.k8s.io/leases lease in namespace ops"
        );
    }
}
