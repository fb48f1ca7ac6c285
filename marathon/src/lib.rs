//! `agora-marathon`: Marathon for Agora — a framework on the SDK that keeps long-running apps running, with
//! Marathon's REST API.
//!
//! Pure core, thin shell:
//! - [`app`], [`pathid`], [`time`], [`constraints`]: the app definition model and its validation; [`health`]: health
//!   checks (definition, translation into the Mesos check a task carries, results); [`readiness`]: readiness
//!   checks (definition, Marathon-side probes of new instances during deployments).
//! - [`planner`]: the offer planner, a pure function from app specs + observed instances + offers + now to
//!   launches, kills and declines with reasons; [`deploy`]: the deployment plan and rolling-upgrade arithmetic.
//! - [`core`]: the state machine the API and the scheduler drive (apps, versions, instances, deployments, launch
//!   queue, backoff), with time passed in.
//! - [`groups`]: the group tree behind `/v2/groups` (group bodies, dependencies, group versions).
//! - [`store`]: the `StateStore` seam, its file implementation and its ZooKeeper one (`--zk`).
//! - [`scheduler`], [`api`], [`events`], [`server`]: the shell — the SDK scheduler, the axum REST API, the SSE
//!   event bus, and the process that ties them together; [`proxy`]: the HTTP front of a standby with `--zk`;
//!   [`ui`]: the web UI at `/ui/`, one embedded page that uses only the `/v2` API.

pub mod api;
pub mod app;
pub mod constraints;
pub mod core;
pub mod deploy;
pub mod events;
pub mod groups;
pub mod health;
pub mod pathid;
pub mod planner;
pub mod proxy;
pub mod readiness;
pub mod regex;
pub mod scheduler;
pub mod server;
pub mod store;
pub mod time;
pub mod ui;
