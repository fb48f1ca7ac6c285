// Agora's status page. Plain JavaScript, no dependencies: it reads only the master's public JSON endpoints
// (/master/summary, /master/agents, /master/frameworks, /master/tasks, /master/tasks/ID, and the sandbox proxy
// /master/agents/ID/files/*) and polls them every POLL_MS. Task lists are paged on the server, so a poll costs
// one page of tasks however many the cluster holds.
"use strict";

const POLL_MS = 2000;
const LOG_POLL_MS = 1000;
const PAGE = 25;
const LOG_CHUNK = 65536;

const $ = (sel) => document.querySelector(sel);
const view = { active: { offset: 0 }, completed: { offset: 0 } };
let timer = null;
let logTimer = null;
let logState = null;

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
function num(v) {
  const n = Number(v || 0);
  return Number.isInteger(n) ? String(n) : n.toFixed(2);
}
function when(ts) {
  if (!ts) return "";
  return new Date(ts * 1000).toLocaleString();
}
function duration(secs) {
  secs = Math.floor(secs || 0);
  const d = Math.floor(secs / 86400), h = Math.floor((secs % 86400) / 3600), m = Math.floor((secs % 3600) / 60), s = secs % 60;
  return (d ? d + "d " : "") + (d || h ? h + "h " : "") + (d || h || m ? m + "m " : "") + s + "s";
}
function badge(state) {
  return `<span class="state ${esc(state)}">${esc(String(state).replace(/^TASK_/, ""))}</span>`;
}
async function getJSON(url) {
  const r = await fetch(url, { cache: "no-store" });
  if (!r.ok) {
    let msg = r.status + " " + r.statusText;
    try { msg = (await r.json()).error || msg; } catch (_) { /* not JSON */ }
    throw new Error(msg);
  }
  return r.json();
}
function setStatus(text, bad) {
  const el = $("#status");
  el.textContent = text;
  el.style.color = bad ? "#ff9b9b" : "";
}
function rows(tbody, html, cols, emptyText) {
  tbody.innerHTML = html.length ? html.join("") : `<tr class="empty"><td colspan="${cols}">${esc(emptyText)}</td></tr>`;
}
function taskLink(t) {
  return `#/task/${encodeURIComponent(t.framework_id)}/${encodeURIComponent(t.id)}`;
}

// ---- cluster view ----

function renderSummary(s) {
  $("#leader").textContent = s.leader;
  $("#version").textContent = s.version;
  $("#uptime").textContent = duration(s.uptime_secs);
  const a = s.agents;
  $("#agent-counts").textContent = `${a.active} active · ${a.disconnected} disconnected · ${a.unreachable} unreachable`;
  const f = s.frameworks;
  $("#framework-counts").textContent = `${f.active} active · ${f.inactive} inactive · ${f.completed} completed`;
  $("#task-counts").textContent = `${s.tasks.active} active · ${s.tasks.completed} completed`;
  const res = ["cpus", "mem", "disk"].map((name) => {
    const r = s.resources[name];
    const pu = r.total ? (100 * r.used) / r.total : 0, po = r.total ? (100 * r.offered) / r.total : 0;
    return `<tr data-resource="${name}"><td>${name}</td><td class="num">${num(r.total)}</td><td class="num used">${num(r.used)}</td>` +
      `<td class="num">${num(r.offered)}</td><td class="num">${num(r.idle)}</td>` +
      `<td><div class="bar" title="used ${pu.toFixed(0)}%, offered ${po.toFixed(0)}%"><div class="used" style="width:${pu}%"></div>` +
      `<div class="offered" style="width:${po}%"></div></div></td></tr>`;
  });
  rows($("#resources tbody"), res, 6, "");
  const chips = Object.entries(s.tasks.by_state).filter(([, n]) => n > 0)
    .map(([st, n]) => `<span class="state ${esc(st)}" data-state="${esc(st)}">${esc(st.replace(/^TASK_/, ""))}: ${n}</span>`);
  $("#states").innerHTML = chips.join("");
}

function renderAgents(list) {
  $("#agents-count").textContent = `(${list.length})`;
  const html = list.map((a) => {
    const attrs = Object.entries(a.attributes || {}).map(([k, v]) => `${esc(k)}:${esc(v)}`).join(", ");
    const cell = (n) => `${num(a.used[n])} / ${num(a.resources[n])}` + (a.offered[n] ? ` <span class="muted">(${num(a.offered[n])} offered)</span>` : "");
    return `<tr data-id="${esc(a.id)}"><td class="id">${esc(a.id)}</td><td><span class="hostname">${esc(a.hostname)}</span><div class="muted small">${esc(a.address)}</div></td>` +
      `<td class="agent-state">${badge(a.state)}</td><td class="num">${cell("cpus")}</td><td class="num">${cell("mem")}</td>` +
      `<td class="num">${cell("disk")}</td><td class="num">${a.tasks}</td><td>${attrs}</td><td>${when(a.registered_time)}</td></tr>`;
  });
  rows($("#agents tbody"), html, 9, "No agents registered.");
}

