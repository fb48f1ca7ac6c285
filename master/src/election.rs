//! The masters' ZooKeeper leader election, as Mesos's contender: each master joins the group under the `--zk` path
//! with an ephemeral sequential member `json.info_NNNNNNNNNN` holding its `MasterInfo` JSON (see `agora_detector`);
//! the member with the lowest sequence leads. The election itself is `agora_detector::election`, shared with
//! Marathon.

use std::time::Duration;

use agora_detector::election::Contender;
use agora_detector::{MEMBER_PREFIX, MesosMasterInfo, ZkUrl};
use tokio::sync::watch;

pub use agora_detector::election::Role;

/// Starts contending as a master; see [`agora_detector::election::start`].
pub fn start(url: ZkUrl, info: MesosMasterInfo, session_timeout: Duration) -> watch::Receiver<Role> {
    agora_detector::election::start(Contender {
        url,
        member_prefix: MEMBER_PREFIX.into(),
        data: serde_json::to_vec(&info).expect("MasterInfo serialises"),
        decode: agora_detector::decode_master_info,
        session_timeout,
    })
}
