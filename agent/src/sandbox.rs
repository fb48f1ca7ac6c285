//! Where a task runs and what it sees: the Mesos sandbox layout and the task's environment.

use std::path::{Path, PathBuf};

use agora_proto::model::TaskInfo;

/// `PATH` for tasks when the agent itself has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `<work_dir>/slaves/<agent_id>/frameworks/<framework_id>/executors/<task_id>/runs/<container_id>`.
pub fn sandbox_dir(work_dir: &Path, agent_id: &str, framework_id: &str, task_id: &str, container_id: &str) -> PathBuf {
    work_dir
        .join("slaves")
        .join(agent_id)
        .join("frameworks")
        .join(framework_id)
        .join("executors")
        .join(task_id)
        .join("runs")
        .join(container_id)
}

/// True when `id` can be one directory name: not empty, not `.` or `..`, no `/` and no NUL.
pub fn is_path_component(id: &str) -> bool {
    !id.is_empty() && id != "." && id != ".." && !id.contains('/') && !id.contains('\0')
}

/// What the agent knows that goes into a task's environment.
#[derive(Debug, Clone, Copy)]
pub struct EnvContext<'a> {
    pub framework_id: &'a str,
    pub sandbox: &'a Path,
    pub hostname: &'a str,
    /// The agent's own `PATH`.
    pub agent_path: Option<&'a str>,
}

/// The task's complete environment: the agent's `PATH`, then the task's own variables (which may replace `PATH`),
/// then the agent-defined ones, which win: `AGORA_SANDBOX`, `MESOS_SANDBOX`, `AGORA_TASK_ID`, `MESOS_TASK_ID`,
/// `AGORA_FRAMEWORK_ID`, `HOST`, and for the task's `ports` in order `PORT0`, `PORT1`, …, `PORTS` and `PORT`.
pub fn task_environment(task: &TaskInfo, ctx: EnvContext<'_>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: String| match env.iter_mut().find(|(name, _)| name == k) {
        Some(slot) => slot.1 = v,
        None => env.push((k.to_string(), v)),
    };
    set("PATH", ctx.agent_path.unwrap_or(DEFAULT_PATH).to_string());
    for (k, v) in task.command.iter().flat_map(|c| c.environment.iter()) {
        set(k, v.clone());
    }
    let sandbox = ctx.sandbox.display().to_string();
    set("AGORA_SANDBOX", sandbox.clone());
    set("MESOS_SANDBOX", sandbox);
    set("AGORA_TASK_ID", task.task_id.clone());
    set("MESOS_TASK_ID", task.task_id.clone());
    set("AGORA_FRAMEWORK_ID", ctx.framework_id.to_string());
    set("HOST", ctx.hostname.to_string());
    let ports: Vec<String> = task.resources.ranges("ports").values().map(|p| p.to_string()).collect();
    for (i, port) in ports.iter().enumerate() {
        set(&format!("PORT{i}"), port.clone());
    }
    if let Some(first) = ports.first() {
        set("PORT", first.clone());
        set("PORTS", ports.join(","));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_proto::model::{CommandInfo, Resources};

    fn task(resources: &str, env: &[(&str, &str)]) -> TaskInfo {
        let mut command = CommandInfo::shell("true");
        command.environment = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        TaskInfo {
            name: "web".into(),
            task_id: "web.1".into(),
            agent_id: "a-S0".into(),
            resources: Resources::parse(resources).unwrap(),
            command: Some(command),
            container: None,
            health_check: None,
            kill_grace_period: None,
            labels: vec![],
            discovery: None,
            data: vec![],
        }
    }

    fn get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn layout_is_mesos_layout() {
        let p = sandbox_dir(Path::new("/w"), "m-S1", "m-0001", "web.1", "c");
        assert_eq!(p, Path::new("/w/slaves/m-S1/frameworks/m-0001/executors/web.1/runs/c"));
        assert!(is_path_component("web.1"));
        for bad in ["", ".", "..", "a/b", "a\0"] {
            assert!(!is_path_component(bad), "{bad:?}");
        }
    }

    #[test]
    fn environment_has_sandbox_ids_host_and_ports_in_order() {
        let t = task("cpus:0.1;ports:[31005-31006,31001-31001]", &[("FOO", "bar"), ("HOST", "spoofed")]);
        let ctx = EnvContext {
            framework_id: "m-0001",
            sandbox: Path::new("/w/sb"),
            hostname: "node1",
            agent_path: Some("/bin"),
        };
        let env = task_environment(&t, ctx);
        assert_eq!(get(&env, "PATH"), Some("/bin"));
        assert_eq!(get(&env, "FOO"), Some("bar"));
        assert_eq!(get(&env, "HOST"), Some("node1"));
        assert_eq!(get(&env, "AGORA_SANDBOX"), Some("/w/sb"));
        assert_eq!(get(&env, "MESOS_SANDBOX"), Some("/w/sb"));
        assert_eq!(get(&env, "AGORA_TASK_ID"), Some("web.1"));
        assert_eq!(get(&env, "MESOS_TASK_ID"), Some("web.1"));
        assert_eq!(get(&env, "AGORA_FRAMEWORK_ID"), Some("m-0001"));
        assert_eq!(get(&env, "PORT0"), Some("31001"));
        assert_eq!(get(&env, "PORT1"), Some("31005"));
        assert_eq!(get(&env, "PORT2"), Some("31006"));
        assert_eq!(get(&env, "PORT"), Some("31001"));
        assert_eq!(get(&env, "PORTS"), Some("31001,31005,31006"));
        assert_eq!(env.iter().filter(|(k, _)| k == "HOST").count(), 1);
    }

    #[test]
    fn no_ports_no_port_variables_and_task_may_set_path() {
        let t = task("cpus:0.1", &[("PATH", "/opt/bin")]);
        let ctx = EnvContext { framework_id: "f", sandbox: Path::new("/s"), hostname: "h", agent_path: None };
        let env = task_environment(&t, ctx);
        assert_eq!(get(&env, "PATH"), Some("/opt/bin"));
        assert!(env.iter().all(|(k, _)| !k.starts_with("PORT")));
    }
}
