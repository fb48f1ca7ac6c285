//! `agora state`, `agora agents`, `agora frameworks`, `agora tasks` and `agora task log`: read-only looks at a
//! cluster through the master's HTTP endpoints (`/master/summary`, `/master/state`, `/master/agents`,
//! `/master/frameworks`, `/master/tasks`, and the sandbox proxy `/master/tasks/ID/sandbox` and
//! `/master/agents/ID/files/read`). Tables by default, the endpoints' JSON with `--json`.
//!
//! The table layout is pure ([`Table`] and the `*_table` functions) and unit-tested; the rest is HTTP.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::Value;

/// The default master address, as Mesos's CLI defaults to the local master.
pub const DEFAULT_MASTER: &str = "127.0.0.1:5050";
/// How long one request to the master may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How often `task log --follow` asks for more output.
const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);
/// Bytes per read of a sandbox file.
const READ_CHUNK: usize = 256 * 1024;
/// Tasks per request when listing.
const PAGE: usize = 500;

/// What every look at the cluster takes.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// The master, as HOST:PORT or http://HOST:PORT, or zk://HOST:PORT/PATH (the leader is looked up).
    #[arg(long, default_value = DEFAULT_MASTER)]
    pub master: String,
    /// Print the master's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct TasksArgs {
    #[command(flatten)]
    pub common: Common,
    /// Include completed tasks (finished, failed, killed, ...).
    #[arg(long)]
    pub all: bool,
    /// Only the tasks of this framework.
    #[arg(long, value_name = "ID")]
    pub framework: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum TaskCommand {
    /// Print a task's stdout (or stderr) from its sandbox, through the master.
    Log(LogArgs),
}

#[derive(Args, Debug)]
pub struct LogArgs {
    pub task_id: String,
    /// The master, as HOST:PORT or http://HOST:PORT, or zk://HOST:PORT/PATH (the leader is looked up).
    #[arg(long, default_value = DEFAULT_MASTER)]
    pub master: String,
    /// Print stderr instead of stdout.
    #[arg(long)]
    pub stderr: bool,
    /// Keep printing new output until the task ends (or Ctrl-C).
    #[arg(long)]
    pub follow: bool,
    /// The task's framework, when task ids repeat across frameworks.
    #[arg(long, value_name = "ID")]
    pub framework: Option<String>,
}

