//! The [`Scheduler`] trait: what a framework implements to react to the master's events.

use agora_proto::model::{MasterInfo, Offer, TaskStatus};

use crate::driver::SchedulerDriver;

/// A framework's scheduler. The driver calls these methods one at a time, in the order the master's events
/// arrive, from the task that runs [`crate::Driver::run`].
///
/// Callbacks are synchronous and must not block: to act, call the [`SchedulerDriver`] handle, whose methods only
/// queue a call that the driver sends in order right after the callback returns. The handle is cheap to clone, so
/// a callback may also hand it to a spawned task (for example to kill a task after a delay).
pub trait Scheduler: Send + 'static {
    /// The master accepted the subscription; called again, with the same `framework_id`, after every
    /// resubscription that follows [`Scheduler::disconnected`]. Offers made before a disconnection are void.
    fn subscribed(&mut self, driver: &SchedulerDriver, framework_id: &str, master: &MasterInfo) {
        let _ = (driver, framework_id, master);
    }

    /// New offers. Every offer should be answered, by [`SchedulerDriver::accept`] / [`SchedulerDriver::launch`]
    /// or [`SchedulerDriver::decline`]; unanswered offers hold their resources until the master rescinds them.
    /// The default declines every offer with the default filter.
    fn offers(&mut self, driver: &SchedulerDriver, offers: Vec<Offer>) {
        for offer in offers {
            driver.decline(&offer.id, None);
        }
    }

    /// An offer is no longer valid (its agent was lost, or the master took it back).
    fn rescinded(&mut self, driver: &SchedulerDriver, offer_id: &str) {
        let _ = (driver, offer_id);
    }

    /// A task's status changed. Unless [`crate::DriverOptions::explicit_acknowledgements`] is set, the driver
    /// acknowledges the update (when it carries a uuid) right after this returns.
    fn update(&mut self, driver: &SchedulerDriver, status: &TaskStatus);

    /// An agent was lost; its tasks' updates (TASK_LOST or TASK_UNREACHABLE) arrive separately.
    fn failure(&mut self, driver: &SchedulerDriver, agent_id: &str) {
        let _ = (driver, agent_id);
    }

    /// A fatal error: the master refused the subscription, tore the framework down, or another scheduler failed
    /// over to this framework id. The driver returns after this callback.
    fn error(&mut self, driver: &SchedulerDriver, message: &str) {
        let _ = driver;
        tracing::error!(message, "framework error");
    }

    /// The event stream broke or went silent; the driver is resubscribing with the same framework id.
    fn disconnected(&mut self, driver: &SchedulerDriver) {
        let _ = driver;
    }

    /// The master rejected (or did not answer) a call that a callback queued. `call` names it (`ACCEPT`,
    /// `KILL`, ...). The default only logs: most failures mean a disconnection the driver is already handling.
    fn call_failed(&mut self, driver: &SchedulerDriver, call: &str, message: &str) {
        let _ = driver;
        tracing::warn!(call, message, "call failed");
    }
}
