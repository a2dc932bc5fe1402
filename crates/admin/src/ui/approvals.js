// The approvals queue: calls held for a human (refreshed every 1.5 s), each approved, or denied
// with a reason the agent is told.
const body = document.getElementById("queue");
const status = document.getElementById("status");

async function decide(id, verdict, reason) {
  const { ok, data } = await api(`/api/approvals/${encodeURIComponent(id)}/${verdict}`, {
    method: "POST", body: reason ? { reason } : {},
  });
  say(status, ok ? `${verdict === "approve" ? "Approved" : "Denied"} ${id}` : `Error: ${data.error}`, !ok);
  await refresh();
}

function row(a) {
  const reason = el("input", { type: "text", placeholder: "reason (the agent reads it)", "aria-label": `Reason to deny ${a.tool}` });
  const deny = () => {
    if (!reason.value.trim()) {
      say(status, "A denial needs a reason.", true);
      reason.focus();
      return;
    }
    decide(a.id, "deny", reason.value.trim());
  };
  reason.onkeydown = (e) => { if (e.key === "Enter") deny(); };
  return el("tr", { dataset: { approval: a.id } },
    el("td", {}, `${a.server}/${a.tool}`),
    el("td", {}, a.grant),
    el("td", {}, el("code", {}, JSON.stringify(a.arguments))),
    el("td", {}, badge(a.severity)),
    el("td", {}, new Date(a.expires_ms).toLocaleTimeString()),
    el("td", {},
      el("button", { type: "button", className: "approve", onclick: () => decide(a.id, "approve"), "aria-label": `Approve ${a.tool}` }, "Approve"),
      " ", reason, " ",
      el("button", { type: "button", className: "deny", onclick: deny, "aria-label": `Deny ${a.tool}` }, "Deny")));
}

async function refresh() {
  const { ok, status: code, data } = await api("/api/approvals");
  if (!ok) return say(status, `Cannot load the queue (HTTP ${code}): ${data.error}`, true);
  // Keep a reason being typed: rebuild only when the queue changed.
  const ids = data.approvals.map((a) => a.id).join(",");
  if (body.dataset.ids === ids && ids) return;
  body.dataset.ids = ids;
  body.replaceChildren(...(data.approvals.length ? data.approvals.map(row)
    : [el("tr", {}, el("td", { colSpan: 6, className: "empty" }, "Nothing waits for approval."))]));
}

refresh();
setInterval(refresh, 1500);
