//! The reconcile queue depth: worlds that something woke (a change to the world,
//! to one of its cell Pods or its Service, or a load sample that matters) and
//! whose reconcile has not started since.
//!
//! kube-runtime keeps its queue to itself, so the operator counts at the edges:
//! each trigger stream marks its world, and the reconcile clears the mark when it
//! starts. Timer-driven requeues (resyncs, backoff) are not triggers here: they
//! are scheduled work, not a backlog.

use std::collections::HashSet;
use std::sync::Mutex;

use fleetforge_crd::WorldSpec;
use fleetforge_obs::metrics as m;
use kube::Resource;
use kube::runtime::reflector::ObjectRef;

/// Worlds waiting for a reconcile, shared by every controller of the process.
#[derive(Debug, Default)]
pub struct Queue {
    waiting: Mutex<HashSet<ObjectRef<WorldSpec>>>,
}

impl Queue {
    /// Marks `world` as waiting.
    pub fn woken(&self, world: ObjectRef<WorldSpec>) {
        let depth = {
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            waiting.insert(world);
            waiting.len()
        };
        metrics::gauge!(m::RECONCILE_QUEUE_DEPTH).set(depth as f64);
    }

    /// Marks the world that owns `obj` (by its controller reference) as waiting.
    pub fn owner_woken<K: Resource>(&self, obj: &K) {
        let namespace = obj.meta().namespace.clone().unwrap_or_default();
        if let Some(owner) = obj
            .meta()
            .owner_references
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|o| o.controller == Some(true) && o.kind == WorldSpec::kind(&()))
        {
            self.woken(ObjectRef::new(&owner.name).within(&namespace));
        }
    }

    /// Clears `world`'s mark: its reconcile starts.
    pub fn started(&self, world: &ObjectRef<WorldSpec>) {
        let depth = {
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            waiting.remove(world);
            waiting.len()
        };
        metrics::gauge!(m::RECONCILE_QUEUE_DEPTH).set(depth as f64);
    }

    /// Worlds waiting now.
    pub fn depth(&self) -> usize {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::*;

    #[test]
    fn a_world_waits_from_its_first_trigger_until_its_reconcile_starts() {
        let q = Queue::default();
        let world = ObjectRef::<WorldSpec>::new("meadow").within("games");
        q.woken(world.clone());
        q.woken(world.clone());
        let mut pod = Pod::default();
        pod.metadata.namespace = Some("games".into());
        pod.metadata.owner_references = Some(vec![OwnerReference {
            kind: "WorldSpec".into(),
            name: "tundra".into(),
            controller: Some(true),
            ..OwnerReference::default()
        }]);
        q.owner_woken(&pod);
        assert_eq!(q.depth(), 2);
        q.started(&world);
        assert_eq!(q.depth(), 1);
        // A Pod owned by something else wakes no world.
        pod.metadata.owner_references.as_mut().unwrap()[0].kind = "ReplicaSet".into();
        q.owner_woken(&pod);
        assert_eq!(q.depth(), 1);
    }
}
