//! Offer matching: carving a task's resources out of an offer, including concrete ports.
//!
//! A task asks for resources in Mesos syntax (`cpus:0.1;mem:32`) plus, separately, a number of ports, because
//! "any N ports" has no Mesos spelling. [`OfferPacker`] keeps what is left of one offer and carves requests out of
//! it one at a time, so a framework can pack as many tasks into an offer as fit.

use agora_proto::model::{Offer, ParseError, Ranges, Resource, Resources, UNRESERVED, Value};

/// The name of the ranges resource that holds ports.
pub const PORTS: &str = "ports";

/// What one task needs: resources in Mesos syntax plus a count of ports to pick from the offer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskRequest {
    /// Scalars, sets or explicit ranges. A resource with role `*` may be served from any role in the offer
    /// (reserved resources first); one with a named role only from that role.
    pub resources: Resources,
    /// How many ports to pick from the offer's `ports` ranges, in addition to any ports in `resources`.
    pub ports: usize,
}

impl TaskRequest {
    pub fn new(resources: Resources) -> TaskRequest {
        TaskRequest { resources, ports: 0 }
    }

    /// Parses the resources in Mesos syntax, e.g. `cpus:0.1;mem:32`; every malformed item is reported.
    pub fn parse(text: &str) -> Result<TaskRequest, Vec<ParseError>> {
        Resources::parse(text).map(TaskRequest::new)
    }

    /// Also asks for `count` ports.
    pub fn with_ports(mut self, count: usize) -> TaskRequest {
        self.ports = count;
        self
    }
}

/// What is left of one offer while tasks are carved out of it.
#[derive(Clone, Debug, PartialEq)]
pub struct OfferPacker {
    remaining: Resources,
}

impl OfferPacker {
    /// Starts from everything the offer holds.
    pub fn new(offer: &Offer) -> OfferPacker {
        OfferPacker::from_resources(offer.resources.clone())
    }

    pub fn from_resources(resources: Resources) -> OfferPacker {
        OfferPacker { remaining: resources }
    }

    /// What has not been carved out yet.
    pub fn remaining(&self) -> &Resources {
        &self.remaining
    }

    /// Carves `request` out of what remains and returns the resources to put in the task (with the roles they
    /// were offered in, and concrete ports), or `None`, leaving the packer unchanged, when it does not fit.
    pub fn take(&mut self, request: &TaskRequest) -> Option<Resources> {
        let mut rest = self.remaining.clone();
        let mut taken = Resources::new();
        for wanted in request.resources.iter() {
            let got = carve(&rest, wanted)?;
            rest.subtract(&got);
            taken.add(&got);
        }
        if request.ports > 0 {
            let got = carve_ports(&rest, request.ports)?;
            rest.subtract(&got);
            taken.add(&got);
        }
        self.remaining = rest;
        Some(taken)
    }

    /// [`OfferPacker::take`] from only the resources whose role `accept` takes (Marathon's
    /// `acceptedResourceRoles`): `["*"]` keeps a task off reservations, a role's name puts it on them.
    pub fn take_within(&mut self, request: &TaskRequest, accept: impl Fn(&str) -> bool) -> Option<Resources> {
        let visible = Resources::from_vec(self.remaining.iter().filter(|r| accept(&r.role)).cloned());
        let taken = OfferPacker::from_resources(visible).take(request)?;
        self.remaining.subtract(&taken);
        Some(taken)
    }

    /// Carves up to `max` copies of `request`; returns one resource bag per task that fits.
    pub fn take_many(&mut self, request: &TaskRequest, max: usize) -> Vec<Resources> {
        let mut out = Vec::new();
        while out.len() < max {
            match self.take(request) {
                Some(r) => out.push(r),
                None => break,
            }
        }
        out
    }
}

/// How many copies of `request` fit in `offered`, up to `max`, and the resources of each.
pub fn fit(offered: &Resources, request: &TaskRequest, max: usize) -> Vec<Resources> {
    OfferPacker::from_resources(offered.clone()).take_many(request, max)
}

/// The offered resources `wanted` may draw from: the same name and kind, reserved roles before `*`.
fn candidates<'a>(offered: &'a Resources, wanted: &'a Resource) -> impl Iterator<Item = &'a Resource> + 'a {
    let same_kind = move |r: &&Resource| {
        r.name == wanted.name
            && std::mem::discriminant(&r.value) == std::mem::discriminant(&wanted.value)
            && (wanted.role == UNRESERVED || r.role == wanted.role)
    };
    let reserved = offered.iter().filter(same_kind).filter(|r| !r.is_unreserved());
    let unreserved = offered.iter().filter(same_kind).filter(|r| r.is_unreserved());
    reserved.chain(unreserved)
}

fn carve(offered: &Resources, wanted: &Resource) -> Option<Resources> {
    match &wanted.value {
        Value::Scalar(amount) => {
            let mut need = *amount;
            let mut got = Resources::new();
            for have in candidates(offered, wanted) {
                if !need.is_positive() {
                    break;
                }
                if let Value::Scalar(avail) = have.value {
                    let part = need.min(avail);
                    got.add(&single(&have.name, &have.role, Value::Scalar(part)));
                    need = need.saturating_sub(part);
                }
            }
            if need.is_positive() { None } else { Some(got) }
        }
        // Ranges and sets are served whole from one role.
        Value::Ranges(_) | Value::Set(_) => candidates(offered, wanted)
            .find(|have| {
                let probe = Resources::from_vec([Resource { role: have.role.clone(), ..wanted.clone() }]);
                Resources::from_vec([(*have).clone()]).contains(&probe)
            })
            .map(|have| single(&wanted.name, &have.role, wanted.value.clone())),
    }
}

