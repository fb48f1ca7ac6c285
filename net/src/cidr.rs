//! IPv4 prefixes (`10.233.0.0/16`): parsing, containment, overlap, and carving a prefix into equal subnets. Pure.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IPv4 prefix whose host bits are zero (`10.233.4.0/24`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

/// Why a text is not an IPv4 prefix; names the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("'{0}' is not an IPv4 prefix (expected ADDRESS/LENGTH, e.g. 10.233.0.0/16)")]
    Syntax(String),
    #[error("'{0}' has a prefix length over 32")]
    Length(String),
    #[error("'{text}' has host bits set (did you mean {network}?)")]
    HostBits { text: String, network: String },
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) }
}

impl Ipv4Cidr {
    /// The prefix of `addr` with `prefix` bits (host bits cleared).
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Ipv4Cidr {
        let prefix = prefix.min(32);
        Ipv4Cidr { network: Ipv4Addr::from(u32::from(addr) & mask(prefix)), prefix }
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The last address (the broadcast address of a subnet).
    pub fn last(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask(self.prefix))
    }

    /// How many addresses the prefix spans.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.network)
    }

    /// True when `other` lies wholly inside this prefix.
    pub fn contains_cidr(&self, other: &Ipv4Cidr) -> bool {
        other.prefix >= self.prefix && self.contains(other.network)
    }

    /// True when the two prefixes share an address (one contains the other).
    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        self.contains_cidr(other) || other.contains_cidr(self)
    }

    /// The `n`th address of the prefix (0 is the network address), if it lies inside.
    pub fn nth(&self, n: u64) -> Option<Ipv4Addr> {
        (n < self.size()).then(|| Ipv4Addr::from(u32::from(self.network).wrapping_add(n as u32)))
    }

    /// The offset of `ip` inside the prefix.
    pub fn offset_of(&self, ip: Ipv4Addr) -> Option<u64> {
        self.contains(ip).then(|| u64::from(u32::from(ip) - u32::from(self.network)))
    }

    /// How many subnets of length `prefix` this prefix holds (0 when `prefix` is shorter than its own).
    pub fn subnet_count(&self, prefix: u8) -> u64 {
        if prefix < self.prefix || prefix > 32 { 0 } else { 1u64 << (prefix - self.prefix) }
    }

    /// The `n`th subnet of length `prefix`.
    pub fn subnet(&self, prefix: u8, n: u64) -> Option<Ipv4Cidr> {
        if n >= self.subnet_count(prefix) {
            return None;
        }
        let step = 1u64 << (32 - u32::from(prefix));
        let start = u64::from(u32::from(self.network)) + n * step;
        Some(Ipv4Cidr { network: Ipv4Addr::from(start as u32), prefix })
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    /// `ADDRESS/LENGTH` with no host bits set; a bare address is a /32.
    fn from_str(text: &str) -> Result<Ipv4Cidr, CidrError> {
        let t = text.trim();
        let (addr, len) = t.split_once('/').unwrap_or((t, "32"));
        let addr: Ipv4Addr = addr.parse().map_err(|_| CidrError::Syntax(text.to_string()))?;
        let prefix: u8 = len.parse().map_err(|_| CidrError::Syntax(text.to_string()))?;
        if prefix > 32 {
            return Err(CidrError::Length(text.to_string()));
        }
        let cidr = Ipv4Cidr::new(addr, prefix);
        if cidr.network != addr {
            return Err(CidrError::HostBits { text: text.to_string(), network: cidr.to_string() });
        }
        Ok(cidr)
    }
}

impl Serialize for Ipv4Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Ipv4Cidr, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_prints_and_refuses_with_the_text() {
        assert_eq!(c("10.233.0.0/16").to_string(), "10.233.0.0/16");
        assert_eq!(c("10.1.2.3").to_string(), "10.1.2.3/32");
        assert_eq!(c("0.0.0.0/0").size(), 1 << 32);
        let e = "10.233.1.0/16".parse::<Ipv4Cidr>().unwrap_err().to_string();
        assert_eq!(e, "'10.233.1.0/16' has host bits set (did you mean 10.233.0.0/16?)");
        assert!("10.0.0.0/33".parse::<Ipv4Cidr>().unwrap_err().to_string().contains("over 32"));
        assert!("ten/8".parse::<Ipv4Cidr>().unwrap_err().to_string().starts_with("'ten/8' is not an IPv4 prefix"));
        let json = serde_json::to_string(&c("10.233.0.0/16")).unwrap();
        assert_eq!(json, "\"10.233.0.0/16\"");
        assert_eq!(serde_json::from_str::<Ipv4Cidr>(&json).unwrap(), c("10.233.0.0/16"));
    }

    #[test]
    fn containment_overlap_and_subnets() {
        let cluster = c("10.233.0.0/16");
        assert!(cluster.contains("10.233.255.7".parse().unwrap()));
        assert!(!cluster.contains("10.234.0.1".parse().unwrap()));
        assert!(cluster.overlaps(&c("10.233.4.0/24")) && c("10.233.4.0/24").overlaps(&cluster));
        assert!(cluster.overlaps(&c("10.0.0.0/8")));
        assert!(!cluster.overlaps(&c("10.234.0.0/16")));
        assert_eq!(cluster.subnet_count(24), 256);
        assert_eq!(cluster.subnet(24, 5), Some(c("10.233.5.0/24")));
        assert_eq!(cluster.subnet(24, 256), None);
        assert_eq!(cluster.subnet(8, 0), None);
        assert_eq!(c("10.233.5.0/24").last(), "10.233.5.255".parse::<Ipv4Addr>().unwrap());
        assert_eq!(c("10.233.5.0/24").nth(1), Some("10.233.5.1".parse().unwrap()));
        assert_eq!(c("10.233.5.0/24").offset_of("10.233.5.9".parse().unwrap()), Some(9));
    }

    proptest! {
        #[test]
        fn subnets_tile_their_parent(bits in 0u32.., len in 0u8..=24, extra in 0u8..=8, n in 0u64..256) {
            let parent = Ipv4Cidr::new(Ipv4Addr::from(bits), len);
            let sub_len = len + extra;
            if let Some(s) = parent.subnet(sub_len, n) {
                prop_assert!(parent.contains_cidr(&s));
                prop_assert_eq!(s.prefix(), sub_len);
                if let Some(next) = parent.subnet(sub_len, n + 1) {
                    prop_assert!(!s.overlaps(&next));
                    prop_assert_eq!(u64::from(u32::from(next.network())), u64::from(u32::from(s.last())) + 1);
                }
            } else {
                prop_assert!(n >= parent.subnet_count(sub_len));
            }
            prop_assert_eq!(parent.to_string().parse::<Ipv4Cidr>().unwrap(), parent);
        }
    }
}
