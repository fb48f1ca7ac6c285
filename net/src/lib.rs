//! `agora-net`: container networks for Agora — every task that asks for one gets its own IP, reachable from every
//! agent by plain routing (no overlay, no NAT between containers), as Mesos's CNI bridge and port-mapper plugins
//! give it, with a cluster-wide address plan.
//!
//! # Layout
//! - Pure, decided from plain data and tested without root:
//!   - [`cidr`]: IPv4 prefixes.
//!   - [`subnets`]: the cluster CIDR carved into one subnet per agent (the master's decision).
//!   - [`ipam`]: host-local address leases, one `O_EXCL` file per address, and the choice of the next one.
//!   - [`nft`]: the agent's nftables table rendered as text (safety rules, port mappings, NAT).
//!   - [`plan`]: what an agent's host and each container must look like, and the route-overlap check.
//! - The shell, thin and behind one seam: [`driver::NetworkDriver`] ([`driver::LinuxDriver`] on [`netlink`],
//!   [`netns`] and `nft -f -`; [`driver::RecordingDriver`] for tests).
//!
//! The agent decides when (its core); this crate decides how, and knows nothing of tasks or frameworks.

pub mod cidr;
pub mod driver;
pub mod ipam;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod plan;
pub mod subnets;

pub use cidr::{CidrError, Ipv4Cidr};
pub use driver::{LinuxDriver, NetError, NetworkDriver, RecordingDriver};
pub use ipam::{Ipam, IpamError};
pub use nft::{PortForward, Protocol, Ruleset};
pub use plan::{Assignment, Attachment, HostConfig, HostSpec, Peer};
pub use subnets::{AddressPlan, SubnetError};
