// The audit log, live: server-sent events from /api/audit/stream (the browser reconnects and
// resumes by itself), filtered by grant, tool and decision; a row opens its details.
const status = document.getElementById("status");
const feed = document.querySelector("#feed tbody");
const detail = document.getElementById("detail");
const MAX_ROWS = 500;
let source;

const FIELDS = [
  ["at", "Time"], ["decision", "Decision"], ["kind", "Kind"], ["grant", "Grant"], ["session", "Session"],
  ["server", "Server"], ["method", "Method"], ["tool", "Tool"], ["request_id", "Request id"],
  ["rule", "Rule pointer"], ["message", "Message"], ["policy_version", "Policy version"],
  ["arg_keys", "Argument keys"], ["args_sha256", "Argument digest (SHA-256)"], ["args", "Arguments"],
  ["upstream_status", "Upstream status"], ["latency_us", "Latency"], ["is_error", "Result isError"],
  ["detail", "Detail"],
];

function value(r, key) {
  const v = r[key];
  if (key === "latency_us") return `${(v / 1000).toFixed(2)} ms`;
  if (key === "arg_keys") return v.join(", ");
  if (typeof v === "object") return JSON.stringify(v, null, 2);
  return String(v);
}

function show(r, row) {
  for (const other of feed.querySelectorAll("tr[aria-selected=true]")) other.setAttribute("aria-selected", "false");
  row.setAttribute("aria-selected", "true");
  detail.hidden = false;
  detail.replaceChildren(el("h2", {}, `Record ${r.id}`),
    el("dl", {}, FIELDS.filter(([k]) => r[k] !== undefined && r[k] !== null).map(([k, label]) =>
      [el("dt", {}, label), el("dd", {}, ["args", "detail"].includes(k) ? el("pre", {}, value(r, k)) : el("code", {}, value(r, k)))])),
    el("button", { type: "button", onclick: () => { detail.hidden = true; row.focus(); } }, "Close"));
}

function add(r) {
  const kind = ["allowed", "approval_granted"].includes(r.decision) ? "good"
    : r.kind === "admin" ? "" : "critical";
  const row = el("tr", { tabIndex: 0, dataset: { decision: r.decision, tool: r.tool || "", id: r.id }, "aria-selected": "false" },
    el("td", {}, new Date(r.at_ms).toLocaleTimeString()),
    el("td", {}, badge(r.decision, kind)),
    el("td", {}, r.grant || ""),
    el("td", {}, r.tool ? el("code", {}, r.server ? `${r.server}/${r.tool}` : r.tool) : ""),
    el("td", {}, r.message || ""));
  row.onclick = () => show(r, row);
  row.onkeydown = (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); show(r, row); }
    if (e.key === "ArrowDown" && row.nextElementSibling) row.nextElementSibling.focus();
    if (e.key === "ArrowUp" && row.previousElementSibling) row.previousElementSibling.focus();
  };
  feed.prepend(row);
  while (feed.rows.length > MAX_ROWS) feed.deleteRow(-1);
}

function follow() {
  if (source) source.close();
  feed.replaceChildren();
  detail.hidden = true;
  const q = new URLSearchParams();
  for (const k of ["grant", "tool", "decision"]) {
    const v = document.getElementById(`filter-${k}`).value.trim();
    if (v) q.set(k, v);
  }
  say(status, "Connecting...");
  source = new EventSource(`/api/audit/stream?${q}`);
  source.addEventListener("record", (e) => add(JSON.parse(e.data)));
  source.addEventListener("ready", () => say(status, "Live."));
  source.addEventListener("error", (e) => {
    if (e.data) say(status, `The audit store failed: ${JSON.parse(e.data).error}`, true);
    else if (source.readyState !== EventSource.OPEN) say(status, "Disconnected; reconnecting...", true);
  });
}

document.getElementById("filters").onsubmit = (e) => {
  e.preventDefault();
  follow();
};

follow();
