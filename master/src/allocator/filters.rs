//! Refusal ("decline") filters: after a framework declines an offer with `refuse_seconds`, the allocator does not
//! offer it the same agent's resources in that role again until the filter expires, unless more is free there.

use std::collections::HashMap;
use std::time::Instant;

use agora_proto::model::Resources;

use super::hash::BuildIdHasher;

/// One (framework, role)'s refusals, by agent id (several declines may be in force at once).
pub(super) type ByAgent = HashMap<String, Vec<Refusal>, BuildIdHasher>;

/// One declined offer: its resources and when the filter lapses.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Refusal {
    pub(super) refused: Resources,
    pub(super) expires: Instant,
}

impl Refusal {
    /// Mesos's `RefusedOfferFilter`: filtered while not expired and the refused resources contain the offer.
    fn filters(&self, offered: &Resources, now: Instant) -> bool {
        now < self.expires && self.refused.contains(offered)
    }
}

/// Decline ("refuse") filters, per (framework, role, agent), owned by the master between passes.
#[derive(Clone, Debug, Default)]
pub struct RefusalFilters {
    /// framework id → role → agent id → refusals. The pass looks an agent id up for every framework it considers,
    /// so these maps hash with [`BuildIdHasher`].
    by_framework: HashMap<String, HashMap<String, ByAgent, BuildIdHasher>, BuildIdHasher>,
}

impl RefusalFilters {
    /// Records that `framework_id` declined `refused` of `agent_id` in `role`, until `expires`.
    pub fn add(&mut self, framework_id: &str, role: &str, agent_id: &str, refused: Resources, expires: Instant) {
        self.by_framework
            .entry(framework_id.to_string())
            .or_default()
            .entry(role.to_string())
            .or_default()
            .entry(agent_id.to_string())
            .or_default()
            .push(Refusal { refused, expires });
    }

    /// Whether offering `offered` of `agent_id` to `framework_id` in `role` is filtered at `now`: some refusal for
    /// that triple has not expired and its refused resources are a superset of `offered`.
    pub fn is_filtered(
        &self,
        framework_id: &str,
        role: &str,
        agent_id: &str,
        offered: &Resources,
        now: Instant,
    ) -> bool {
        self.for_framework_role(framework_id, role).is_some_and(|agents| matches(agents, agent_id, offered, now))
    }

    /// REVIVE: drops the framework's filters in `roles`, or in all its roles when `None`.
    pub fn clear(&mut self, framework_id: &str, roles: Option<&[String]>) {
        match roles {
            None => {
                self.by_framework.remove(framework_id);
            }
            Some(roles) => {
                if let Some(by_role) = self.by_framework.get_mut(framework_id) {
                    for role in roles {
                        by_role.remove(role);
                    }
                    if by_role.is_empty() {
                        self.by_framework.remove(framework_id);
                    }
                }
            }
        }
    }

    /// Drops every filter of a framework (it was removed or failed over).
    pub fn remove_framework(&mut self, framework_id: &str) {
        self.by_framework.remove(framework_id);
    }

    /// Drops every filter on an agent (it was removed).
    pub fn remove_agent(&mut self, agent_id: &str) {
        self.by_framework.retain(|_, by_role| {
            by_role.retain(|_, by_agent| {
                by_agent.remove(agent_id);
                !by_agent.is_empty()
            });
            !by_role.is_empty()
        });
    }

    /// Drops the filters that have expired at `now`.
    pub fn expire(&mut self, now: Instant) {
        self.by_framework.retain(|_, by_role| {
            by_role.retain(|_, by_agent| {
                by_agent.retain(|_, refusals| {
                    refusals.retain(|r| now < r.expires);
                    !refusals.is_empty()
                });
                !by_agent.is_empty()
            });
            !by_role.is_empty()
        });
    }

    /// How many filters are stored for `role` (over all frameworks and agents); call [`Self::expire`] first for
    /// an exact count of the ones in force.
    pub fn active_count(&self, role: &str) -> usize {
        self.by_framework
            .values()
            .filter_map(|by_role| by_role.get(role))
            .flat_map(|by_agent| by_agent.values())
            .map(Vec::len)
            .sum()
    }

    /// The filters of one (framework, role), for the allocation pass to look up once.
    pub(super) fn for_framework_role(&self, framework_id: &str, role: &str) -> Option<&ByAgent> {
        self.by_framework.get(framework_id)?.get(role)
    }
}

/// Whether one of the refusals on `agent_id` filters `offered` at `now`.
pub(super) fn matches(by_agent: &ByAgent, agent_id: &str, offered: &Resources, now: Instant) -> bool {
    by_agent.get(agent_id).is_some_and(|refusals| refusals.iter().any(|r| r.filters(offered, now)))
}
