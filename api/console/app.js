// ExecFlow operator console: sign-in, chat with live task events, approvals, and panels.
import { ApiError, api, listOf, session, stream } from "./api.js";
import { verifyEntry } from "./merkle.js";

const RANK = { read: 0, write: 1, admin: 2 };
const $ = (id) => document.getElementById(id);
const state = { me: null, panel: "chat", taskStream: null, currentTask: null, timers: [] };

// ---- small DOM helpers -------------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function can(scope) {
  return state.me && RANK[state.me.scope] >= RANK[scope];
}

function fmt(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function table(rows, columns, actions) {
  if (!rows.length) return el("p", { class: "empty" }, "Nothing here yet.");
  const head = el("tr", {}, columns.map((c) => el("th", { scope: "col" }, c.label)), actions ? el("th", {}, "") : null);
  const body = rows.map((row) =>
    el("tr", {}, columns.map((c) => el("td", { "data-label": c.label }, c.render ? c.render(row) : fmt(row[c.key]))),
      actions ? el("td", {}, actions(row)) : null),
  );
  return el("table", {}, el("thead", {}, head), el("tbody", {}, body));
}

function showError(target, err) {
  const node = typeof target === "string" ? $(target) : target;
  node.textContent = err ? (err instanceof ApiError ? err.message : String(err.message || err)) : "";
}

async function render(containerId, loader) {
  const container = $(containerId);
  try {
    const content = await loader();
    container.replaceChildren(content);
    showError("panel-error", null);
  } catch (err) {
    container.replaceChildren(el("p", { class: "error", role: "alert" }, err.message));
  }
}

function countdown(expiresAt) {
  const node = el("span", { class: "countdown" });
  const tick = () => {
    const left = Math.max(0, Math.round((new Date(expiresAt) - Date.now()) / 1000));
    node.textContent = left ? `expires in ${Math.floor(left / 60)}m ${left % 60}s` : "expired";
  };
  tick();
  state.timers.push(setInterval(tick, 1000));
  return node;
}

// ---- sign-in -----------------------------------------------------------------------------
async function signIn(key) {
  session.key = key;
  try {
    const body = await api("GET", "/api/keys/me");
    state.me = body.api_key;
  } catch (err) {
    session.key = null;
    throw err;
  }
  $("signin").hidden = true;
  $("workspace").hidden = false;
  $("signout").hidden = false;
  $("identity").textContent = `${state.me.name} · ${state.me.scope} scope`;
  for (const node of document.querySelectorAll("[data-scope]")) node.hidden = !can(node.dataset.scope);
  await loadServersIntoPicker();
  await loadTasks();
  refreshApprovalCount();
  state.timers.push(setInterval(refreshApprovalCount, 5000));
}

function signOut() {
  session.key = null;
  location.reload();
}

// ---- tabs --------------------------------------------------------------------------------
const PANELS = {
  chat: () => loadTasks(),
  approvals: () => render("approvals", approvalsView),
  servers: () => render("servers", serversView),
  incidents: () => render("incidents", incidentsView),
  quarantine: () => render("quarantines", quarantinesView),
  traffic: () => render("traffic", trafficView),
  jobs: () => render("jobs", jobsView),
  audit: () => render("audit", auditView),
  keys: () => render("keys", keysView),
};

function showPanel(name) {
  state.panel = name;
  for (const tab of document.querySelectorAll("[role=tab]")) {
    tab.setAttribute("aria-selected", String(tab.dataset.panel === name));
  }
  for (const panel of document.querySelectorAll(".panel")) panel.hidden = panel.id !== `panel-${name}`;
  PANELS[name]();
}

// ---- chat --------------------------------------------------------------------------------
async function loadServersIntoPicker() {
  try {
    const servers = listOf(await api("GET", "/api/servers"));
    $("task-server").replaceChildren(el("option", { value: "" }, "any"),
      servers.map((s) => el("option", { value: s.id }, `${s.name} (#${s.id})`)));
  } catch {
    /* the picker is optional */
  }
}

async function loadTasks() {
  try {
    const tasks = listOf(await api("GET", "/api/agents/tasks?limit=30"));
    $("task-list").replaceChildren(...tasks.map((t) =>
      el("li", {}, el("button", { type: "button", class: "link", onclick: () => openTask(t.task_id ?? t.id) },
        `#${t.task_id ?? t.id} ${t.status} — ${String(t.task || "").slice(0, 60)}`))));
  } catch (err) {
    $("task-list").replaceChildren(el("li", { class: "error" }, err.message));
  }
}

function say(kind, ...content) {
  const item = el("li", { class: `msg ${kind}` }, ...content);
  $("conversation").append(item);
  item.scrollIntoView({ block: "end" });
  return item;
}

// One SSE event from /api/agents/tasks/{id}/events: `step` (route, message, tool_call,
// approval, final, error), `status` and `end`.
const seenSteps = new Set();

async function describeEvent(ev) {
  const d = typeof ev.data === "object" && ev.data ? ev.data : { content: ev.data };
  if (ev.event === "status") return say("system", `Status: ${d.status}`);
  if (ev.event === "end") return say("system", `Task ${d.status}.`);
  if (d.id !== undefined) {
    if (seenSteps.has(d.id)) return null;
    seenSteps.add(d.id);
  }
  switch (d.kind) {
    case "route":
      return say("system", `Routed to the ${d.agent} agent`, d.content ? ` — ${d.content}` : "");
    case "message":
      return d.content ? say("agent", d.content) : null;
    case "tool_call":
      return say("tool", el("strong", {}, d.tool), " ", el("code", {}, fmt(d.args ?? {})),
        d.status ? el("span", { class: "hint" }, ` (${d.status})`) : null,
        d.result ? el("pre", {}, JSON.stringify(d.result, null, 1)) : null);
    case "approval":
      if (d.status === "pending") return showPendingApproval(d);
      return say("system", `Approval for ${d.tool}: ${d.status}`);
    case "final":
      return say("agent", d.content || "Done.");
    case "error":
      return say("error", d.content);
    default:
      return d.content ? say("system", d.content) : null;
  }
}

async function showPendingApproval(step) {
  const pending = listOf(await api("GET", "/api/agents/approvals"));
  const approval = pending.find((a) => a.task_id === state.currentTask && a.tool === step.tool);
  if (!approval) return say("system", `Approval for ${step.tool} is no longer pending.`);
  return say("approval", approvalCard(approval));
}

async function openTask(taskId) {
  if (state.taskStream) state.taskStream.abort();
  seenSteps.clear();
  state.currentTask = Number(taskId);
  $("conversation").replaceChildren();
  showPanel("chat");
  try {
    const task = await api("GET", `/api/agents/tasks/${taskId}`);
    const t = task.task || task;
    say("user", t.task || "");

  } catch (err) {
    say("error", err.message);
    return;
  }
  const controller = new AbortController();
  state.taskStream = controller;
  // Render events in arrival order even though rendering an approval awaits the API.
  let rendering = Promise.resolve();
  const onEvent = (ev) => {
    rendering = rendering.then(() => describeEvent(ev)).catch((e) => say("error", e.message));
  };
  stream(`/api/agents/tasks/${taskId}/events`, onEvent, controller.signal).catch((err) => {
    if (err.name !== "AbortError") say("error", err.message);
  });
}

async function submitTask(event) {
  event.preventDefault();
  showError("task-error", null);
  const body = { task: $("task-text").value.trim(), priority: $("task-priority").value };
  if ($("task-agent").value) body.agent_type = $("task-agent").value;
  if ($("task-server").value) body.server_id = Number($("task-server").value);
  try {
    const created = await api("POST", "/api/agents/task", body);
    $("task-text").value = "";
    await openTask(created.task_id);
    loadTasks();
  } catch (err) {
    showError("task-error", err);
  }
}

// ---- approvals ---------------------------------------------------------------------------
function approvalCard(approval) {
  const argsBox = el("textarea", { rows: 3, "aria-label": "Arguments (JSON)", readonly: !can("write") },
    JSON.stringify(approval.args ?? {}, null, 1));
  const comment = el("input", { "aria-label": "Comment", placeholder: "comment (optional)" });
  const status = el("p", { role: "status", class: "status" });
  const decide = async (decision) => {
    const body = { decision, comment: comment.value || undefined };
    if (decision === "edit") {
      try {
        body.args = JSON.parse(argsBox.value);
      } catch {
        status.textContent = "Arguments must be valid JSON";
        return;
      }
    }
    try {
      await api("POST", `/api/agents/approvals/${approval.id}`, body);
      status.textContent = `Decision recorded: ${decision}`;
      card.querySelectorAll("button").forEach((b) => (b.disabled = true));
      refreshApprovalCount();
    } catch (err) {
      status.textContent = err.message;
    }
  };
  const buttons = can("write")
    ? el("div", { class: "row" },
        el("button", { type: "button", class: "approve", onclick: () => decide("approve") }, "Approve"),
        el("button", { type: "button", class: "edit", onclick: () => decide("edit") }, "Approve with edits"),
        el("button", { type: "button", class: "reject", onclick: () => decide("reject") }, "Reject"))
    : el("p", { class: "hint" }, "Your key cannot decide approvals.");
  const card = el("div", { class: "card approval", "data-approval-id": approval.id },
    el("h3", {}, `Approval needed: ${approval.tool}`),
    el("p", {}, `Task #${approval.task_id} wants to run `, el("code", {}, approval.tool), ". ",
      approval.expires_at ? countdown(approval.expires_at) : ""),
    argsBox, comment, buttons, status);
  return card;
}

async function approvalsView() {
  const approvals = listOf(await api("GET", "/api/agents/approvals"));
  if (!approvals.length) return el("p", { class: "empty" }, "No pending approvals.");
  return el("div", {}, approvals.map((a) => approvalCard({ ...a, task_id: a.task_id })));
}

async function refreshApprovalCount() {
  try {
    const n = listOf(await api("GET", "/api/agents/approvals")).length;
    $("approval-count").textContent = n ? String(n) : "";
  } catch {
    $("approval-count").textContent = "";
  }
}

// ---- panels ------------------------------------------------------------------------------
async function serversView() {
  const servers = listOf(await api("GET", "/api/servers"));
  return table(servers, [
    { key: "id", label: "Id" }, { key: "name", label: "Name" }, { key: "ip", label: "Address" },
    { key: "status", label: "Status", render: (s) => el("span", { class: `pill ${s.status}` }, s.status) },
    { key: "last_seen", label: "Last seen" },
  ]);
}

async function incidentsView() {
  const incidents = listOf(await api("GET", "/api/sentry/incidents?status=open"));
  if (!incidents.length) return el("p", { class: "empty" }, "No open incidents.");
  return el("div", {}, incidents.map((i) =>
    el("details", { class: "card" },
      el("summary", {}, `#${i.id} ${i.severity} — ${i.title || i.summary || i.site_name || `site ${i.site_id}`}`),
      el("ol", { class: "timeline" }, (i.timeline || i.events || []).map((e) =>
        el("li", {}, `${e.ts || e.at || ""} ${e.kind || e.type || ""} ${e.message || fmt(e.detail ?? "")}`))))));
}

async function quarantinesView() {
  const rows = listOf(await api("GET", "/api/eshield/quarantine"));
  return table(rows, [
    { key: "id", label: "Id" }, { key: "target", label: "Target" }, { key: "reason", label: "Reason" },
    { key: "expires_at", label: "Time left", render: (q) => (q.expires_at ? countdown(q.expires_at) : "until released") },
  ], can("admin") ? (q) => el("button", { type: "button", onclick: async () => {
    try {
      await api("DELETE", `/api/eshield/quarantine/${q.id}`);
      PANELS.quarantine();
    } catch (err) { showError("panel-error", err); }
  } }, "Release") : null);
}

async function trafficView() {
  const status = await api("GET", "/api/vaultshield/status");
  const sites = listOf(status);
  return el("div", {},
    table(sites, Object.keys(sites[0] || {}).slice(0, 8).map((k) => ({ key: k, label: k }))),
    el("details", {}, el("summary", {}, "Raw status"), el("pre", {}, JSON.stringify(status, null, 1))));
}

async function jobsView() {
  const jobs = listOf(await api("GET", "/api/jobs?limit=50"));
  return table(jobs, [
    { key: "id", label: "Id" }, { key: "name", label: "Job" }, { key: "status", label: "Status" },
    { key: "progress", label: "Progress", render: (j) => el("progress", { max: 1, value: j.progress ?? 0, "aria-label": `job ${j.id} progress` }) },
    { key: "message", label: "Message" },
  ]);
}

async function auditView() {
  const params = new URLSearchParams({ limit: "50" });
  if ($("audit-action").value) params.set("action", $("audit-action").value);
  if ($("audit-server").value) params.set("server_id", $("audit-server").value);
  if ($("audit-from").value) params.set("from", new Date($("audit-from").value).toISOString());
  if ($("audit-to").value) params.set("to", new Date($("audit-to").value).toISOString());
  const body = await api("GET", `/api/audit-log?${params}`);
  return table(body.entries, [
    { key: "seq", label: "Seq" }, { key: "ts", label: "Time" }, { key: "action", label: "Action" },
    { key: "actor", label: "Actor" }, { key: "server_id", label: "Server" }, { key: "target", label: "Target" },
  ], (entry) => {
    const out = el("span", { class: "verify", role: "status" });
    return el("span", {}, el("button", { type: "button", onclick: async () => {
      out.textContent = "checking…";
      try {
        const checkpoint = await api("GET", "/api/audit-log/checkpoint");
        const proof = await api("GET", `/api/audit-log/${entry.seq}?tree_size=${checkpoint.tree_size}`);
        const steps = await verifyEntry(proof, checkpoint);
        out.className = "verify ok";
        out.textContent = "✓ verified in this browser";
        out.title = steps.join("\n");
      } catch (err) {
        out.className = "verify bad";
        out.textContent = `✗ ${err.message}`;
      }
    } }, "Verify"), " ", out);
  });
}

async function keysView() {
  const keys = listOf(await api("GET", "/api/keys"));
  return table(keys, [
    { key: "id", label: "Id" }, { key: "name", label: "Name" },
    { key: "prefix", label: "Key", render: (k) => `${k.prefix}…${k.last4}` },
    { key: "scope", label: "Scope" }, { key: "plan", label: "Plan" },
    { key: "last_used_at", label: "Last used" },
    { key: "revoked_at", label: "State", render: (k) => (k.revoked_at ? "revoked" : "active") },
  ], (k) => (k.revoked_at ? null : el("button", { type: "button", onclick: async () => {
    try {
      await api("DELETE", `/api/keys/${k.id}`);
      PANELS.keys();
    } catch (err) { showError("panel-error", err); }
  } }, "Revoke")));
}

async function createKey(event) {
  event.preventDefault();
  try {
    const body = await api("POST", "/api/keys", {
      name: $("key-name").value, scope: $("key-scope").value, plan: $("key-plan").value,
    });
    $("new-key-value").textContent = body.key;
    $("new-key").hidden = false;
    PANELS.keys();
  } catch (err) {
    showError("panel-error", err);
  }
}

// ---- wiring ------------------------------------------------------------------------------
function init() {
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    showError("signin-error", null);
    const key = $("api-key").value.trim();
    $("api-key").value = "";
    try {
      await signIn(key);
    } catch (err) {
      showError("signin-error", err);
    }
  });
  $("signout").addEventListener("click", signOut);
  $("task-form").addEventListener("submit", submitTask);
  $("audit-filters").addEventListener("submit", (e) => { e.preventDefault(); PANELS.audit(); });
  $("key-form").addEventListener("submit", createKey);
  $("copy-key").addEventListener("click", () => navigator.clipboard.writeText($("new-key-value").textContent));
  for (const tab of document.querySelectorAll("[role=tab]")) {
    tab.addEventListener("click", () => showPanel(tab.dataset.panel));
  }
  if (session.key) signIn(session.key).catch(() => { $("signin").hidden = false; });
}

init();
