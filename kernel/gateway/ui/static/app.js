// The dashboard's page logic: read kernel.top frames ({version, at, error, top}; schema in kernel/observe/top.py)
// from the gateway's server-sent events (/ui/api/events), polling /ui/api/state when a stream cannot be held, and
// show them. Everything the kernel reports is set as text (textContent), never parsed as markup: agent names and
// tool arguments come from agents. Rows are kept by key (agent id, request id, approval id) and updated in place,
// so a button under the operator's pointer survives the next frame.
"use strict";

const HISTORY = 120; // samples kept per plot
const series = {
  tokens: new Ring(HISTORY),
  ttft: new Ring(HISTORY),
  queue: new Ring(HISTORY),
};
let lastVersion = 0;
let pollTimer = null;

function $(id) {
  return document.getElementById(id);
}

function number(value) {
  if (value === null || value === undefined) return "–";
  return String(value).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

function seconds(value) {
  if (value === null || value === undefined) return "–";
  if (value >= 3600) return (value / 3600).toFixed(1) + " h";
  if (value >= 60) return (value / 60).toFixed(1) + " min";
  return value.toFixed(1) + " s";
}

function bytes(value) {
  if (value === null || value === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (value >= 1024 && i < units.length - 1) {
    value /= 1024;
    i++;
  }
  return (i ? value.toFixed(1) : String(value)) + " " + units[i];
}

function quota(q) {
  if (!q) return "–";
  const parts = [];
  if (q.minute_left !== null && q.minute_left !== undefined) parts.push(number(q.minute_left) + "/min");
  if (q.total_left !== null && q.total_left !== undefined) parts.push(number(q.total_left) + " total");
  return parts.length ? parts.join(" · ") : "unlimited";
}

// Keep tbody's rows equal to `items`, in order: a row per key, made by build(tr, item) once and filled by
// fill(tr, item) on every frame. Rows whose key is gone are removed.
function syncRows(tableId, items, key, columns, build) {
  const body = $(tableId).tBodies[0];
  const existing = new Map();
  for (const row of Array.from(body.rows)) {
    if (row.dataset.key !== undefined) existing.set(row.dataset.key, row);
    else row.remove();
  }
  const wanted = new Set();
  items.forEach((item) => {
    const k = String(key(item));
    wanted.add(k);
    let row = existing.get(k);
    if (!row) {
      row = document.createElement("tr");
      row.dataset.key = k;
      columns.forEach(([cls]) => {
        const cell = row.insertCell();
        if (cls) cell.className = cls;
      });
      if (build) build(row, item);
    }
    columns.forEach(([, value], i) => {
      if (value === null) return; // a cell the build step owns
      const text = value(item);
      if (row.cells[i].textContent !== text) row.cells[i].textContent = text;
    });
    body.appendChild(row); // moves an existing row into order
  });
  for (const [k, row] of existing) if (!wanted.has(k)) row.remove();
  if (!items.length) {
    const row = body.insertRow();
    const cell = row.insertCell();
    cell.colSpan = columns.length;
    cell.textContent = "none";
    row.className = "empty";
  }
}

function showCount(id, shown, total) {
  $(id).textContent = total !== undefined && total !== shown ? `${shown} of ${total}` : String(shown);
}

function renderAgents(top) {
  const agents = top.agents || [];
  syncRows("agents", agents, (a) => a.agent_id, [
    ["", (a) => a.agent_id],
    ["name", (a) => a.name],
    ["", (a) => a.principal || "–"],
    ["num", (a) => (a.pid === null || a.pid === undefined ? "–" : String(a.pid))],
    ["num", (a) => String(a.priority)],
    ["state", (a) => a.state],
    ["num", (a) => number(a.requests)],
    ["num", (a) => number(a.prompt_tokens)],
    ["num", (a) => number(a.completion_tokens)],
    ["num", (a) => number(a.calls)],
    ["num", (a) => number(a.errors)],
    ["", (a) => quota(a.quota)],
  ]);
  for (const a of agents) {
    const row = $("agents").querySelector(`tr[data-key="${CSS.escape(String(a.agent_id))}"]`);
    row.dataset.agentId = a.agent_id;
    row.dataset.state = a.state;
  }
  showCount("agents-count", agents.length, top.agents_total);
}

function renderRequests(top) {
  const requests = top.requests || [];
  syncRows("requests", requests, (r) => r.request_id, [
    ["", (r) => r.request_id],
    ["", (r) => r.agent_id],
    ["state", (r) => r.state],
    ["num", (r) => String(r.priority)],
    ["num", (r) => number(r.prompt_tokens)],
    ["num", (r) => number(r.generated_tokens)],
    ["num", (r) => number(r.max_tokens)],
    ["num", (r) => seconds(r.waiting_s)],
    ["num", (r) => seconds(r.age_s)],
  ]);
  for (const r of requests) {
    const row = $("requests").querySelector(`tr[data-key="${CSS.escape(String(r.request_id))}"]`);
    row.dataset.requestId = r.request_id;
    row.dataset.agentId = r.agent_id;
    row.dataset.state = r.state;
  }
  showCount("requests-count", requests.length, top.requests_total);
}

function renderQueue(top) {
  const queue = top.queue || [];
  const list = $("queue");
  list.replaceChildren(
    ...queue.map((id) => {
      const item = document.createElement("li");
      item.textContent = id;
      return item;
    }),
  );
  showCount("queue-count", queue.length);
  $("queue-order").textContent = top.queue_order ? `(${top.queue_order} order)` : "";
}

function decide(row, approvalId, allow) {
  const note = row.querySelector(".decision-note");
  row.querySelectorAll("button").forEach((b) => (b.disabled = true));
  note.className = "decision-note";
  note.textContent = allow ? "approving…" : "denying…";
  fetch(`/ui/api/approvals/${encodeURIComponent(approvalId)}`, {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ allow }),
  })
    .then(async (response) => {
      const body = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error((body.error && body.error.message) || `HTTP ${response.status}`);
      row.dataset.decision = body.decision;
      note.textContent = body.decision;
    })
    .catch((error) => {
      row.querySelectorAll("button").forEach((b) => (b.disabled = false));
      note.className = "decision-note error";
      note.textContent = String(error.message || error);
    });
}

