//! The operator stream's invariant: a snapshot ([`Master::cluster_state`]) with the operator events numbered after
//! it ([`Master::operator_seq`]) folded in is what a fresh snapshot shows — for any sequence of what happens to a
//! cluster, and wherever the snapshot is taken.

use std::collections::BTreeMap;

use agora_proto::model::cluster::{ClusterState, OperatorEvent};
use proptest::prelude::*;

use super::*;

/// What the stream reports (see `OperatorEvent`): agents by id with their info, frameworks by id with their info and
/// connection, tasks by (framework, task) with their state.
#[derive(Debug, Default, PartialEq)]
struct Folded {
    agents: BTreeMap<String, AgentInfo>,
    frameworks: BTreeMap<String, (FrameworkInfo, bool)>,
    tasks: BTreeMap<(String, String), TaskState>,
}

impl Folded {
    fn of(s: &ClusterState) -> Folded {
        let mut f = Folded::default();
        for a in &s.agents {
            f.agents.insert(a.info.id.clone().unwrap(), a.info.clone());
        }
        for fw in &s.frameworks {
            f.frameworks.insert(fw.info.id.clone().unwrap(), (fw.info.clone(), fw.connected));
        }
        for t in s.tasks.iter().chain(&s.unreachable_tasks).chain(&s.completed_tasks) {
            f.tasks.insert((t.framework_id.clone(), t.info.task_id.clone()), t.state);
        }
        f
    }

    fn apply(&mut self, e: &OperatorEvent) {
        match e {
            OperatorEvent::TaskAdded(t) => {
                self.tasks.insert((t.framework_id.clone(), t.info.task_id.clone()), t.state);
            }
            OperatorEvent::TaskUpdated { framework_id, status, state } => {
                self.tasks.insert((framework_id.clone(), status.task_id.clone()), *state);
            }
            OperatorEvent::AgentAdded(a) => {
                self.agents.insert(a.info.id.clone().unwrap(), a.info.clone());
            }
            OperatorEvent::AgentRemoved { agent_id } => {
                self.agents.remove(agent_id);
            }
            OperatorEvent::FrameworkAdded(f) | OperatorEvent::FrameworkUpdated(f) => {
                self.frameworks.insert(f.info.id.clone().unwrap(), (f.info.clone(), f.connected));
            }
            OperatorEvent::FrameworkRemoved(info) => {
                self.frameworks.remove(info.id.as_deref().unwrap());
            }
        }
    }
}

#[derive(Clone, Debug)]
enum Step {
    AddAgent,
    Subscribe {
        failover: bool,
    },
    Launch {
        framework: usize,
        tasks: usize,
    },
    Update {
        task: usize,
        state: TaskState,
    },
    Kill {
        task: usize,
    },
    Acknowledge {
        task: usize,
    },
    /// The agent's link breaks; `for_good`: it stays away until it is unreachable.
    LoseAgent {
        agent: usize,
        for_good: bool,
    },
    Disconnect {
        framework: usize,
    },
    Teardown {
        framework: usize,
    },
    Wait {
        secs: u64,
    },
    Snapshot,
}

fn step() -> impl Strategy<Value = Step> {
    let states = prop::sample::select(vec![TaskState::Running, TaskState::Finished, TaskState::Failed]);
    prop_oneof![
        2 => Just(Step::AddAgent),
        2 => any::<bool>().prop_map(|failover| Step::Subscribe { failover }),
        4 => (0..4usize, 1..3usize).prop_map(|(framework, tasks)| Step::Launch { framework, tasks }),
        4 => (0..16usize, states).prop_map(|(task, state)| Step::Update { task, state }),
        1 => (0..16usize).prop_map(|task| Step::Kill { task }),
        2 => (0..16usize).prop_map(|task| Step::Acknowledge { task }),
        2 => (0..4usize, any::<bool>()).prop_map(|(agent, for_good)| Step::LoseAgent { agent, for_good }),
        1 => (0..4usize).prop_map(|framework| Step::Disconnect { framework }),
        1 => (0..4usize).prop_map(|framework| Step::Teardown { framework }),
        1 => (1..30u64).prop_map(|secs| Step::Wait { secs }),
        3 => Just(Step::Snapshot),
    ]
}

struct World {
    h: Harness,
    agents: Vec<(ConnId, String)>,
    frameworks: Vec<(ConnId, String, String)>,
    /// (framework index, task id, agent conn)
    tasks: Vec<(usize, String, ConnId)>,
    next_task: usize,
    /// Snapshots and the event number each reflects.
    snapshots: Vec<(Folded, u64)>,
    events: Vec<(u64, OperatorEvent)>,
    /// Offers each framework connection holds.
    offers: BTreeMap<ConnId, Vec<Offer>>,
    launched: usize,
}