/// A table of left-aligned text columns, two spaces apart; the last column is not padded.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table { rows: vec![header.iter().map(|s| s.to_string()).collect()] }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..cols)
            .map(|c| self.rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for r in &self.rows {
            let mut line = String::new();
            for (c, cell) in r.iter().enumerate() {
                if c + 1 < r.len() {
                    line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
                } else {
                    line.push_str(cell);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A number as Mesos's tools print resources: integers without decimals, others with at most two.
fn num(v: &Value) -> String {
    let f = v.as_f64().unwrap_or(0.0);
    if f.fract() == 0.0 { format!("{f:.0}") } else { format!("{:.2}", f).trim_end_matches('0').to_string() }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn used_of(row: &Value, name: &str) -> String {
    format!("{}/{}", num(&row["used"][name]), num(&row["resources"][name]))
}

/// `agora agents` from `/master/agents`.
pub fn agents_table(v: &Value) -> String {
    let mut t = Table::new(&["ID", "HOSTNAME", "ADDRESS", "STATE", "CPUS", "MEM", "DISK", "TASKS"]);
    for a in v["agents"].as_array().into_iter().flatten() {
        t.row(vec![
            text(&a["id"]),
            text(&a["hostname"]),
            text(&a["address"]),
            text(&a["state"]),
            used_of(a, "cpus"),
            used_of(a, "mem"),
            used_of(a, "disk"),
            text(&a["tasks"]),
        ]);
    }
    t.render()
}

/// `agora frameworks` from `/master/frameworks`.
pub fn frameworks_table(v: &Value) -> String {
    let mut t = Table::new(&["ID", "NAME", "ROLE", "PRINCIPAL", "STATE", "TASKS", "CPUS", "MEM"]);
    for f in v["frameworks"].as_array().into_iter().flatten() {
        t.row(vec![
            text(&f["id"]),
            text(&f["name"]),
            text(&f["role"]),
            text(&f["principal"]),
            text(&f["state"]),
            text(&f["active_tasks"]),
            num(&f["used"]["cpus"]),
            num(&f["used"]["mem"]),
        ]);
    }
    t.render()
}

/// `agora tasks` from the rows of `/master/tasks`.
pub fn tasks_table(tasks: &[Value]) -> String {
    let mut t = Table::new(&["ID", "NAME", "STATE", "FRAMEWORK", "AGENT", "MESSAGE"]);
    for task in tasks {
        let message = [text(&task["reason"]), text(&task["message"])]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(": ");
        let agent = match text(&task["agent_hostname"]) {
            h if h.is_empty() => text(&task["agent_id"]),
            h => h,
        };
        t.row(vec![
            text(&task["id"]),
            text(&task["name"]),
            text(&task["state"]),
            text(&task["framework_id"]),
            agent,
            message,
        ]);
    }
    t.render()
}

/// `agora state` from `/master/summary`.
pub fn summary_text(s: &Value) -> String {
    let mut out = format!(
        "leader   {} ({})\nversion  {}\nuptime   {}s\nagents   {} active, {} disconnected, {} unreachable\n\
         frameworks {} active, {} inactive, {} completed\ntasks    {} active, {} completed\n\n",
        text(&s["leader"]),
        text(&s["leader_address"]),
        text(&s["version"]),
        s["uptime_secs"].as_f64().unwrap_or(0.0).floor(),
        s["agents"]["active"],
        s["agents"]["disconnected"],
        s["agents"]["unreachable"],
        s["frameworks"]["active"],
        s["frameworks"]["inactive"],
        s["frameworks"]["completed"],
        s["tasks"]["active"],
        s["tasks"]["completed"],
    );
    let mut t = Table::new(&["RESOURCE", "TOTAL", "USED", "OFFERED", "IDLE"]);
    for name in ["cpus", "mem", "disk"] {
        let r = &s["resources"][name];
        t.row(vec![name.into(), num(&r["total"]), num(&r["used"]), num(&r["offered"]), num(&r["idle"])]);
    }
    out.push_str(&t.render());
    let states: Vec<String> = s["tasks"]["by_state"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    if !states.is_empty() {
        out.push_str(&format!("\ntasks by state: {}\n", states.join(" ")));
    }
    out
}

/// Talks to one master.
struct Master {
    base: String,
    http: reqwest::Client,
}

impl Master {
    /// `HOST:PORT`, `http://HOST:PORT`, or `zk://HOST:PORT/PATH` (the leader is looked up in ZooKeeper once).
    async fn new(address: &str) -> Result<Master> {
        let address = if address.trim().starts_with("zk://") {
            let spec = agora_detector::MasterSpec::parse(address).with_context(|| format!("bad --master {address}"))?;
            agora_detector::resolve(&spec, REQUEST_TIMEOUT).await.map_err(anyhow::Error::msg)?
        } else {
            address.to_string()
        };
        let address = address.as_str();
        let base = agora_framework_sdk::master_url(address).with_context(|| format!("bad --master {address}"))?;
        let http =
            reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().context("cannot build an HTTP client")?;
        Ok(Master { base, http })
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .get(&url)
            .query(query)
            .send()
            .await
            .with_context(|| format!("cannot reach the master at {}: is it running?", self.base))?;
        let status = response.status();
        let body: Value = response.json().await.with_context(|| format!("the master sent bad JSON for {url}"))?;
        if !status.is_success() {
            bail!("{url}: {status}: {}", text(&body["error"]));
        }
        Ok(body)
    }

    /// Every task matching `query`, page by page.
    async fn all_tasks(&self, query: &[(&str, String)]) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        loop {
            let mut q = query.to_vec();
            q.push(("offset", out.len().to_string()));
            q.push(("limit", PAGE.to_string()));
            let page = self.get("/master/tasks", &q).await?;
            let tasks = page["tasks"].as_array().cloned().unwrap_or_default();
            let total = page["total"].as_u64().unwrap_or(0) as usize;
            let got = tasks.len();
            out.extend(tasks);
            if got == 0 || out.len() >= total {
                return Ok(out);
            }
        }
    }
}

fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub async fn state(args: Common) -> Result<()> {
    let m = Master::new(&args.master).await?;
    if args.json {
        return print_json(&m.get("/master/state", &[]).await?);
    }
    print!("{}", summary_text(&m.get("/master/summary", &[]).await?));
    Ok(())
}

pub async fn agents(args: Common) -> Result<()> {
    let m = Master::new(&args.master).await?;
    let v = m.get("/master/agents", &[]).await?;
    if args.json {
        return print_json(&v);
    }
    print!("{}", agents_table(&v));
    Ok(())
}

pub async fn frameworks(args: Common) -> Result<()> {
    let m = Master::new(&args.master).await?;
    let v = m.get("/master/frameworks", &[]).await?;
    if args.json {
        return print_json(&v);
    }
    print!("{}", frameworks_table(&v));
    Ok(())
}

pub async fn tasks(args: TasksArgs) -> Result<()> {
    let m = Master::new(&args.common.master).await?;
    let mut q: Vec<(&str, String)> = vec![("state", if args.all { String::new() } else { "active".into() })];
    if let Some(f) = &args.framework {
        q.push(("framework_id", f.clone()));
    }
    let tasks = m.all_tasks(&q).await?;
    if args.common.json {
        return print_json(&Value::Array(tasks));
    }
    print!("{}", tasks_table(&tasks));
    Ok(())
}

pub async fn task(cmd: TaskCommand) -> Result<()> {
    match cmd {
        TaskCommand::Log(args) => log(args).await,
    }
}

async fn log(args: LogArgs) -> Result<()> {
    let m = Master::new(&args.master).await?;
    let fw: Vec<(&str, String)> = args.framework.iter().map(|f| ("framework_id", f.clone())).collect();
    let id = &args.task_id;
    let sandbox = m
        .get(&format!("/master/tasks/{id}/sandbox"), &fw)
        .await
        .with_context(|| format!("cannot find the sandbox of task '{id}'"))?;
    let agent = text(&sandbox["agent_id"]);
    let file = if args.stderr { "stderr" } else { "stdout" };
    let path = format!("{}/{file}", text(&sandbox["directory"]));
    let read_path = format!("/master/agents/{agent}/files/read");
    let mut offset: u64 = 0;
    let mut stdout = std::io::stdout();
    loop {
        // Read everything there is now.
        loop {
            let q = [("path", path.clone()), ("offset", offset.to_string()), ("length", READ_CHUNK.to_string())];
            let chunk =
                m.get(&read_path, &q).await.with_context(|| format!("cannot read {path} on agent '{agent}'"))?;
            let data = chunk["data"].as_str().unwrap_or_default();
            if data.is_empty() {
                break;
            }
            stdout.write_all(data.as_bytes())?;
            offset = chunk["offset"].as_u64().unwrap_or(offset) + data.len() as u64;
        }
        stdout.flush()?;
        if !args.follow {
            return Ok(());
        }
        let t = m.get(&format!("/master/tasks/{id}"), &fw).await?;
        let state = text(&t["state"]);
        let terminal = matches!(
            state.as_str(),
            "TASK_FINISHED" | "TASK_FAILED" | "TASK_KILLED" | "TASK_ERROR" | "TASK_LOST" | "TASK_DROPPED" | "TASK_GONE"
        );
        if terminal {
            // One last read for output written just before the end.
            let q = [("path", path.clone()), ("offset", offset.to_string()), ("length", READ_CHUNK.to_string())];
            let chunk = m.get(&read_path, &q).await?;
            stdout.write_all(chunk["data"].as_str().unwrap_or_default().as_bytes())?;
            stdout.flush()?;
            eprintln!("agora: task '{id}' is {state}");
            return Ok(());
        }
        tokio::time::sleep(FOLLOW_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_columns_and_do_not_pad_the_last() {
        let mut t = Table::new(&["ID", "STATE"]);
        t.row(vec!["a-long-id".into(), "TASK_RUNNING".into()]);
        t.row(vec!["b".into(), "".into()]);
        assert_eq!(t.render(), "ID         STATE\na-long-id  TASK_RUNNING\nb\n");
    }

    #[test]
    fn task_rows_show_reason_and_message_and_prefer_hostnames() {
        let tasks = [json!({
            "id": "t1", "name": "web", "state": "TASK_FAILED", "framework_id": "f-0000",
            "agent_id": "m-S0", "agent_hostname": "node1",
            "reason": "REASON_COMMAND_EXECUTOR_FAILED", "message": "Command exited with status 3",
        })];
        let out = tasks_table(&tasks);
        let line = out.lines().nth(1).unwrap();
        assert!(line.starts_with("t1  web   TASK_FAILED  f-0000     node1"), "{out}");
        assert!(line.ends_with("REASON_COMMAND_EXECUTOR_FAILED: Command exited with status 3"), "{out}");
    }

    #[test]
    fn numbers_print_like_resources() {
        assert_eq!(num(&json!(4.0)), "4");
        assert_eq!(num(&json!(0.1)), "0.1");
        assert_eq!(num(&json!(0.25)), "0.25");
        let agents = json!({"agents": [{"id": "m-S0", "hostname": "h", "address": "127.0.0.1:5051",
            "state": "active", "tasks": 2, "resources": {"cpus": 4.0, "mem": 1024.0, "disk": 0.0},
            "used": {"cpus": 0.2, "mem": 64.0, "disk": 0.0}}]});
        assert!(agents_table(&agents).contains("m-S0  h         127.0.0.1:5051  active  0.2/4  64/1024  0/0   2"));
    }
}
