//! UPDATE_FRAMEWORK: a subscribed framework changes its `FrameworkInfo` without resubscribing (Mesos 1.9+).

use std::collections::BTreeSet;

use agora_proto::model::FrameworkInfo;
use agora_proto::model::cluster::OperatorEvent;

use super::{CallError, Master, Now};

impl Master {
    /// Mesos's `updateFramework`: `user`, `principal` and `checkpoint` are immutable; everything else of the info
    /// is replaced, the suppressed roles are set, offers for roles the framework no longer has are rescinded, the
    /// registry learns a new failover timeout, and operators see FRAMEWORK_UPDATED. Tasks keep the roles they were
    /// launched in.
    pub(crate) fn update_framework(
        &mut self,
        framework_id: &str,
        mut info: FrameworkInfo,
        suppressed_roles: Vec<String>,
        _now: Now,
    ) -> Result<(), CallError> {
        let f = self.frameworks.get(framework_id).ok_or_else(|| CallError::UnknownFramework(framework_id.into()))?;
        if info.id.as_deref().is_some_and(|id| id != framework_id) {
            return Err(CallError::Invalid(format!(
                "'framework_id' differs from 'update_framework.framework_info.id' ('{framework_id}')"
            )));
        }
        let immutable = [
            ("principal", f.info.principal != info.principal),
            ("user", f.info.user != info.user),
            ("checkpoint", f.info.checkpoint != info.checkpoint),
        ];
        if let Some((field, _)) = immutable.iter().find(|(_, changed)| *changed) {
            return Err(CallError::Invalid(format!("Updating 'FrameworkInfo.{field}' is unsupported")));
        }
        if let Some(r) = suppressed_roles.iter().find(|r| !info.roles.contains(r)) {
            return Err(CallError::Invalid(format!(
                "Suppressed role '{r}' is not contained in the list of roles of the framework"
            )));
        }
        info.id = Some(framework_id.to_string());
        let span = tracing::info_span!("update_framework", framework_id = %framework_id);
        let _g = span.enter();
        let f = self.frameworks.get_mut(framework_id).expect("checked above");
        let kept: BTreeSet<&String> = info.roles.iter().collect();
        let dropped: BTreeSet<String> = f.info.roles.iter().filter(|r| !kept.contains(r)).cloned().collect();
        f.info = info.clone();
        f.suppressed_roles = suppressed_roles.into_iter().collect();
        let stale: Vec<String> = f
            .offers
            .iter()
            .filter(|id| self.offers.get(*id).is_some_and(|o| dropped.contains(&o.offer.role)))
            .cloned()
            .collect();
        for id in stale {
            self.rescind_offer(&id);
        }
        tracing::info!(roles = ?info.roles, "framework updated its info");
        self.note_framework(framework_id, &info);
        let view = self.framework_view_of(framework_id).expect("checked above");
        self.operator(OperatorEvent::FrameworkUpdated(Box::new(view)));
        self.want_allocation();
        Ok(())
    }
}