impl World {
    fn settle(&mut self) {
        self.h.settle();
        for e in self.h.take() {
            match e {
                Effect::Operator { seq, event } => self.events.push((seq, event)),
                Effect::ToFramework(c, SchedulerEvent::Offers(o)) => self.offers.entry(c).or_default().extend(o),
                Effect::ToFramework(c, SchedulerEvent::Rescind { offer_id }) => {
                    self.offers.entry(c).or_default().retain(|o| o.id != offer_id);
                }
                _ => {}
            }
        }
    }

    fn run(&mut self, step: Step) {
        let now = self.h.now;
        match step {
            Step::AddAgent => {
                let agent = self.h.add_agent();
                self.agents.push(agent);
            }
            Step::Subscribe { failover } => {
                let failover_timeout = if failover { 3600.0 } else { 0.0 };
                let info =
                    FrameworkInfo { failover_timeout, ..FrameworkInfo::new(format!("f{}", self.frameworks.len())) };
                self.frameworks.push(self.h.subscribe(info));
            }
            Step::Launch { framework, tasks } => {
                let Some((fc, fid, sid)) = self.frameworks.get(framework).cloned() else { return };
                let Some(offer) = self.offers.get_mut(&fc).and_then(|o| o.pop()) else { return };
                let Some((ac, _)) = self.agents.iter().find(|(_, id)| *id == offer.agent_id).cloned() else { return };
                let mut infos = Vec::new();
                for _ in 0..tasks {
                    let id = format!("t{}", self.next_task);
                    self.next_task += 1;
                    infos.push(task(&id, &offer.agent_id, "cpus:0.1;mem:16"));
                    self.tasks.push((framework, id, ac));
                }
                if self.h.master.call(&fid, &sid, launch(&offer, infos), now).is_ok() {
                    self.launched += tasks;
                }
            }
            Step::Update { task, state } => {
                let Some((f, id, ac)) = self.tasks.get(task).cloned() else { return };
                let fid = self.frameworks[f].1.clone();
                self.h.agent_update(ac, &fid, &id, state, task as u8);
            }
            Step::Kill { task } => {
                let Some((f, id, _)) = self.tasks.get(task).cloned() else { return };
                let (_, fid, sid) = self.frameworks[f].clone();
                let kill = Call::Kill { task_id: id, agent_id: None, grace_period: None };
                let _ = self.h.master.call(&fid, &sid, kill, now);
            }
            Step::Acknowledge { task } => {
                let Some((f, id, _)) = self.tasks.get(task).cloned() else { return };
                let (_, fid, sid) = self.frameworks[f].clone();
                let Some(agent_id) = self
                    .h
                    .master
                    .frameworks
                    .get(&fid)
                    .and_then(|fw| fw.tasks.get(&id))
                    .map(|t| t.info.agent_id.clone())
                else {
                    return;
                };
                let ack = Call::Acknowledge { agent_id, task_id: id, uuid: vec![task as u8; 16] };
                let _ = self.h.master.call(&fid, &sid, ack, now);
            }
            Step::LoseAgent { agent, for_good } => {
                let Some((ac, _)) = self.agents.get(agent).cloned() else { return };
                self.h.master.agent_disconnected(ac);
                for _ in 0..if for_good { 5 } else { 0 } {
                    self.h.advance(Duration::from_secs(15));
                }
            }
            Step::Disconnect { framework } => {
                let Some((fc, _, _)) = self.frameworks.get(framework).cloned() else { return };
                self.h.master.framework_disconnected(fc, now);
            }
            Step::Teardown { framework } => {
                let Some((_, fid, sid)) = self.frameworks.get(framework).cloned() else { return };
                let _ = self.h.master.call(&fid, &sid, Call::Teardown, now);
            }
            Step::Wait { secs } => {
                self.h.advance(Duration::from_secs(secs));
            }
            Step::Snapshot => {
                self.settle();
                let seq = self.h.master.operator_seq();
                self.snapshots.push((Folded::of(&self.h.master.cluster_state()), seq));
            }
        }
        self.settle();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn snapshot_plus_later_events_is_the_current_state(steps in proptest::collection::vec(step(), 1..40)) {
        let mut w = World {
            h: Harness::new(),
            agents: vec![],
            frameworks: vec![],
            tasks: vec![],
            next_task: 0,
            snapshots: vec![],
            events: vec![],
            offers: BTreeMap::new(),
            launched: 0,
        };
        w.run(Step::Snapshot);
        for s in steps {
            w.run(s);
        }
        // Every event number is used once, in order.
        let seqs: Vec<u64> = w.events.iter().map(|(s, _)| *s).collect();
        prop_assert_eq!(seqs, (1..=w.h.master.operator_seq()).collect::<Vec<_>>());
        let now = Folded::of(&w.h.master.cluster_state());
        for (snapshot, seq) in std::mem::take(&mut w.snapshots) {
            let mut folded = snapshot;
            for (_, e) in w.events.iter().filter(|(s, _)| *s > seq) {
                folded.apply(e);
            }
            prop_assert_eq!(&folded, &now, "snapshot taken after event {}", seq);
        }
    }
}
