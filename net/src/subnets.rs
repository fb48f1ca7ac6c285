//! The cluster's address plan: the cluster CIDR carved into one subnet per agent, all of one length. The master
//! decides with [`AddressPlan::allocate`] which subnet an agent gets (pure; the master persists the answer in its
//! registry before telling the agent).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::cidr::Ipv4Cidr;

/// The longest agent subnet: a /30 still holds the bridge's address and one container.
pub const MAX_SUBNET_PREFIX: u8 = 30;

/// The cluster CIDR and the length of the subnet each agent gets from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressPlan {
    pub cluster: Ipv4Cidr,
    pub subnet_prefix: u8,
}

/// Why a plan or an allocation is impossible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubnetError {
    #[error("agent subnets of /{subnet_prefix} do not fit in the cluster CIDR {cluster} (use a length from /{} to /{MAX_SUBNET_PREFIX})", cluster.prefix())]
    BadLength { cluster: Ipv4Cidr, subnet_prefix: u8 },
    #[error("the cluster CIDR {cluster} has no free /{subnet_prefix} subnet left ({count} agents hold one each)")]
    Exhausted { cluster: Ipv4Cidr, subnet_prefix: u8, count: u64 },
}

impl AddressPlan {
    pub fn new(cluster: Ipv4Cidr, subnet_prefix: u8) -> Result<AddressPlan, SubnetError> {
        if subnet_prefix < cluster.prefix() || subnet_prefix > MAX_SUBNET_PREFIX {
            return Err(SubnetError::BadLength { cluster, subnet_prefix });
        }
        Ok(AddressPlan { cluster, subnet_prefix })
    }

    /// True when `subnet` is one of this plan's agent subnets.
    pub fn is_subnet(&self, subnet: &Ipv4Cidr) -> bool {
        subnet.prefix() == self.subnet_prefix && self.cluster.contains_cidr(subnet)
    }

    /// The subnet for an agent: `wanted` (the one it already uses, after a restart or a master failover) when it is
    /// one of the plan's and nobody else holds it, else the lowest free one.
    pub fn allocate(&self, taken: &BTreeSet<Ipv4Cidr>, wanted: Option<Ipv4Cidr>) -> Result<Ipv4Cidr, SubnetError> {
        if let Some(w) = wanted.filter(|w| self.is_subnet(w) && !taken.iter().any(|t| t.overlaps(w))) {
            return Ok(w);
        }
        let count = self.cluster.subnet_count(self.subnet_prefix);
        (0..count)
            .filter_map(|n| self.cluster.subnet(self.subnet_prefix, n))
            .find(|s| !taken.iter().any(|t| t.overlaps(s)))
            .ok_or(SubnetError::Exhausted { cluster: self.cluster, subnet_prefix: self.subnet_prefix, count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn plan() -> AddressPlan {
        AddressPlan::new("10.233.0.0/22".parse().unwrap(), 24).unwrap()
    }

    #[test]
    fn agents_get_the_lowest_free_subnet_or_the_one_they_hold() {
        let p = plan();
        let mut taken = BTreeSet::new();
        let a = p.allocate(&taken, None).unwrap();
        assert_eq!(a.to_string(), "10.233.0.0/24");
        taken.insert(a);
        assert_eq!(p.allocate(&taken, None).unwrap().to_string(), "10.233.1.0/24");
        let wanted = "10.233.3.0/24".parse().unwrap();
        assert_eq!(p.allocate(&taken, Some(wanted)).unwrap(), wanted);
        // Held by another agent, of another length, or outside the plan: the lowest free one instead.
        for w in ["10.233.0.0/24", "10.233.2.0/25", "10.9.0.0/24"] {
            assert_eq!(p.allocate(&taken, Some(w.parse().unwrap())).unwrap().to_string(), "10.233.1.0/24");
        }
        for n in 1..4 {
            taken.insert(p.cluster.subnet(24, n).unwrap());
        }
        let e = p.allocate(&taken, None).unwrap_err().to_string();
        assert_eq!(e, "the cluster CIDR 10.233.0.0/22 has no free /24 subnet left (4 agents hold one each)");
    }

    #[test]
    fn a_length_outside_the_cluster_is_refused() {
        let cluster: Ipv4Cidr = "10.233.0.0/16".parse().unwrap();
        assert!(AddressPlan::new(cluster, 8).unwrap_err().to_string().contains("use a length from /16 to /30"));
        assert!(AddressPlan::new(cluster, 31).is_err());
        assert!(AddressPlan::new(cluster, 16).is_ok());
    }

    proptest! {
        #[test]
        fn allocations_never_overlap_and_stay_inside(wants in proptest::collection::vec(proptest::option::of(0u64..40), 0..40)) {
            let p = AddressPlan::new("10.233.0.0/19".parse().unwrap(), 24).unwrap();
            let mut taken = BTreeSet::new();
            for w in wants {
                let wanted = w.and_then(|n| Ipv4Cidr::new("10.233.0.0".parse().unwrap(), 16).subnet(24, n));
                match p.allocate(&taken, wanted) {
                    Ok(s) => {
                        prop_assert!(p.is_subnet(&s));
                        prop_assert!(!taken.iter().any(|t: &Ipv4Cidr| t.overlaps(&s)));
                        taken.insert(s);
                    }
                    Err(SubnetError::Exhausted { .. }) => prop_assert_eq!(taken.len(), 32),
                    Err(e) => prop_assert!(false, "{}", e),
                }
            }
        }
    }
}
