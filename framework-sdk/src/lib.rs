//! `agora-framework-sdk`: write Agora frameworks in Rust.
//!
//! Agora is a two-level scheduler: the master (`agora-master`) offers the resources of its agents (`agora-agent`)
//! to frameworks, and each framework decides which tasks to launch on them. This crate is the framework side of
//! that conversation, the counterpart of the master's `Scheduler` gRPC service (`agora.v1`); the `agora execute`
//! command (`agora-cli`) and Marathon-style long-running schedulers are built on it.
//!
//! # Pieces
//! - [`Scheduler`]: the trait a framework implements — synchronous callbacks for SUBSCRIBED, OFFERS, RESCIND,
//!   UPDATE, FAILURE and ERROR events, and for disconnections.
//! - [`SchedulerDriver`]: the cheap, cloneable handle callbacks use to accept or decline offers, kill, revive,
//!   suppress, acknowledge, reconcile and tear down. Its methods queue calls; the driver sends them in order.
//! - [`run`] / [`Driver`]: connects to the master, subscribes, dispatches events, acknowledges updates
//!   (unless [`DriverOptions::explicit_acknowledgements`]), and resubscribes with the same framework id, with
//!   capped exponential backoff with jitter (never at once, whatever the failure), when the stream breaks or no event (heartbeats included) arrives for
//!   [`DriverOptions::missed_heartbeats`] heartbeat intervals.
//! - [`OfferPacker`], [`fit`] and [`TaskRequest`]: carve tasks' resources out of offers with exact fixed-point
//!   arithmetic, including picking concrete ports.
//! - [`TaskInfoExt`] (`TaskInfo::command(...)`) and [`TaskBuilder`]: build task descriptions.
//!
//! The domain types ([`Offer`], [`TaskInfo`], [`TaskStatus`], [`Resources`], ...) are `agora_proto::model`'s,
//! re-exported here.
//!
//! # Example
//!
//! A framework that runs `echo hello` three times, packing as many copies into each offer as fit, and stops once
//! all three are terminal:
//!
//! ```no_run
//! use agora_framework_sdk::{
//!     DriverOptions, FrameworkInfo, MasterInfo, Offer, OfferPacker, Scheduler, SchedulerDriver, TaskInfo,
//!     TaskInfoExt, TaskRequest, TaskStatus,
//! };
//!
//! struct Echo {
//!     request: TaskRequest,
//!     to_launch: usize,
//!     finished: usize,
//! }
//!
//! impl Scheduler for Echo {
//!     fn subscribed(&mut self, _driver: &SchedulerDriver, framework_id: &str, master: &MasterInfo) {
//!         println!("subscribed as {framework_id} to master {}", master.id);
//!     }
//!
//!     fn offers(&mut self, driver: &SchedulerDriver, offers: Vec<Offer>) {
//!         for offer in offers {
//!             let mut packer = OfferPacker::new(&offer);
//!             let mut tasks = Vec::new();
//!             while self.to_launch > 0 {
//!                 let Some(resources) = packer.take(&self.request) else { break };
//!                 self.to_launch -= 1;
//!                 let id = format!("echo-{}", self.to_launch);
//!                 tasks.push(TaskInfo::command(id, "echo", &offer.agent_id, resources, "echo hello"));
//!             }
//!             if tasks.is_empty() {
//!                 driver.decline(&offer.id, Some(60.0));
//!             } else {
//!                 driver.launch(&offer, tasks);
//!             }
//!         }
//!     }
//!
//!     fn update(&mut self, driver: &SchedulerDriver, status: &TaskStatus) {
//!         println!("{} {}", status.task_id, status.state);
//!         if status.state.is_terminal() {
//!             self.finished += 1;
//!             if self.finished == 3 {
//!                 driver.teardown();
//!             }
//!         }
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let request = TaskRequest::parse("cpus:0.1;mem:32").map_err(|e| format!("{e:?}"))?;
//!     let scheduler = Echo { request, to_launch: 3, finished: 0 };
//!     let framework = FrameworkInfo::new("echo");
//!     let done = agora_framework_sdk::run("127.0.0.1:5050", framework, scheduler, DriverOptions::default()).await?;
//!     println!("{} tasks finished", done.finished);
//!     Ok(())
//! }
//! ```

mod driver;
mod packing;
mod scheduler;
mod task;

pub use driver::{
    DEFAULT_BACKOFF_MAX, DEFAULT_BACKOFF_MIN, DEFAULT_CALL_TIMEOUT, DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_MISSED_HEARTBEATS, Driver, DriverError, DriverOptions, MAX_HEARTBEAT_INTERVAL, SchedulerDriver, master_url,
    run,
};
pub use packing::{OfferPacker, PORTS, TaskRequest, fit};
pub use scheduler::Scheduler;
pub use task::{TaskBuilder, TaskInfoExt};

pub use agora_proto::model::{
    CommandInfo, FrameworkInfo, MasterInfo, Offer, Reason, Resources, TaskInfo, TaskState, TaskStatus,
};
