// Servers and tools: the inventory with category and severity badges, the evidence behind
// them, pin state; a changed or new definition is reviewed as a line diff and approved here.
const status = document.getElementById("status");
const dialog = document.getElementById("diff-dialog");
let pins = [];

// A line diff (longest common subsequence): [{ op: " " | "-" | "+", line }].
function diffLines(a, b) {
  const n = a.length, m = b.length;
  const lcs = Array.from({ length: n + 1 }, () => new Array(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--)
    for (let j = m - 1; j >= 0; j--)
      lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  const out = [];
  let i = 0, j = 0;
  while (i < n && j < m) {
    if (a[i] === b[j]) { out.push({ op: " ", line: a[i] }); i++; j++; }
    else if (lcs[i + 1][j] >= lcs[i][j + 1]) out.push({ op: "-", line: a[i++] });
    else out.push({ op: "+", line: b[j++] });
  }
  while (i < n) out.push({ op: "-", line: a[i++] });
  while (j < m) out.push({ op: "+", line: b[j++] });
  return out;
}

function pretty(definition) {
  return definition ? JSON.stringify(definition, null, 2).split("\n") : [];
}

function review(server, tool) {
  const pin = pins.find((p) => p.server === server && p.tool === tool);
  if (!pin || !pin.pending) return;
  const label = tool ? `${server}/${tool}` : `server ${server} (identity)`;
  document.getElementById("diff-about").textContent = pin.approved
    ? `${label}: the definition approved ${pin.approved.at} (-) against the one seen ${pin.pending.at} (+).`
    : `${label} is new: nothing was approved before.`;
  const lines = diffLines(pretty(pin.approved && pin.approved.definition), pretty(pin.pending.definition));
  document.getElementById("diff").replaceChildren(...lines.map((d) =>
    el("span", { className: d.op === "+" ? "add" : d.op === "-" ? "del" : "" }, `${d.op} ${d.line}\n`)));
  document.getElementById("diff-approve").onclick = async () => {
    const { ok, data } = await api("/api/pins/approve", { method: "POST",
      body: { server, tool, fingerprint: pin.pending.fingerprint } });
    dialog.close();
    say(status, ok ? `Approved the new definition of ${label}.` : `Not approved: ${data.error}`, !ok);
    refresh();
  };
  dialog.showModal();
}

function evidence(t) {
  const items = [...(t.evidence || []).map((e) => `${e.category || ""} from ${e.source}: ${e.detail}`),
    ...(t.findings || []).map((f) => `finding (${f.kind || f.severity || ""}): ${f.detail || f.message || JSON.stringify(f)}`)];
  if (!items.length) return "";
  return el("details", {}, el("summary", {}, `${items.length} reason${items.length > 1 ? "s" : ""}`),
    el("ul", {}, items.map((i) => el("li", {}, i))));
}

function pinCell(server, t) {
  const state = t.pin ? t.pin.state : "off";
  const kind = { pinned: "good", changed: "critical", new: "high" }[state] || "";
  const cell = el("td", {}, badge(state, kind));
  if (state === "changed" || state === "new") {
    cell.append(" ", el("button", { type: "button", onclick: () => review(server, t.name) },
      state === "changed" ? "Review change" : "Review"));
  }
  return cell;
}

function serverSection(s) {
  const head = el("h2", {}, s.name, " ", el("span", { className: "empty" }, `${s.transport}, ${s.state}`));
  const section = el("section", { "aria-label": `Server ${s.name}` }, head);
  if (s.error) section.append(el("p", { className: "error" }, s.error));
  if (s.identity && s.identity.pin && ["changed", "new"].includes(s.identity.pin.state) && s.identity.pin.pending) {
    section.append(el("p", {}, badge(`identity ${s.identity.pin.state}`, "critical"), " ",
      el("button", { type: "button", onclick: () => review(s.name, "") }, "Review the server's identity")));
  }
  if (!s.tools.length) return section;
  section.append(el("table", {},
    el("thead", {}, el("tr", {}, ["Tool", "Categories", "Severity", "Why", "Pin", "Grants"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, s.tools.map((t) => el("tr", { dataset: { tool: t.name } },
      el("td", {}, el("code", {}, t.exposed), t.title ? el("div", { className: "empty" }, t.title) : "",
        t.description ? el("div", { className: "desc" }, t.description.slice(0, 200)) : ""),
      el("td", {}, (t.categories || []).map((c) => [badge(c, "category"), " "])),
      el("td", {}, badge(t.severity)),
      el("td", {}, evidence(t)),
      pinCell(s.name, t),
      el("td", {}, Object.entries(t.grants || {}).map(([g, v]) => el("div", {}, `${g}: `, el("strong", {}, v.treatment)))),
    )))));
  return section;
}

async function refresh() {
  const [inventory, pinList] = await Promise.all([api("/api/inventory"), api("/api/pins")]);
  if (!inventory.ok) return say(status, `Cannot load the inventory: ${inventory.data.error}`, true);
  pins = pinList.ok ? pinList.data.pins : [];
  document.getElementById("servers").replaceChildren(...inventory.data.servers.map(serverSection));
}

refresh();
