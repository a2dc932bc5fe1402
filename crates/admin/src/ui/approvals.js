// The approvals queue: lists calls held for a human (polling the admin API), approves or
// denies them with the session's CSRF token.
const csrf = document.querySelector('meta[name="csrf-token"]').content;
const body = document.getElementById("queue");
const status = document.getElementById("status");

function cell(row, text, code) {
  const td = document.createElement("td");
  if (code) {
    const c = document.createElement("code");
    c.textContent = text;
    td.appendChild(c);
  } else {
    td.textContent = text;
  }
  row.appendChild(td);
  return td;
}

async function decide(id, verdict, reason) {
  const r = await fetch(`/api/approvals/${encodeURIComponent(id)}/${verdict}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: JSON.stringify(reason ? { reason } : {}),
  });
  const answer = await r.json().catch(() => ({}));
  status.textContent = r.ok ? `${verdict === "approve" ? "Approved" : "Denied"} ${id}` : `Error: ${answer.error || r.status}`;
  status.className = r.ok ? "" : "error";
  await refresh();
}

async function refresh() {
  const r = await fetch("/api/approvals");
  if (!r.ok) {
    status.textContent = `Cannot load the queue (HTTP ${r.status})`;
    status.className = "error";
    return;
  }
  const { approvals } = await r.json();
  body.replaceChildren();
  if (approvals.length === 0) {
    const row = body.insertRow();
    const td = cell(row, "Nothing waits for approval.");
    td.colSpan = 6;
    td.className = "empty";
  }
  for (const a of approvals) {
    const row = body.insertRow();
    row.dataset.approval = a.id;
    cell(row, `${a.server}/${a.tool}`);
    cell(row, a.grant);
    cell(row, JSON.stringify(a.arguments), true);
    const risk = cell(row, "");
    const badge = document.createElement("span");
    badge.className = `badge ${a.severity || ""}`;
    badge.textContent = a.severity || "unknown";
    risk.appendChild(badge);
    cell(row, new Date(a.expires_ms).toLocaleTimeString());
    const actions = cell(row, "");
    const approve = document.createElement("button");
    approve.className = "approve";
    approve.textContent = "Approve";
    approve.onclick = () => decide(a.id, "approve");
    const reason = document.createElement("input");
    reason.type = "text";
    reason.placeholder = "reason (the agent reads it)";
    reason.setAttribute("aria-label", `Reason to deny ${a.tool}`);
    const deny = document.createElement("button");
    deny.className = "deny";
    deny.textContent = "Deny";
    deny.onclick = () => {
      if (!reason.value.trim()) {
        status.textContent = "A denial needs a reason.";
        status.className = "error";
        reason.focus();
        return;
      }
      decide(a.id, "deny", reason.value.trim());
    };
    actions.append(approve, " ", reason, " ", deny);
  }
}

refresh();
setInterval(refresh, 1500);