function renderApprovals(top) {
  const approvals = top.approvals || [];
  syncRows(
    "approvals",
    approvals,
    (p) => p.approval_id,
    [
      ["", (p) => p.approval_id],
      ["", (p) => `${p.agent_name} (${p.agent_id})`],
      ["", (p) => p.tool],
      ["args", (p) => p.arguments],
      ["num", (p) => seconds(p.waiting_s)],
      ["decide", null],
    ],
    (row, p) => {
      row.dataset.approvalId = p.approval_id;
      const cell = row.cells[5];
      for (const [label, allow] of [["Approve", true], ["Deny", false]]) {
        const button = document.createElement("button");
        button.type = "button";
        button.className = allow ? "approve" : "deny";
        button.textContent = label;
        button.addEventListener("click", () => decide(row, p.approval_id, allow));
        cell.appendChild(button);
      }
      const note = document.createElement("span");
      note.className = "decision-note";
      cell.appendChild(note);
    },
  );
  showCount("approvals-count", approvals.length);
}

function renderTools(top) {
  // calls in flight, then the runs the kernel started early and holds for the agent's tool.call
  const calls = (top.tools || []).map((t) => ({ key: `${t.agent_id}/${t.tool}`, ...t, state: "in flight", age: t.running_s }));
  const early = (top.early || []).map((e) => ({ key: `early/${e.early_id}`, ...e, state: `early ${e.state}`, age: e.age_s }));
  const rows = calls.concat(early);
  syncRows("tools", rows, (t) => t.key, [
    ["", (t) => t.agent_id],
    ["", (t) => t.tool],
    ["", (t) => t.state],
    ["num", (t) => seconds(t.age)],
  ]);
  showCount("tools-count", rows.length, calls.length + (top.early_total ?? early.length));
}

function renderSpaces(top) {
  const spaces = top.spaces || {};
  syncRows("memory-spaces", spaces.memory || [], (s) => s.space, [
    ["", (s) => s.space],
    ["num", (s) => number(s.entries)],
    ["num", (s) => bytes(s.bytes)],
  ]);
  syncRows("file-spaces", spaces.files || [], (s) => s.space, [
    ["", (s) => s.space],
    ["num", (s) => number(s.files)],
    ["num", (s) => bytes(s.bytes)],
  ]);
  $("spaces-age").textContent =
    spaces.age_s === null || spaces.age_s === undefined ? "" : `(counted ${seconds(spaces.age_s)} ago)`;
}

