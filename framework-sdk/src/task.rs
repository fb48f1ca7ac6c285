//! Building [`TaskInfo`]s without spelling out every optional field.

use agora_proto::model::{CommandInfo, Resources, TaskInfo};

/// Constructors for [`TaskInfo`]; bring the trait into scope to write `TaskInfo::command(...)`.
pub trait TaskInfoExt: Sized {
    /// A task that runs `cmd` with `/bin/sh -c` on `agent_id` with `resources`; every other field is empty.
    fn command(
        task_id: impl Into<String>,
        name: impl Into<String>,
        agent_id: impl Into<String>,
        resources: Resources,
        cmd: impl Into<String>,
    ) -> Self;
}

impl TaskInfoExt for TaskInfo {
    fn command(
        task_id: impl Into<String>,
        name: impl Into<String>,
        agent_id: impl Into<String>,
        resources: Resources,
        cmd: impl Into<String>,
    ) -> TaskInfo {
        TaskBuilder::new(task_id, name).agent(agent_id).resources(resources).shell(cmd).build()
    }
}

/// A step-by-step [`TaskInfo`] builder for tasks with environment variables, labels or a kill grace period.
///
/// ```
/// use agora_framework_sdk::TaskBuilder;
///
/// let task = TaskBuilder::new("web-0", "web")
///     .agent("m-S0")
///     .resources("cpus:0.1;mem:32".parse().unwrap())
///     .shell("python3 -m http.server $PORT")
///     .env("PORT", "31000")
///     .label("app", "web")
///     .kill_grace_period(5.0)
///     .build();
/// assert_eq!(task.task_id, "web-0");
/// assert_eq!(task.command.unwrap().environment, vec![("PORT".to_string(), "31000".to_string())]);
/// ```
#[derive(Clone, Debug)]
pub struct TaskBuilder {
    task: TaskInfo,
}

impl TaskBuilder {
    pub fn new(task_id: impl Into<String>, name: impl Into<String>) -> TaskBuilder {
        TaskBuilder {
            task: TaskInfo {
                name: name.into(),
                task_id: task_id.into(),
                agent_id: String::new(),
                resources: Resources::new(),
                command: None,
                container: None,
                health_check: None,
                kill_grace_period: None,
                labels: vec![],
                discovery: None,
                data: vec![],
            },
        }
    }

    pub fn agent(mut self, agent_id: impl Into<String>) -> TaskBuilder {
        self.task.agent_id = agent_id.into();
        self
    }

    pub fn resources(mut self, resources: Resources) -> TaskBuilder {
        self.task.resources = resources;
        self
    }

    /// Runs `cmd` with `/bin/sh -c`.
    pub fn shell(mut self, cmd: impl Into<String>) -> TaskBuilder {
        let environment = self.take_environment();
        self.task.command = Some(CommandInfo { environment, ..CommandInfo::shell(cmd) });
        self
    }

    /// Runs `program` directly with `args` as its argv (argv\[0\] included, as in Mesos).
    pub fn exec(
        mut self,
        program: impl Into<String>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> TaskBuilder {
        let environment = self.take_environment();
        self.task.command = Some(CommandInfo {
            shell: false,
            value: program.into(),
            arguments: args.into_iter().map(Into::into).collect(),
            environment,
            uris: vec![],
            user: None,
        });
        self
    }

    /// Adds an environment variable to the command (creating an empty shell command if none is set yet).
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> TaskBuilder {
        self.task.command.get_or_insert_with(|| CommandInfo::shell("")).environment.push((name.into(), value.into()));
        self
    }

    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> TaskBuilder {
        self.task.labels.push((key.into(), value.into()));
        self
    }

    /// Seconds between SIGTERM and SIGKILL when the task is killed.
    pub fn kill_grace_period(mut self, seconds: f64) -> TaskBuilder {
        self.task.kill_grace_period = Some(seconds);
        self
    }

    pub fn data(mut self, data: Vec<u8>) -> TaskBuilder {
        self.task.data = data;
        self
    }

    pub fn build(self) -> TaskInfo {
        self.task
    }

    fn take_environment(&mut self) -> Vec<(String, String)> {
        self.task.command.take().map(|c| c.environment).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_task_has_shell_command_and_resources() {
        let r: Resources = "cpus:0.1;mem:32".parse().unwrap();
        let t = TaskInfo::command("t-0", "t", "m-S1", r.clone(), "echo hi");
        assert_eq!(t.task_id, "t-0");
        assert_eq!(t.name, "t");
        assert_eq!(t.agent_id, "m-S1");
        assert_eq!(t.resources, r);
        assert_eq!(t.command, Some(CommandInfo::shell("echo hi")));
        assert!(t.container.is_none() && t.health_check.is_none() && t.labels.is_empty());
    }

    #[test]
    fn env_before_or_after_the_command_is_kept() {
        let t = TaskBuilder::new("a", "a").env("X", "1").exec("/bin/echo", ["echo", "hi"]).env("Y", "2").build();
        let c = t.command.unwrap();
        assert!(!c.shell);
        assert_eq!(c.value, "/bin/echo");
        assert_eq!(c.arguments, vec!["echo", "hi"]);
        assert_eq!(c.environment, vec![("X".into(), "1".into()), ("Y".into(), "2".into())]);
    }
}
