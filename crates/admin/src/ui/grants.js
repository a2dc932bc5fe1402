// Grants: configured and stored; create one (its token shown once), rotate its token, revoke
// it, or attach one of the known policy files.
const status = document.getElementById("status");
let policyFiles = [];

function showToken(name, token) {
  document.getElementById("token-grant").textContent = name;
  document.getElementById("token").textContent = token;
  const box = document.getElementById("token-box");
  box.hidden = false;
  document.getElementById("token-copy").focus();
}

document.getElementById("token-copy").onclick = () =>
  navigator.clipboard.writeText(document.getElementById("token").textContent)
    .then(() => say(status, "Token copied."), () => say(status, "Copy it by hand: the clipboard is not available.", true));
document.getElementById("token-done").onclick = () => {
  document.getElementById("token").textContent = "";
  document.getElementById("token-box").hidden = true;
};

function policySelect(id, current, label) {
  const select = el("select", { id, "aria-label": label });
  select.append(el("option", { value: "" }, "(none: may do nothing)"));
  const known = new Set(policyFiles);
  if (current) known.add(current);
  for (const p of known) select.append(el("option", { value: p, selected: p === current }, p));
  return select;
}

async function act(name, action, body, done) {
  const { ok, data } = await api(`/api/grants/${encodeURIComponent(name)}/${action}`, { method: "POST", body: body || {} });
  if (!ok) return say(status, `${action} ${name}: ${data.error}`, true);
  say(status, done(data));
  if (data.token) showToken(name, data.token);
  refresh();
}

function row(g) {
  const actions = el("td", {});
  if (g.source === "store") {
    const select = policySelect(`policy-${g.name}`, g.policy, `Policy for ${g.name}`);
    actions.append(select, " ",
      el("button", { type: "button", onclick: () => act(g.name, "policy", { policy: select.value || null },
        (d) => d.policy ? `${g.name} now follows ${d.policy}; its sessions end.` : `${g.name} has no policy now.`) }, "Attach"),
      " ",
      el("button", { type: "button", onclick: () => act(g.name, "rotate", {}, () => `New token for ${g.name}; the old one no longer works.`) }, "Rotate token"),
      " ",
      el("button", { type: "button", className: "deny", onclick: () => {
        if (confirm(`Revoke ${g.name}? Its token stops working and its sessions end.`))
          act(g.name, "revoke", {}, () => `Revoked ${g.name}.`);
      } }, "Revoke"));
  } else {
    actions.append(el("span", { className: "empty" }, "edit the configuration file"));
  }
  return el("tr", { dataset: { grant: g.name } },
    el("td", {}, el("strong", {}, g.name)),
    el("td", {}, g.source === "store" ? `stored${g.created ? `, ${g.created}` : ""}` : "configuration"),
    el("td", {}, g.policy ? el("code", {}, g.policy) : el("span", { className: "error" }, "none: may do nothing")),
    actions);
}

async function refresh() {
  const [grants, policies] = await Promise.all([api("/api/grants"), api("/api/policies")]);
  if (!grants.ok) return say(status, `Cannot load the grants: ${grants.data.error}`, true);
  policyFiles = policies.ok ? policies.data.files.map((f) => f.path) : [];
  document.getElementById("grants").replaceChildren(...grants.data.grants.map(row));
  const select = document.getElementById("new-policy");
  const chosen = select.value;
  select.replaceChildren(...policySelect("x", chosen, "").children);
}

document.getElementById("create").onsubmit = async (e) => {
  e.preventDefault();
  const name = document.getElementById("new-name").value.trim();
  const policy = document.getElementById("new-policy").value || null;
  const { ok, data } = await api("/api/grants", { method: "POST", body: { name, policy } });
  if (!ok) return say(status, `Create ${name}: ${data.error}`, true);
  say(status, `Created ${name}.`);
  document.getElementById("new-name").value = "";
  showToken(name, data.token);
  refresh();
};

refresh();
