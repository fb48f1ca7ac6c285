//! `GET /monitor/statistics` (also `/monitor/statistics.json`): per running task, its container's usage from the
//! cgroups in Mesos's shape — `executor_id`, `executor_name`, `framework_id`, `source`, `statistics` with
//! `cpus_user_time_secs`, `cpus_system_time_secs`, `cpus_limit`, `mem_rss_bytes`, `mem_limit_bytes`, `timestamp`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::containerizer::{Containerizer, Usage};
use crate::core::AgentCore;

type Source = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Value> + Send>> + Send + Sync>;

/// The statistics routes, reading the running containers from `core` and their usage from `containerizer`.
pub fn router<C: Containerizer>(core: Arc<Mutex<AgentCore>>, containerizer: Arc<C>) -> Router {
    let source: Source = Arc::new(move || {
        let (core, containerizer) = (core.clone(), containerizer.clone());
        Box::pin(async move {
            let running = core.lock().unwrap_or_else(|p| p.into_inner()).running_containers();
            let mut out = Vec::new();
            for (framework_id, task_id, container_id) in running {
                let Ok(usage) = containerizer.usage(&container_id).await else { continue };
                out.push(entry(&framework_id, &task_id, &usage, unix_now()));
            }
            Value::Array(out)
        })
    });
    Router::new()
        .route("/monitor/statistics", get(statistics))
        .route("/monitor/statistics.json", get(statistics))
        .with_state(source)
}

async fn statistics(State(source): State<Source>) -> Json<Value> {
    Json(source().await)
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default()
}

/// One task's entry.
pub fn entry(framework_id: &str, task_id: &str, u: &Usage, timestamp: f64) -> Value {
    let mut statistics = json!({
        "timestamp": timestamp,
        "cpus_user_time_secs": u.cpus_user_time_secs,
        "cpus_system_time_secs": u.cpus_system_time_secs,
        "mem_rss_bytes": u.mem_rss_bytes,
    });
    if let Some(c) = u.cpus_limit {
        statistics["cpus_limit"] = json!(c);
    }
    if let Some(m) = u.mem_limit_bytes {
        statistics["mem_limit_bytes"] = json!(m);
    }
    json!({
        "executor_id": task_id,
        "executor_name": format!("Command Executor (Task: {task_id})"),
        "framework_id": framework_id,
        "source": task_id,
        "statistics": statistics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_have_the_mesos_shape() {
        let u = Usage {
            cpus_user_time_secs: 1.5,
            cpus_system_time_secs: 0.25,
            mem_rss_bytes: 4096,
            cpus_limit: Some(0.5),
            mem_limit_bytes: Some(1 << 26),
        };
        let e = entry("f1", "t1", &u, 100.0);
        assert_eq!(e["executor_id"], "t1");
        assert_eq!(e["framework_id"], "f1");
        assert_eq!(e["statistics"]["cpus_limit"], 0.5);
        assert_eq!(e["statistics"]["mem_limit_bytes"], 1u64 << 26);
        assert_eq!(e["statistics"]["cpus_user_time_secs"], 1.5);
        assert_eq!(e["statistics"]["timestamp"], 100.0);
    }
}