function renderPrincipals(top) {
  syncRows("principals", top.principals || [], (p) => p.principal, [
    ["", (p) => p.principal],
    ["num", (p) => number(p.agents)],
    ["num", (p) => number(p.prompt_tokens)],
    ["num", (p) => number(p.completion_tokens)],
    ["num", (p) => number(p.calls)],
    ["num", (p) => number(p.errors)],
  ]);
}

function renderCapacity(top) {
  const kv = top.kv || {};
  const arena = top.arena || {};
  $("kv-meter").max = Math.max(1, kv.blocks_total || 0);
  $("kv-meter").value = kv.blocks_used || 0;
  $("kv-text").textContent =
    `${number(kv.blocks_used)} / ${number(kv.blocks_total)} blocks · ` +
    `${number(kv.running)} running of ${number(kv.max_batch)}`;
  $("arena-meter").max = Math.max(1, arena.bytes_total || 0);
  $("arena-meter").value = arena.bytes_used || 0;
  $("arena-text").textContent =
    `${bytes(arena.bytes_used)} / ${bytes(arena.bytes_total)} · ${number(arena.snapshots)} snapshots`;
}

function renderRates(top) {
  const rates = top.rates || {};
  const sample = (v) => (v === null || v === undefined ? null : Number(v));
  series.tokens.push(sample(rates.tokens_per_s));
  series.ttft.push(sample(rates.ttft_p50_s));
  series.queue.push(sample(rates.queue_length));
  $("rate-tokens").textContent = formatSample(sample(rates.tokens_per_s));
  $("rate-ttft").textContent = formatSample(sample(rates.ttft_p50_s));
  $("rate-queue").textContent = formatSample(sample(rates.queue_length));
  drawPlot($("plot-tokens"), series.tokens);
  drawPlot($("plot-ttft"), series.ttft);
  drawPlot($("plot-queue"), series.queue);
}

function setStatus(state, text) {
  const status = $("status");
  status.dataset.state = state;
  status.textContent = text;
}

function render(frame) {
  if (frame.version <= lastVersion) return; // a frame seen through the other channel
  lastVersion = frame.version;
  const updated = $("updated");
  updated.dataset.version = String(frame.version);
  updated.textContent = "updated " + new Date(frame.at * 1000).toLocaleTimeString();
  if (frame.error || !frame.top) {
    setStatus("error", "kernel unavailable: " + (frame.error || "no snapshot"));
    return;
  }
  const top = frame.top;
  setStatus("live", "live");
  $("model").textContent = top.model || "–";
  $("scheduler").textContent = top.scheduler || "–";
  $("uptime").textContent = seconds(top.uptime_s);
  $("steps").textContent = number(top.steps);
  renderRates(top);
  renderCapacity(top);
  renderApprovals(top);
  renderAgents(top);
  renderRequests(top);
  renderQueue(top);
  renderTools(top);
  renderSpaces(top);
  renderPrincipals(top);
  // when the first snapshot was drawn, in the page's own clock (bench/ui_bench.py reads it)
  if (!document.body.dataset.firstFrameMs) document.body.dataset.firstFrameMs = performance.now().toFixed(1);
}

function poll() {
  fetch("/ui/api/state", { credentials: "same-origin", cache: "no-store" })
    .then((response) => {
      if (response.status === 401) window.location.assign("/ui/login");
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      return response.json();
    })
    .then(render)
    .catch((error) => setStatus("reconnecting", "reconnecting: " + error.message));
}

function listen() {
  if (!window.EventSource) {
    pollTimer = setInterval(poll, 1000);
    poll();
    return;
  }
  const events = new EventSource("/ui/api/events");
  events.addEventListener("snapshot", (event) => render(JSON.parse(event.data)));
  events.addEventListener("open", () => {
    if (pollTimer !== null) {
      clearInterval(pollTimer);
      pollTimer = null;
    }
  });
  events.addEventListener("error", () => {
    // EventSource reconnects by itself; meanwhile poll, so a proxy that cuts streams still leaves a live page
    setStatus("reconnecting", "reconnecting…");
    if (pollTimer === null) pollTimer = setInterval(poll, 2000);
  });
}

poll();
listen();