// A framework's name links to its own web UI (FrameworkInfo.webui_url, e.g. Marathon's), as Mesos's page does;
// only http(s) addresses become links.
function frameworkName(f) {
  const url = f.webui_url || "";
  if (!/^https?:\/\//i.test(url)) return esc(f.name);
  return `<a href="${esc(url)}" target="_blank" rel="noopener">${esc(f.name)}</a>`;
}

function renderFrameworks(list) {
  $("#frameworks-count").textContent = `(${list.length})`;
  const html = list.map((f) =>
    `<tr data-id="${esc(f.id)}"><td class="id">${esc(f.id)}</td><td class="fw-name">${frameworkName(f)}</td><td>${esc((f.roles || []).join(", ") || f.role)}</td>` +
    `<td>${esc(f.principal || "")}</td><td>${badge(f.state)}</td><td class="num">${num(f.used.cpus)}</td><td class="num">${num(f.used.mem)}</td>` +
    `<td class="num">${f.active_tasks}</td><td>${when(f.registered_time)}</td></tr>`);
  rows($("#frameworks tbody"), html, 9, "No frameworks.");
}

function renderTasks(sel, page, key) {
  const html = page.tasks.map((t) => {
    const msg = [t.reason, t.message].filter(Boolean).join(": ");
    return `<tr data-id="${esc(t.id)}" data-state="${esc(t.state)}"><td class="id"><a href="${taskLink(t)}">${esc(t.id)}</a></td><td>${esc(t.name)}</td>` +
      `<td class="task-state">${badge(t.state)}</td><td>${esc(t.framework_name || t.framework_id)}</td><td>${esc(t.agent_hostname || t.agent_id)}</td>` +
      `<td>${when(t.start_time)}</td><td class="small">${esc(msg)}</td></tr>`;
  });
  rows($(sel + " tbody"), html, 7, "No tasks.");
  const v = view[key];
  const from = page.total ? page.offset + 1 : 0, to = page.offset + page.tasks.length;
  const pager = $(sel + "-pager");
  pager.innerHTML = `<button data-dir="-1" ${page.offset <= 0 ? "disabled" : ""}>‹ Prev</button>` +
    `<span>${from}–${to} of ${page.total}</span><button data-dir="1" ${to >= page.total ? "disabled" : ""}>Next ›</button>`;
  pager.querySelectorAll("button").forEach((b) => {
    b.onclick = () => { v.offset = Math.max(0, v.offset + Number(b.dataset.dir) * PAGE); refresh(); };
  });
}

function taskURL(key) {
  const p = new URLSearchParams({ offset: view[key].offset, limit: PAGE });
  const search = $("#task-search").value.trim();
  if (search) p.set("search", search);
  const state = key === "active" ? $("#task-state").value : $("#completed-state").value;
  p.set("state", state || key);
  return "/master/tasks?" + p.toString();
}

async function refreshCluster() {
  const [summary, agents, frameworks, active, completed] = await Promise.all([
    getJSON("/master/summary"), getJSON("/master/agents"), getJSON("/master/frameworks"),
    getJSON(taskURL("active")), getJSON(taskURL("completed")),
  ]);
  renderSummary(summary);
  renderAgents(agents.agents);
  renderFrameworks(frameworks.frameworks);
  renderTasks("#tasks", active, "active");
  renderTasks("#completed", completed, "completed");
}

// ---- task view ----

async function refreshTask(fw, id) {
  const t = await getJSON(`/master/tasks/${encodeURIComponent(id)}?framework_id=${encodeURIComponent(fw)}`);
  $("#task-id").textContent = t.id;
  $("#task-state-badge").outerHTML = `<span id="task-state-badge" class="state ${esc(t.state)}">${esc(t.state)}</span>`;
  const d = [["Name", t.name], ["Framework", `${t.framework_name} (${t.framework_id})`], ["Agent", `${t.agent_hostname} (${t.agent_id})`],
    ["Command", t.command || ""], ["Resources", Object.entries(t.resources).map(([k, v]) => `${k}: ${num(v)}`).join(", ")],
    ["Started", when(t.start_time)], ["Last update", when(t.updated_time)], ["Reason / message", [t.reason, t.message].filter(Boolean).join(": ")]];
  $("#task-details").innerHTML = d.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join("");
  const h = t.statuses.map((s) => `<tr><td>${when(s.timestamp)}</td><td>${badge(s.state)}</td><td>${esc(s.source)}</td><td>${esc(s.reason || "")}</td><td>${esc(s.message)}</td></tr>`);
  rows($("#history tbody"), h, 5, "No status updates yet.");
  if (!logState || logState.task !== id || logState.fw !== fw) await openSandbox(fw, id);
  else await listFiles();
}

async function openSandbox(fw, id) {
  stopLog();
  logState = { fw, task: id, agent: null, dir: null, file: "stdout", offset: null };
  $("#log").textContent = "";
  $("#sandbox-error").hidden = true;
  try {
    const s = await getJSON(`/master/tasks/${encodeURIComponent(id)}/sandbox?framework_id=${encodeURIComponent(fw)}`);
    logState.agent = s.agent_id;
    logState.dir = s.directory;
    $("#sandbox-dir").textContent = `${s.directory} on ${s.agent_id}`;
    await listFiles();
    followLog();
  } catch (e) {
    $("#sandbox-error").textContent = "Sandbox unavailable: " + e.message;
    $("#sandbox-error").hidden = false;
  }
}

function filesURL(op, params) {
  return `/master/agents/${encodeURIComponent(logState.agent)}/files/${op}?` + new URLSearchParams(params).toString();
}

async function listFiles() {
  if (!logState || !logState.dir) return;
  const list = await getJSON(filesURL("browse", { path: logState.dir }));
  const html = list.map((f) => {
    const name = f.path.split("/").pop();
    const isDir = f.mode.startsWith("d");
    const open = isDir ? "" : `<button data-file="${esc(name)}">view</button> <a href="${filesURL("download", { path: f.path })}">download</a>`;
    return `<tr><td class="id">${esc(name)}${isDir ? "/" : ""}</td><td class="num">${f.size}</td><td>${when(f.mtime)}</td><td>${open}</td></tr>`;
  });
  rows($("#files tbody"), html, 4, "Empty sandbox.");
  $("#files tbody").querySelectorAll("button[data-file]").forEach((b) => { b.onclick = () => switchFile(b.dataset.file); });
}

function switchFile(name) {
  logState.file = name;
  logState.offset = null;
  $("#log").textContent = "";
  document.querySelectorAll("button.tab").forEach((b) => b.classList.toggle("active", b.dataset.file === name));
  followLog();
}

async function readLog() {
  const st = logState;
  if (!st || !st.dir) return;
  const path = st.dir + "/" + st.file;
  if (st.offset === null) {
    // Mesos semantics: offset -1 answers the file's size; show at most the last chunk.
    const size = (await getJSON(filesURL("read", { path, offset: -1 }))).offset;
    st.offset = Math.max(0, size - LOG_CHUNK);
  }
  for (let i = 0; i < 16; i++) {
    const r = await getJSON(filesURL("read", { path, offset: st.offset, length: LOG_CHUNK }));
    if (st !== logState) return;
    if (!r.data.length) break;
    const pre = $("#log");
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.append(document.createTextNode(r.data));
    st.offset = r.offset + new TextEncoder().encode(r.data).length;
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  }
  $("#log-info").textContent = `${st.file}: ${st.offset} bytes`;
}

function stopLog() {
  if (logTimer) clearTimeout(logTimer);
  logTimer = null;
}

async function followLog() {
  stopLog();
  try {
    await readLog();
  } catch (e) {
    $("#log-info").textContent = "cannot read: " + e.message;
  }
  if ($("#follow").checked && location.hash.startsWith("#/task/")) logTimer = setTimeout(followLog, LOG_POLL_MS);
}

// ---- routing and polling ----

function route() {
  const m = location.hash.match(/^#\/task\/([^/]+)\/(.+)$/);
  if (m) return { task: decodeURIComponent(m[2]), fw: decodeURIComponent(m[1]) };
  return null;
}

async function refresh() {
  if (timer) clearTimeout(timer);
  const r = route();
  $("#cluster-view").hidden = !!r;
  $("#task-view").hidden = !r;
  try {
    if (r) await refreshTask(r.fw, r.task);
    else { stopLog(); logState = null; await refreshCluster(); }
    setStatus("updated " + new Date().toLocaleTimeString());
  } catch (e) {
    setStatus("cannot reach the master: " + e.message, true);
  }
  timer = setTimeout(refresh, POLL_MS);
}

window.addEventListener("hashchange", refresh);
$("#task-search").addEventListener("input", () => { view.active.offset = 0; view.completed.offset = 0; refresh(); });
$("#task-state").addEventListener("change", () => { view.active.offset = 0; refresh(); });
$("#completed-state").addEventListener("change", () => { view.completed.offset = 0; refresh(); });
document.querySelectorAll("button.tab").forEach((b) => { b.onclick = () => switchFile(b.dataset.file); });
$("#follow").addEventListener("change", () => { if ($("#follow").checked) followLog(); else stopLog(); });
refresh();
