// Shared by every page: calls to the admin API with the session's CSRF token, and a small
// element builder (text only: nothing from the API is ever parsed as HTML).
function csrfToken() {
  return document.querySelector('meta[name="csrf-token"]').content;
}

// Calls the API; resolves to { ok, status, data } (data: the JSON answer, or { error }).
async function api(path, { method = "GET", body } = {}) {
  const headers = {};
  if (method !== "GET") {
    headers["X-CSRF-Token"] = csrfToken();
    headers["Content-Type"] = "application/json";
  }
  let r;
  try {
    r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    return { ok: false, status: 0, data: { error: `the gateway did not answer (${e.message})` } };
  }
  if (r.status === 401) {
    window.location.assign("/login");
  }
  const data = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
  return { ok: r.ok, status: r.status, data };
}

// el("td", { className: "x", onclick: f }, "text", child, ...)
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null) continue;
    if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "style") node.style.cssText = v; // CSSOM: allowed by the page's CSP
    else if (k.startsWith("aria-") || k === "role" || k === "for" || k === "scope") node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

function badge(text, kind) {
  return el("span", { className: `badge ${kind || text || ""}` }, text || "unknown");
}

// Shows a message in a page's status line (role=status); errors in red.
function say(target, message, isError) {
  target.textContent = message;
  target.className = isError ? "error" : "";
}

function when(ms) {
  return new Date(ms).toLocaleString();
}