fn carve_ports(offered: &Resources, count: usize) -> Option<Resources> {
    let probe =
        Resource { name: PORTS.to_string(), role: UNRESERVED.to_string(), value: Value::Ranges(Ranges::new([])) };
    let mut need = count;
    let mut got = Resources::new();
    for have in candidates(offered, &probe) {
        if need == 0 {
            break;
        }
        if let Value::Ranges(ranges) = &have.value {
            let picked: Vec<u64> = ranges.values().take(need).collect();
            need -= picked.len();
            got.add(&single(PORTS, &have.role, Value::Ranges(Ranges::new(picked.into_iter().map(|p| (p, p))))));
        }
    }
    if need > 0 { None } else { Some(got) }
}

fn single(name: &str, role: &str, value: Value) -> Resources {
    Resources::from_vec([Resource { name: name.to_string(), role: role.to_string(), value }])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(text: &str) -> Resources {
        text.parse().unwrap()
    }

    #[test]
    fn packs_as_many_tasks_as_fit() {
        let offered = res("cpus:1;mem:100;disk:10");
        let request = TaskRequest::parse("cpus:0.3;mem:32").unwrap();
        let tasks = fit(&offered, &request, 10);
        assert_eq!(tasks.len(), 3);
        assert_eq!(tasks[0], res("cpus:0.3;mem:32"));
    }

    #[test]
    fn fixed_point_arithmetic_packs_exactly() {
        // 0.1 × 10 is exactly 1 in fixed point, so ten tasks fit in one cpu.
        let tasks = fit(&res("cpus:1;mem:1000"), &TaskRequest::parse("cpus:0.1;mem:10").unwrap(), 100);
        assert_eq!(tasks.len(), 10);
    }

    #[test]
    fn max_bounds_the_count() {
        assert_eq!(fit(&res("cpus:8;mem:800"), &TaskRequest::parse("cpus:1").unwrap(), 2).len(), 2);
    }

    #[test]
    fn nothing_fits_when_a_resource_is_missing() {
        let request = TaskRequest::parse("cpus:0.1;gpus:1").unwrap();
        assert!(fit(&res("cpus:4;mem:100"), &request, 5).is_empty());
    }

    #[test]
    fn failed_take_leaves_the_packer_unchanged() {
        let mut packer = OfferPacker::from_resources(res("cpus:1;mem:10"));
        let before = packer.clone();
        assert!(packer.take(&TaskRequest::parse("cpus:0.5;mem:20").unwrap()).is_none());
        assert_eq!(packer, before);
    }

    #[test]
    fn picks_concrete_ports_from_ranges() {
        let mut packer = OfferPacker::from_resources(res("cpus:1;mem:100;ports:[31000-31001, 31005-31010]"));
        let request = TaskRequest::parse("cpus:0.1").unwrap().with_ports(3);
        let first = packer.take(&request).unwrap();
        assert_eq!(first.ranges(PORTS), Ranges::new([(31000, 31001), (31005, 31005)]));
        let second = packer.take(&request).unwrap();
        assert_eq!(second.ranges(PORTS), Ranges::new([(31006, 31008)]));
        // Two ports remain, so a third task asking for three does not fit.
        assert!(packer.take(&request).is_none());
        assert_eq!(packer.remaining().ranges(PORTS), Ranges::new([(31009, 31010)]));
    }

    #[test]
    fn explicit_port_ranges_must_be_offered() {
        let offered = res("ports:[31000-31010]");
        assert_eq!(fit(&offered, &TaskRequest::parse("ports:[31002-31003]").unwrap(), 5).len(), 1);
        assert!(fit(&offered, &TaskRequest::parse("ports:[80-80]").unwrap(), 5).is_empty());
    }

    #[test]
    fn unreserved_request_uses_reserved_resources_first_and_keeps_roles() {
        let offered = res("cpus(ads):0.5;cpus:1;mem:64");
        let mut packer = OfferPacker::from_resources(offered);
        let got = packer.take(&TaskRequest::parse("cpus:0.75;mem:32").unwrap()).unwrap();
        assert_eq!(got, res("cpus(ads):0.5;cpus:0.25;mem:32"));
        assert_eq!(packer.remaining(), &res("cpus:0.75;mem:32"));
    }

    #[test]
    fn take_within_carves_only_from_the_accepted_roles_and_leaves_the_rest() {
        let mut packer = OfferPacker::from_resources(res("cpus(ads):0.5;mem(ads):64;cpus:1;mem:64"));
        let request = TaskRequest::parse("cpus:0.5;mem:32").unwrap();
        assert_eq!(packer.take_within(&request, |r| r == "*").unwrap(), res("cpus:0.5;mem:32"));
        assert_eq!(packer.take_within(&request, |r| r == "ads").unwrap(), res("cpus(ads):0.5;mem(ads):32"));
        assert_eq!(packer.take_within(&request, |r| r == "ads"), None, "no ads cpus left");
        assert_eq!(packer.remaining(), &res("mem(ads):32;cpus:0.5;mem:32"), "a refused take changes nothing");
    }

    #[test]
    fn role_request_only_uses_that_role() {
        let offered = res("cpus(ads):0.5;cpus:4");
        assert!(fit(&offered, &TaskRequest::parse("cpus(ads):1").unwrap(), 1).is_empty());
        assert_eq!(fit(&offered, &TaskRequest::parse("cpus(ads):0.25").unwrap(), 5).len(), 2);
    }

    #[test]
    fn empty_request_fits_without_limit_but_respects_max() {
        assert_eq!(fit(&Resources::new(), &TaskRequest::default(), 3).len(), 3);
    }
}
