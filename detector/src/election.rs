//! ZooKeeper leader election, shared by the masters and Marathon: each contender joins the group under a path with
//! an ephemeral sequential member `<prefix>NNNNNNNNNN` holding its data; the member with the lowest sequence leads.
//! Masters join as Mesos's contender does (`json.info_` members holding their `MasterInfo` JSON); Marathon
//! instances join under their own path with their `host:port`.
//!
//! The election reports a [`Role`] on a watch channel. A contender stops being the leader *at once* when its session
//! is disconnected (it cannot know whether the session will expire, and must never act on state another leader may
//! have moved on from); if the session survives and its member is still the lowest it leads again, and if the
//! session expired it joins again with a new member, as a candidate.

use std::time::Duration;

use tokio::sync::watch;
use zookeeper_client as zk;

use crate::{Leader, ZkUrl, lowest_member, read_leader_with};

/// Who contends, under which path, with what.
#[derive(Clone, Debug)]
pub struct Contender {
    pub url: ZkUrl,
    /// The members' name prefix, before the sequence (`json.info_` for masters).
    pub member_prefix: String,
    /// The member's data.
    pub data: Vec<u8>,
    /// Reads a member's data as a leader (`None`: not a member this contender understands).
    pub decode: fn(&[u8]) -> Option<Leader>,
    pub session_timeout: Duration,
}

/// What this contender is.
#[derive(Clone)]
pub enum Role {
    /// Not leading; `leader` is the leader if one is known.
    Candidate { leader: Option<Leader> },
    /// Leading, with the ZooKeeper session that holds the winning member (the registry is written through it).
    Leader { client: zk::Client, member: String },
}

impl std::fmt::Debug for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Role::Candidate { leader } => f.debug_struct("Candidate").field("leader", leader).finish(),
            Role::Leader { member, .. } => f.debug_struct("Leader").field("member", member).finish(),
        }
    }
}

impl Role {
    fn same_as(&self, other: &Role) -> bool {
        match (self, other) {
            (Role::Candidate { leader: a }, Role::Candidate { leader: b }) => a == b,
            (Role::Leader { member: a, client: c }, Role::Leader { member: b, client: d }) => {
                a == b && c.session_id() == d.session_id()
            }
            _ => false,
        }
    }
}

/// Starts contending; the election ends when every receiver of the returned channel is dropped (closing the
/// session, which removes this contender's member at once).
///
/// The ZooKeeper session runs on a thread of its own with its own runtime, so a process busy with a storm of
/// work (a master with re-registering agents) never starves its session's heartbeats and loses leadership because
/// of its own load.
pub fn start(contender: Contender) -> watch::Receiver<Role> {
    let (tx, rx) = watch::channel(Role::Candidate { leader: None });
    let spawned = std::thread::Builder::new().name("zk-election".into()).spawn(move || {
        match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt.block_on(contend(contender, tx)),
            Err(e) => tracing::error!(error = %e, "election: cannot start its runtime; never leading"),
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "election: cannot start its thread; never leading");
    }
    rx
}

fn publish(tx: &watch::Sender<Role>, role: Role) {
    tx.send_if_modified(|cur| {
        if cur.same_as(&role) {
            return false;
        }
        tracing::info!(from = ?cur, to = ?role, "election: role changed");
        *cur = role;
        true
    });
}

async fn contend(c: Contender, tx: watch::Sender<Role>) {
    let url = &c.url;
    let mut retry = crate::backoff::Retry::new(crate::ZK_BACKOFF);
    loop {
        let Some(client) = crate::connect_retrying(url, c.session_timeout, "election", &mut retry, tx.closed()).await
        else {
            return;
        };
        let acl = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        let joined = match client.mkdir(&url.path, &acl).await {
            Err(e) if !matches!(e, zk::Error::NodeExists) => Err(("cannot create the group path", e)),
            _ => {
                let member_mode = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
                match client.create(&url.member_path(&c.member_prefix), &c.data, &member_mode).await {
                    Ok((_, seq)) => Ok(format!("{}{seq}", c.member_prefix)),
                    Err(e) => Err(("cannot join the group", e)),
                }
            }
        };
        match joined {
            Ok(member) => {
                tracing::info!(zk = %url, member = %member, "election: joined as a candidate");
                retry.reset();
                if watch_group(&c, &client, &member, &tx).await.is_break() {
                    return;
                }
                publish(&tx, Role::Candidate { leader: None });
            }
            Err((what, e)) => tracing::warn!(zk = %url, error = %e, "election: {what}; retrying"),
        }
        // The session is gone or useless: join again with a new one, after a backoff (never at once, so that a
        // server that accepts sessions and fails every request is not hammered).
        drop(client);
        let closed = tx.closed();
        tokio::pin!(closed);
        if crate::pause(retry.next_delay(), &mut closed).await {
            return;
        }
    }
}

/// Follows the group for one session. `Break` when the contender is shutting down, `Continue` when the session
/// ended.
async fn watch_group(
    c: &Contender,
    client: &zk::Client,
    member: &str,
    tx: &watch::Sender<Role>,
) -> std::ops::ControlFlow<()> {
    use std::ops::ControlFlow::{Break, Continue};
    let url = &c.url;
    let mut state = client.state_watcher();
    loop {
        let (children, watcher) = match client.list_and_watch_children(&url.path).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "election: lost the group");
                return Continue(());
            }
        };
        if !children.iter().any(|c| c == member) {
            tracing::warn!(member, "election: this contender's member is gone");
            return Continue(());
        }
        if lowest_member(&children, &c.member_prefix).is_some_and(|m| m == member) {
            publish(tx, Role::Leader { client: client.clone(), member: member.to_string() });
        } else {
            let leader = read_leader_with(client, url, &c.member_prefix, c.decode).await.ok().flatten();
            publish(tx, Role::Candidate { leader });
        }
        tokio::select! {
            _ = tx.closed() => return Break(()),
            ev = watcher.changed() => {
                if matches!(ev.session_state, zk::SessionState::Expired | zk::SessionState::Closed | zk::SessionState::AuthFailed) {
                    return Continue(());
                }
            }
            s = state.changed() => {
                match s {
                    zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {}
                    zk::SessionState::Disconnected => {
                        // Stop leading at once, then wait to learn whether the session survives.
                        tracing::warn!("election: disconnected from ZooKeeper; not leading until reconnected");
                        publish(tx, Role::Candidate { leader: None });
                        loop {
                            tokio::select! {
                                _ = tx.closed() => return Break(()),
                                s = state.changed() => match s {
                                    zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => break,
                                    zk::SessionState::Disconnected => {}
                                    _ => return Continue(()),
                                },
                            }
                        }
                        tracing::info!("election: reconnected to ZooKeeper with the same session");
                    }
                    _ => return Continue(()),
                }
            }
        }
    }
}
