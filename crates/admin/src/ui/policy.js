// The policy builder (/policies): one grant's policy file as a row per tool (Allow, Deny, Hide,
// Approve or Custom: rate limits and argument rules) beside the file's JSON. Each side follows
// the other: a form change rewrites the JSON, an edit of the JSON redraws the rows. Whatever the
// form does not model (unknown keys, `all_tools`, patterns, descriptions) is kept as it is.
// The draft is checked by the admin API as it changes (the same diagnostics as `toolgate
// check`); "try a call" asks the API what the draft would decide; saving sends the text with the
// hash of the file it was based on, so that a concurrent change is never overwritten.
"use strict";
(() => {
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const $ = (id) => document.getElementById(id);
  const ui = {
    grant: $("pb-grant"), def: $("pb-default"), save: $("pb-save"), reload: $("pb-reload"),
    dirty: $("pb-dirty"), file: $("pb-file"), status: $("pb-status"), diagnostics: $("pb-diagnostics"),
    description: $("pb-description"), rowsFieldset: $("pb-rows-fieldset"), tools: $("pb-tools"),
    others: $("pb-others"), json: $("pb-json"), jsonError: $("pb-json-error"), check: $("pb-check"),
    tryTool: $("pb-try-tool"), tryArgs: $("pb-try-args"), tryRun: $("pb-try-run"), tryResult: $("pb-try-result"),
  };

  const MODES = [
    ["allow", "Allow"], ["deny", "Deny"], ["hide", "Hide"], ["approve", "Approve"], ["custom", "Custom"],
  ];
  const RULE_KINDS = [
    ["require", "Required"], ["deny_if", "Denied if"], ["approve_if", "Needs approval if"],
    ["approve_unless", "Needs approval unless"],
  ];
  const OPS = ["eq", "neq", "in", "not_in", "lt", "lte", "gt", "gte", "regex", "contains", "exists",
    "glob", "starts_with", "ends_with", "max_len", "schema", "command"];
  const WINDOWS = ["second", "minute", "hour", "day", "week"];
  const SCOPES = [["grant", "per grant"], ["session", "per session"], ["server", "per server"], ["global", "for everyone"]];
  const FEATURES = [["substitution", "command substitution $( )"], ["redirection", "redirection > <"],
    ["background", "background jobs &"], ["heredoc", "here-documents <<"]];
  const RULE_FIELDS = ["limits", "require", "deny_if", "approve_if", "approve_unless"];

  const state = {
    grants: [], files: [], grant: "", path: null, sha: null, saved: null, tools: [],
    doc: null, // the last JSON text that parsed, as a value
    parsed: true, // whether the text in the textarea parses
    custom: new Set(), // tools set to Custom with the form (shown as Custom even without rules yet)
    stash: {}, // entries set aside when a tool's treatment changes, to come back to
    drafts: {}, // grant -> unsaved state, kept while switching grants
    checkSeq: 0, diagnostics: [], checkTimer: 0, parseTimer: 0, loadSeq: 0,
  };

  // ---- small helpers ----------------------------------------------------------------------

  const isObj = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
  const own = (o, k) => isObj(o) && Object.prototype.hasOwnProperty.call(o, k);
  const get = (o, k) => (own(o, k) ? o[k] : undefined);
  /** Sets a key as an own property (a tool called `__proto__` stays a key). */
  const put = (o, k, v) => Object.defineProperty(o, k, { value: v, writable: true, enumerable: true, configurable: true });
  const clone = (v) => (v === undefined ? undefined : JSON.parse(JSON.stringify(v)));
  const isPattern = (key) => /[*?/]/.test(key) || /^(category|severity):/.test(key);
  /** One reference token of a JSON pointer (RFC 6901). */
  const esc = (t) => String(t).replace(/~/g, "~0").replace(/\//g, "~1");
  const toolPointer = (name) => `/tools/${esc(name)}`;
  let uid = 0;

  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "text") e.textContent = v;
      else if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (k === "value") e.value = v;
      else if (k === "checked") e.checked = !!v;
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) e.append(c);
    return e;
  }

  /** A labelled control: `<span class="pb-field"><label for>…</label>control</span>`. */
  function field(label, control, extraClass) {
    if (!control.id) control.id = `pb-c${++uid}`;
    return el("span", { class: `pb-field${extraClass ? ` ${extraClass}` : ""}` }, el("label", { for: control.id, text: label }), control);
  }

  function select(options, value, attrs = {}) {
    const s = el("select", attrs);
    const known = options.some(([v]) => v === value);
    if (!known && value !== undefined && value !== null && value !== "") {
      s.append(el("option", { value: String(value), text: String(value) }));
    }
    for (const [v, label] of options) s.append(el("option", { value: v, text: label }));
    s.value = value === undefined || value === null ? "" : String(value);
    return s;
  }

  function setStatus(text, kind) {
    ui.status.textContent = text;
    ui.status.className = kind || "";
  }

  async function api(method, url, body) {
    const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.headers["X-CSRF-Token"] = csrf;
      init.body = JSON.stringify(body);
    }
    let r;
    try {
      r = await fetch(url, init);
    } catch (e) {
      return { ok: false, status: 0, data: { error: `toolgate cannot be reached (${e.message})` } };
    }
    const data = await r.json().catch(() => ({}));
    if (r.status === 401) data.error = "Your session has ended: log in again (reload the page).";
    if (!data.error && !r.ok) data.error = `HTTP ${r.status}`;
    return { ok: r.ok, status: r.status, data };
  }

  // ---- JSON text ---------------------------------------------------------------------------

  function compact(v) {
    if (Array.isArray(v)) return `[${v.map(compact).join(", ")}]`;
    if (isObj(v)) return `{${Object.keys(v).map((k) => `${JSON.stringify(k)}: ${compact(v[k])}`).join(", ")}}`;
    return JSON.stringify(v);
  }

  /** Two-space indentation; small objects and arrays stay on one line, as people write policies. */
  function pretty(v, indent = "", used = 0, expand = false) {
    if (!isObj(v) && !Array.isArray(v)) return JSON.stringify(v);
    const one = compact(v);
    if (!expand && indent.length + used + one.length <= 96) return one;
    const inner = `${indent}  `;
    if (Array.isArray(v)) {
      if (v.length === 0) return "[]";
      return `[\n${v.map((x) => inner + pretty(x, inner, 1)).join(",\n")}\n${indent}]`;
    }
    const keys = Object.keys(v);
    if (keys.length === 0) return "{}";
    const lines = keys.map((k) => {
      const key = `${JSON.stringify(k)}: `;
      // The top level and the `tools` map show one member a line, whatever their size.
      const open = indent === "" && k === "tools";
      return inner + key + pretty(v[k], inner, key.length + 1, open);
    });
    return `{\n${lines.join(",\n")}\n${indent}}`;
  }

  const textOf = (doc) => `${pretty(doc, "", 0, true)}\n`;

  // ---- the model: what each tool's row says ----------------------------------------------

  function globMatch(glob, name) {
    const re = new RegExp(`^${glob.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".")}$`);
    return re.test(name);
  }

  function toolsMap() {
    return isObj(get(state.doc, "tools")) ? state.doc.tools : null;
  }

  function hideList() {
    return Array.isArray(get(state.doc, "hide")) ? state.doc.hide : [];
  }

  /** The patterns (not exact names) of `hide` or `tools` that select a tool. */
  function patternsFor(tool, list) {
    const names = [tool.exposed, tool.name, `${tool.server}/${tool.name}`];
    const matches = (k) => {
      if (k.startsWith("category:")) return (tool.categories || []).includes(k.slice(9));
      if (k.startsWith("severity:")) return tool.severity === k.slice(9);
      return names.some((n) => n && (globMatch(k, n) || globMatch(k, n.split("/").pop())));
    };
    return list.filter((k) => typeof k === "string" && isPattern(k) && matches(k));
  }

  function hasRules(entry) {
    return isObj(entry) && RULE_FIELDS.some((f) => own(entry, f));
  }

  /** The row a tool's entry is: mode, and a note when something else decides. */
  function modeOf(tool) {
    const name = tool.exposed;
    const hide = hideList();
    if (hide.includes(name)) return { mode: "hide", note: "listed in `hide`" };
    if (hide.includes("*")) return { mode: "hide", note: "every tool is hidden (`hide` holds \"*\")" };
    const hiddenBy = patternsFor(tool, hide.filter((h) => typeof h === "string"));
    if (hiddenBy.length) return { mode: "hide", note: `hidden by the pattern ${hiddenBy.join(", ")} in \`hide\`` };
    const entry = get(toolsMap(), name);
    const patterns = patternsFor(tool, Object.keys(toolsMap() || {}));
    // Every entry that selects a tool applies: a pattern that denies wins over an exact entry.
    const denying = patterns.filter((k) => get(toolsMap()[k], "action") === "deny");
    if (entry === undefined) {
      if (patterns.length) {
        const rules = patterns.map((k) => toolsMap()[k]);
        const mode = denying.length ? "deny"
          : rules.some(hasRules) ? "custom"
            : rules.some((r) => get(r, "action") === "approve") ? "approve" : "allow";
        return { mode, note: `set by the pattern ${patterns.join(", ")} (edit it in the JSON)`, viaPattern: true };
      }
      if (get(state.doc, "default") === "allow") return { mode: "allow", note: "not listed: allowed by default" };
      return { mode: "hide", note: "not listed: hidden by `default: deny`" };
    }
    const also = denying.length ? `denied anyway by the pattern ${denying.join(", ")} (edit it in the JSON)`
      : patterns.length ? `the pattern ${patterns.join(", ")} applies too (edit it in the JSON)` : "";
    if (!isObj(entry)) return { mode: "custom", note: "this entry is not an object: fix it in the JSON", broken: true };
    if (entry.action === "deny") return { mode: "deny", note: also };
    if (hasRules(entry) || state.custom.has(name)) return { mode: "custom", note: also };
    if (entry.action === "approve") return { mode: "approve", note: also };
    return { mode: "allow", note: also };
  }

  function ensureTools() {
    if (!isObj(get(state.doc, "tools"))) put(state.doc, "tools", {});
    return state.doc.tools;
  }

  function setHidden(name, hidden) {
    let hide = hideList();
    if (hidden) {
      if (!own(state.doc, "hide") || !Array.isArray(state.doc.hide)) put(state.doc, "hide", (hide = []));
      if (!hide.includes(name)) hide.push(name);
    } else if (hide.includes(name)) {
      state.doc.hide = hide.filter((h) => h !== name);
      if (state.doc.hide.length === 0) delete state.doc.hide;
    }
  }

  /** The tool's entry, created when missing. */
  function entryFor(name) {
    const tools = ensureTools();
    if (!isObj(get(tools, name))) put(tools, name, {});
    return tools[name];
  }

  /** Keys of `from` worth keeping whatever the treatment (descriptions, unknown fields). */
  function kept(from) {
    const out = {};
    if (!isObj(from)) return out;
    for (const k of Object.keys(from)) {
      if (!["action", "approval", "on_deny", "reason", ...RULE_FIELDS].includes(k)) put(out, k, clone(from[k]));
    }
    return out;
  }

  function setMode(tool, mode) {
    const name = tool.exposed;
    const tools = toolsMap();
    const prev = get(tools, name);
    if (isObj(prev) && hasRules(prev)) state.stash[name] = clone(prev);
    state.custom.delete(name);
    setHidden(name, mode === "hide");
    const base = kept(prev);
    const carry = (keys, entry) => {
      for (const k of keys) if (own(prev, k)) put(entry, k, clone(prev[k]));
      return entry;
    };
    let entry;
    switch (mode) {
      case "hide":
        entry = undefined;
        break;
      case "allow":
        entry = get(state.doc, "default") === "allow" && Object.keys(base).length === 0 ? undefined : base;
        break;
      case "deny":
        entry = carry(["on_deny", "reason"], { ...base, action: "deny" });
        break;
      case "approve":
        entry = carry(["approval", "on_deny", "reason"], { ...base, action: "approve" });
        break;
      case "custom": {
        const from = hasRules(prev) ? prev : state.stash[name] || prev;
        entry = isObj(from) ? clone(from) : {};
        if (entry.action === "deny") delete entry.action;
        if (entry.action !== "approve" && !hasConditionalApproval(entry)) delete entry.approval;
        state.custom.add(name);
        break;
      }
    }
    if (entry === undefined) {
      if (tools) delete tools[name];
    } else {
      put(ensureTools(), name, entry);
    }
  }

  const hasConditionalApproval = (entry) => own(entry, "approve_if") || own(entry, "approve_unless");

  /** Predicate values are typed as JSON when they parse (`10000`, `["a","b"]`, `true`), else as text. */
  function parseValue(text) {
    if (text.trim() === "") return undefined;
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }

  function showValue(v) {
    if (v === undefined) return "";
    if (typeof v === "string") {
      try {
        JSON.parse(v);
        return JSON.stringify(v); // text that would read as JSON keeps its quotes
      } catch {
        return v;
      }
    }
    return JSON.stringify(v);
  }

  const words = (text) => text.split(/[\s,]+/).filter(Boolean);

  // ---- changes: the form writes the JSON --------------------------------------------------

  /** After a form change: the JSON follows, and the draft is checked. */
  function commit(redraw) {
    ui.json.value = textOf(state.doc);
    state.parsed = true;
    ui.jsonError.textContent = "";
    if (redraw) render();
    updateDirty();
    scheduleCheck();
  }

  /** After an edit of the JSON: the rows follow (when it parses), and the draft is checked. */
  function fromText() {
    const text = ui.json.value;
    try {
      const doc = JSON.parse(text);
      if (!isObj(doc)) throw new Error("a policy is a JSON object { … }");
      state.doc = doc;
      state.parsed = true;
      ui.jsonError.textContent = "";
      render();
    } catch (e) {
      state.parsed = false;
      ui.jsonError.textContent = `The JSON does not parse (${e.message}); the rows show the last version that did. Fix the JSON to use the form again.`;
      ui.rowsFieldset.disabled = true;
      ui.def.disabled = true;
      ui.description.disabled = true;
    }
    updateDirty();
  }

  function updateDirty() {
    const dirty = state.saved !== null && ui.json.value !== state.saved;
    ui.dirty.textContent = dirty ? "Unsaved changes" : "";
    return dirty;
  }

  // ---- rendering ---------------------------------------------------------------------------

  /** Every tool a row is shown for: the servers' tools, then exact names only the policy knows. */
  function rowTools() {
    const rows = state.tools.map((t) => ({ ...t }));
    const seen = new Set(rows.map((t) => t.exposed));
    const extra = [...Object.keys(toolsMap() || {}), ...hideList().filter((h) => typeof h === "string")];
    for (const name of extra) {
      if (!seen.has(name) && !isPattern(name) && name !== "") {
        seen.add(name);
        rows.push({ server: "", name, exposed: name, title: "", categories: [], severity: null, offline: true });
      }
    }
    return rows;
  }

  function render() {
    const active = document.activeElement;
    const focusId = active && active.id && ui.rowsFieldset.contains(active) ? active.id : null;
    const caret = focusId && typeof active.selectionStart === "number" ? [active.selectionStart, active.selectionEnd] : null;
    uid = 0;
    ui.rowsFieldset.disabled = !state.doc;
    ui.def.disabled = !state.doc;
    ui.description.disabled = !state.doc;
    if (!state.doc) {
      ui.tools.replaceChildren();
      ui.others.replaceChildren();
      return;
    }
    ui.def.value = get(state.doc, "default") === "allow" ? "allow" : "deny";
    ui.description.value = typeof get(state.doc, "description") === "string" ? state.doc.description : "";
    const rows = rowTools();
    ui.tools.replaceChildren(...rows.map(renderTool));
    if (rows.length === 0) ui.tools.append(el("li", { class: "empty", text: "No server offers a tool yet." }));
    renderOthers();
    renderTryTools(rows);
    markDiagnostics();
    if (focusId) {
      const again = document.getElementById(focusId);
      if (again) {
        again.focus();
        if (caret && typeof again.setSelectionRange === "function") {
          try { again.setSelectionRange(...caret); } catch { /* not a text control */ }
        }
      }
    }
  }

  function renderTool(tool, index) {
    const name = tool.exposed;
    const { mode, note, broken, viaPattern } = modeOf(tool);
    const key = `pb-t${index}`;
    const li = el("li", { class: `pb-tool pb-mode-${mode}`, "data-tool": name, "data-mode": mode, "data-pointer": toolPointer(name) });
    const head = el("div", { class: "pb-tool-head" },
      el("strong", { class: "pb-tool-name", id: `${key}-name`, text: name }),
      tool.server && tool.name !== name ? el("span", { class: "empty", text: ` ${tool.server}/${tool.name}` }) : null,
      tool.server && tool.name === name ? el("span", { class: "empty", text: ` on ${tool.server}` }) : null,
      tool.severity ? el("span", { class: `badge ${tool.severity}`, text: tool.severity }) : null,
      (tool.categories || []).length ? el("span", { class: "empty pb-cats", text: tool.categories.join(", ") }) : null,
      tool.offline ? el("span", { class: "empty", text: "not offered by any server now" }) : null);
    if (tool.title && tool.title !== name) head.append(el("span", { class: "pb-title", text: tool.title }));
    li.append(head);

    const group = el("fieldset", { class: "pb-modes", "aria-describedby": note ? `${key}-note` : null },
      el("legend", { class: "sr-only", text: `Treatment of ${name}` }));
    for (const [value, label] of MODES) {
      const input = el("input", {
        type: "radio", name: `${key}-mode`, id: `${key}-mode-${value}`, value, checked: mode === value,
        onchange: () => {
          setMode(tool, value);
          commit(true);
          const now = modeOf(tool);
          if (now.mode !== value) setStatus(`${name} stays ${now.mode === "hide" ? "hidden" : now.mode}: ${now.note}.`, "error");
          else if (now.note.startsWith("denied anyway")) setStatus(`${name} is ${now.note}.`, "error");
          document.querySelector(`input[name="${key}-mode"]:checked`)?.focus();
        },
      });
      group.append(el("label", { for: input.id, class: "pb-mode" }, input, el("span", { text: label })));
    }
    li.append(group);
    if (note) li.append(el("p", { class: "empty pb-note", id: `${key}-note`, text: note }));

    const entry = get(toolsMap(), name);
    const ptr = toolPointer(name);
    if (!viaPattern && isObj(entry)) {
      if (mode === "deny") li.append(denyFields(entry, ptr, key, name));
      if (mode === "approve") li.append(approvalFields(entry, ptr, key, name));
      if (mode === "custom" && !broken) li.append(customEditor(entry, ptr, key, name));
    }
    li.append(el("ul", { class: "pb-row-errors error", id: `${key}-errors` }));
    return li;
  }

  /** A text input bound to `obj[k]` (removed when emptied). */
  function textInput(obj, k, pointer, attrs = {}, toValue = (s) => (s === "" ? undefined : s), fromValue = (v) => (v === undefined ? "" : String(v))) {
    return el("input", {
      type: "text", autocomplete: "off", ...attrs, "data-pointer": pointer, value: fromValue(get(obj, k)),
      oninput: (e) => {
        const v = toValue(e.target.value);
        if (v === undefined) delete obj[k];
        else put(obj, k, v);
        commit(false);
      },
    });
  }

  function denyFields(entry, ptr, key, name) {
    const k = own(entry, "reason") && !own(entry, "on_deny") ? "reason" : "on_deny";
    return el("div", { class: "pb-fields" },
      field(`Message to the agent when ${name} is refused`, textInput(entry, k, `${ptr}/${k}`, { id: `${key}-on-deny`, placeholder: "this tool is denied by policy" }), "pb-grow"));
  }

  function approvalFields(entry, ptr, key, name) {
    const approval = () => {
      if (!isObj(get(entry, "approval"))) put(entry, "approval", {});
      return entry.approval;
    };
    const current = isObj(get(entry, "approval")) ? entry.approval : {};
    const tidy = () => {
      if (isObj(get(entry, "approval")) && Object.keys(entry.approval).length === 0) delete entry.approval;
    };
    const timeout = el("input", {
      type: "text", id: `${key}-timeout`, autocomplete: "off", placeholder: "e.g. 10m", size: 8,
      "data-pointer": `${ptr}/approval/timeout`, value: typeof current.timeout === "string" ? current.timeout : "",
      oninput: (e) => {
        const v = e.target.value.trim();
        if (v) put(approval(), "timeout", v);
        else if (isObj(get(entry, "approval"))) delete entry.approval.timeout;
        tidy();
        commit(false);
      },
    });
    const approvers = el("input", {
      type: "text", id: `${key}-approvers`, autocomplete: "off", placeholder: "anyone with the admin role",
      "data-pointer": `${ptr}/approval/approvers`,
      value: Array.isArray(current.approvers) ? current.approvers.join(", ") : "",
      oninput: (e) => {
        const list = words(e.target.value);
        if (list.length) put(approval(), "approvers", list);
        else if (isObj(get(entry, "approval"))) delete entry.approval.approvers;
        tidy();
        commit(false);
      },
    });
    return el("div", { class: "pb-fields", "data-pointer": `${ptr}/approval` },
      field(`Approval timeout for ${name}`, timeout),
      field(`Approvers of ${name} (comma-separated)`, approvers, "pb-grow"));
  }

  function customEditor(entry, ptr, key, name) {
    const box = el("div", { class: "pb-custom", id: `${key}-custom` });
    // Rate limits.
    const limits = Array.isArray(get(entry, "limits")) ? entry.limits : null;
    const lf = el("fieldset", { class: "pb-group", "data-pointer": `${ptr}/limits` }, el("legend", { text: `Rate limits of ${name}` }));
    (limits || []).forEach((limit, i) => lf.append(limitRow(entry, limit, i, `${ptr}/limits/${i}`, `${key}-l${i}`, name)));
    if (!limits || limits.length === 0) lf.append(el("p", { class: "empty", text: "No limit." }));
    lf.append(el("button", {
      type: "button", id: `${key}-add-limit`, text: "Add a limit", "aria-label": `Add a rate limit to ${name}`,
      onclick: () => {
        if (!Array.isArray(get(entry, "limits"))) put(entry, "limits", []);
        const used = new Set(entry.limits.map((l) => l && l.counter));
        let counter = `${name}_rate`;
        for (let n = 2; used.has(counter); n++) counter = `${name}_rate_${n}`;
        entry.limits.push({ counter, window: "minute", max: 10, scope: "grant" });
        state.custom.add(name);
        commit(true);
        document.getElementById(`${key}-l${entry.limits.length - 1}-counter`)?.focus();
      },
    }));
    box.append(lf);

    // Argument rules, from all four lists.
    const rf = el("fieldset", { class: "pb-group" }, el("legend", { text: `Argument rules of ${name}` }));
    let count = 0;
    for (const [kind] of RULE_KINDS) {
      const list = get(entry, kind);
      if (!Array.isArray(list)) continue;
      list.forEach((pred, i) => {
        rf.append(ruleRow(entry, kind, pred, i, `${ptr}/${kind}/${i}`, `${key}-${kind}-${i}`, name, ++count));
      });
    }
    if (count === 0) rf.append(el("p", { class: "empty", text: "No argument rule." }));
    rf.append(el("button", {
      type: "button", id: `${key}-add-rule`, text: "Add an argument rule", "aria-label": `Add an argument rule to ${name}`,
      onclick: () => {
        if (!Array.isArray(get(entry, "require"))) put(entry, "require", []);
        entry.require.push({ path: "args.", op: "eq", value: "" });
        state.custom.add(name);
        commit(true);
        document.getElementById(`${key}-require-${entry.require.length - 1}-path`)?.focus();
      },
    }));
    box.append(rf);

    // What else a custom entry says: a message, approval for every call.
    const more = el("div", { class: "pb-fields" });
    const k = own(entry, "reason") && !own(entry, "on_deny") ? "reason" : "on_deny";
    more.append(field(`Message to the agent when a call of ${name} is refused`,
      textInput(entry, k, `${ptr}/${k}`, { id: `${key}-on-deny`, placeholder: "the rule's own message" }), "pb-grow"));
    const every = el("input", {
      type: "checkbox", id: `${key}-every`, checked: entry.action === "approve", "data-pointer": `${ptr}/action`,
      onchange: (e) => {
        if (e.target.checked) entry.action = "approve";
        else {
          delete entry.action;
          if (!hasConditionalApproval(entry)) delete entry.approval;
        }
        state.custom.add(name);
        commit(true);
      },
    });
    more.append(el("span", { class: "pb-field pb-check" }, every, el("label", { for: every.id, text: "Every call also waits for a human" })));
    box.append(more);
    if (entry.action === "approve" || hasConditionalApproval(entry)) box.append(approvalFields(entry, ptr, key, name));
    return box;
  }

  function limitRow(entry, limit, i, ptr, key, name) {
    const row = el("fieldset", { class: "pb-item", "data-pointer": ptr }, el("legend", { class: "sr-only", text: `Limit ${i + 1} of ${name}` }));
    if (!isObj(limit)) {
      row.append(el("p", { class: "error", text: "This limit is not an object: fix it in the JSON." }));
      return row;
    }
    const counter = textInput(limit, "counter", `${ptr}/counter`, { id: `${key}-counter`, placeholder: "counter name", size: 18 });
    const windowSel = select(WINDOWS.map((w) => [w, w]), limit.window, {
      id: `${key}-window`, "data-pointer": `${ptr}/window`,
      onchange: (e) => { limit.window = e.target.value; commit(false); },
    });
    const max = el("input", {
      type: "number", min: 0, step: 1, id: `${key}-max`, "data-pointer": `${ptr}/max`, class: "pb-num",
      value: limit.max === undefined ? "" : String(limit.max),
      oninput: (e) => {
        const t = e.target.value.trim();
        if (t === "") delete limit.max;
        else limit.max = /^\d+$/.test(t) ? Number(t) : t;
        commit(false);
      },
    });
    const scope = select(SCOPES, limit.scope === undefined ? "grant" : limit.scope, {
      id: `${key}-scope`, "data-pointer": `${ptr}/scope`,
      onchange: (e) => { limit.scope = e.target.value; commit(false); },
    });
    const sliding = el("input", {
      type: "checkbox", id: `${key}-sliding`, checked: limit.sliding === true, "data-pointer": `${ptr}/sliding`,
      onchange: (e) => {
        if (e.target.checked) limit.sliding = true;
        else delete limit.sliding;
        commit(false);
      },
    });
    const remove = el("button", {
      type: "button", class: "pb-remove", text: "Remove", "aria-label": `Remove limit ${i + 1} of ${name}`,
      onclick: () => {
        entry.limits.splice(i, 1);
        if (entry.limits.length === 0) delete entry.limits;
        commit(true);
        document.getElementById(`${key.replace(/-l\d+$/, "")}-add-limit`)?.focus();
      },
    });
    row.append(el("div", { class: "pb-fields" },
      field("Counter", counter), field("Window", windowSel), field("Max calls", max), field("Scope", scope),
      el("span", { class: "pb-field pb-check" }, sliding, el("label", { for: sliding.id, text: "Sliding window" })),
      el("span", { class: "pb-field" }, remove)));
    return row;
  }

  function ruleRow(entry, kind, pred, i, ptr, key, name, n) {
    const row = el("fieldset", { class: "pb-item", "data-pointer": ptr }, el("legend", { class: "sr-only", text: `Argument rule ${n} of ${name}` }));
    if (!isObj(pred)) {
      row.append(el("p", { class: "error", text: "This rule is not an object: fix it in the JSON." }));
      return row;
    }
    const move = (toKind) => {
      entry[kind].splice(i, 1);
      if (entry[kind].length === 0) delete entry[kind];
      if (!Array.isArray(get(entry, toKind))) put(entry, toKind, []);
      entry[toKind].push(pred);
      if (!hasConditionalApproval(entry) && entry.action !== "approve") delete entry.approval;
      state.custom.add(name);
      commit(true);
      document.getElementById(`${key.replace(new RegExp(`-${kind}-\\d+$`), "")}-${toKind}-${entry[toKind].length - 1}-kind`)?.focus();
    };
    const kindSel = select(RULE_KINDS, kind, { id: `${key}-kind`, onchange: (e) => move(e.target.value) });
    const path = textInput(pred, "path", `${ptr}/path`, { id: `${key}-path`, placeholder: "args.name", size: 16 });
    const op = select(OPS.map((o) => [o, o]), pred.op, {
      id: `${key}-op`, "data-pointer": `${ptr}/op`,
      onchange: (e) => {
        const was = pred.op;
        pred.op = e.target.value;
        if (pred.op === "command" && !isObj(pred.value)) pred.value = { allow_programs: [] };
        else if (was === "command" && pred.op !== "command") delete pred.value;
        if (pred.op === "exists") delete pred.value;
        commit(true);
      },
    });
    const fields = el("div", { class: "pb-fields" }, field("When", kindSel), field("Argument path", path), field("Operator", op));
    if (pred.op === "command") {
      row.append(fields, commandFields(pred, `${ptr}/value`, key));
    } else {
      const value = el(pred.op === "schema" ? "textarea" : "input", {
        id: `${key}-value`, "data-pointer": `${ptr}/value`, autocomplete: "off", spellcheck: "false",
        placeholder: placeholderFor(pred.op), value: showValue(pred.value),
        ...(pred.op === "schema" ? { rows: 3 } : { type: "text" }),
        oninput: (e) => {
          const v = parseValue(e.target.value);
          if (v === undefined) delete pred.value;
          else pred.value = v;
          commit(false);
        },
      });
      fields.append(field("Value (JSON, or text)", value, "pb-grow"));
      row.append(fields);
    }
    row.append(el("div", { class: "pb-fields" }, el("button", {
      type: "button", class: "pb-remove", text: "Remove rule", "aria-label": `Remove argument rule ${n} of ${name}`,
      onclick: () => {
        entry[kind].splice(i, 1);
        if (entry[kind].length === 0) delete entry[kind];
        if (!hasConditionalApproval(entry) && entry.action !== "approve") delete entry.approval;
        commit(true);
        document.getElementById(`${key.replace(new RegExp(`-${kind}-\\d+$`), "")}-add-rule`)?.focus();
      },
    })));
    return row;
  }

  function placeholderFor(op) {
    return {
      in: '["a", "b"]', not_in: '["a", "b"]', lt: "100", lte: "100", gt: "100", gte: "100", regex: "^[a-z]+$",
      exists: "(none; or false)", max_len: "4096", schema: '{"type": "string"}', glob: "/srv/*",
    }[op] || "value";
  }

  /** The shell-aware rule: the programs a command may (or may not) run, and shell features refused. */
  function commandFields(pred, ptr, key) {
    if (!isObj(pred.value)) pred.value = {};
    const rule = pred.value;
    const list = (k, label, hint) => {
      const input = el("input", {
        type: "text", id: `${key}-${k}`, autocomplete: "off", spellcheck: "false", "data-pointer": `${ptr}/${k}`,
        placeholder: hint, value: Array.isArray(rule[k]) ? rule[k].join(" ") : "",
        oninput: (e) => {
          const names = words(e.target.value);
          if (names.length) rule[k] = names;
          else delete rule[k];
          commit(false);
        },
      });
      return field(label, input, "pb-grow");
    };
    const box = el("div", { class: "pb-command", "data-pointer": ptr });
    box.append(el("div", { class: "pb-fields" },
      list("allow_programs", "Programs allowed (space-separated; empty: any)", "ls cat grep"),
      list("deny_programs", "Programs refused (space-separated)", "rm dd mkfs")));
    const deny = Array.isArray(rule.deny) ? rule.deny : [];
    const checks = el("fieldset", { class: "pb-plain pb-fields", "data-pointer": `${ptr}/deny` }, el("legend", { text: "Refuse these shell features" }));
    for (const [feature, label] of FEATURES) {
      const box2 = el("input", {
        type: "checkbox", id: `${key}-deny-${feature}`, checked: deny.includes(feature),
        onchange: (e) => {
          const now = Array.isArray(rule.deny) ? rule.deny.filter((f) => f !== feature) : [];
          if (e.target.checked) now.push(feature);
          const order = FEATURES.map(([f]) => f);
          now.sort((a, b) => order.indexOf(a) - order.indexOf(b));
          if (now.length) rule.deny = now;
          else delete rule.deny;
          commit(false);
        },
      });
      checks.append(el("span", { class: "pb-field pb-check" }, box2, el("label", { for: box2.id, text: label })));
    }
    box.append(checks);
    return box;
  }

  /** What the form does not edit: patterns, `all_tools`, other sections. Shown, kept, edited in the JSON. */
  function renderOthers() {
    const items = [];
    const tools = toolsMap() || {};
    for (const k of Object.keys(tools)) {
      if (isPattern(k)) items.push([`tools → ${k}`, tools[k]]);
    }
    for (const h of hideList()) if (typeof h === "string" && isPattern(h)) items.push([`hide → ${h}`, "hidden"]);
    for (const k of ["all_tools", "resources", "prompts", "audit"]) {
      if (own(state.doc, k)) items.push([k, state.doc[k]]);
    }
    if (items.length === 0) {
      ui.others.replaceChildren();
      return;
    }
    ui.others.replaceChildren(
      el("h3", { text: "Also in this policy (edit in the JSON)" }),
      el("dl", { class: "pb-others" }, ...items.flatMap(([k, v]) => [el("dt", {}, el("code", { text: k })), el("dd", {}, el("code", { text: typeof v === "string" ? v : compact(v) }))])),
    );
  }

  function renderTryTools(rows) {
    const current = ui.tryTool.value;
    ui.tryTool.replaceChildren(...rows.map((t) => el("option", { value: t.exposed, text: t.exposed })));
    if (rows.some((t) => t.exposed === current)) ui.tryTool.value = current;
  }

  // ---- checking ----------------------------------------------------------------------------

  function scheduleCheck() {
    clearTimeout(state.checkTimer);
    ui.check.textContent = "Checking…";
    state.checkTimer = setTimeout(check, 350);
  }

  async function check() {
    const seq = ++state.checkSeq;
    const text = ui.json.value;
    const r = await api("POST", "/api/policy/check", { text });
    if (seq !== state.checkSeq) return; // a newer draft is being checked
    if (!r.ok) {
      ui.check.textContent = `Cannot check the draft: ${r.data.error}`;
      return;
    }
    if (r.data.ok) {
      showDiagnostics([]);
      ui.check.textContent = `Valid: ${r.data.entries} tool ${r.data.entries === 1 ? "entry" : "entries"}, version ${r.data.version}.`;
    } else {
      showDiagnostics(r.data.diagnostics || []);
      const n = (r.data.diagnostics || []).length;
      ui.check.textContent = `${n} problem${n === 1 ? "" : "s"}: this draft cannot be saved.`;
    }
  }

  function showDiagnostics(list) {
    const same = JSON.stringify(list.map((d) => d.text)) === JSON.stringify(state.diagnostics.map((d) => d.text));
    state.diagnostics = list;
    markDiagnostics();
    // Unchanged problems are not announced again at every keystroke.
    if (same) return;
    if (list.length === 0) {
      ui.diagnostics.replaceChildren();
      ui.diagnostics.removeAttribute("role");
      return;
    }
    ui.diagnostics.setAttribute("role", "alert");
    ui.diagnostics.replaceChildren(
      el("p", { class: "error", text: `toolgate check finds ${list.length} problem${list.length === 1 ? "" : "s"} in this draft:` }),
      el("ul", { class: "pb-diag-list" }, ...list.map((d) => el("li", { class: "pb-diag", "data-pointer": d.pointer },
        el("code", { class: "pb-diag-text", text: d.text }), " ",
        el("button", {
          type: "button", class: "pb-link", text: "Show in the JSON", "aria-label": `Show line ${d.line}, column ${d.column} in the JSON`,
          onclick: () => showPosition(d.line, d.column),
        })))),
    );
  }

  /** Moves the caret of the JSON to a diagnostic's line and column (columns count UTF-8 bytes). */
  function showPosition(line, column) {
    const lines = ui.json.value.split("\n");
    let offset = 0;
    for (let i = 0; i < Math.min(line - 1, lines.length); i++) offset += lines[i].length + 1;
    const text = lines[line - 1] || "";
    let bytes = 0, chars = 0;
    const enc = new TextEncoder();
    for (const ch of text) {
      if (bytes >= column - 1) break;
      bytes += enc.encode(ch).length;
      chars += ch.length;
    }
    ui.json.focus();
    ui.json.setSelectionRange(offset + chars, offset + chars);
    const lineHeight = parseFloat(getComputedStyle(ui.json).lineHeight) || 18;
    ui.json.scrollTop = Math.max(0, (line - 3) * lineHeight);
  }

  const within = (pointer, prefix) => pointer === prefix || pointer.startsWith(`${prefix}/`);

  /** Marks the rows and controls the diagnostics point at, and lists each message under its row. */
  function markDiagnostics() {
    for (const e of ui.tools.querySelectorAll("[aria-invalid]")) e.removeAttribute("aria-invalid");
    for (const e of ui.tools.querySelectorAll(".pb-row-errors")) e.replaceChildren();
    for (const e of ui.tools.querySelectorAll(".pb-tool.invalid")) e.classList.remove("invalid");
    const hide = hideList();
    state.diagnostics.forEach((d, n) => {
      for (const li of ui.tools.querySelectorAll(".pb-tool")) {
        const name = li.dataset.tool;
        const hideAt = hide.indexOf(name);
        if (!within(d.pointer, li.dataset.pointer) && !(hideAt >= 0 && within(d.pointer, `/hide/${hideAt}`))) continue;
        li.classList.add("invalid");
        const errors = li.querySelector(".pb-row-errors");
        const id = `${errors.id}-${n}`;
        errors.append(el("li", { id, text: d.hint ? `${d.message} (${d.hint})` : d.message }));
        let best = null;
        for (const c of li.querySelectorAll("[data-pointer]")) {
          if (within(d.pointer, c.dataset.pointer) && (!best || c.dataset.pointer.length > best.dataset.pointer.length)) best = c;
        }
        const target = best && /^(INPUT|SELECT|TEXTAREA)$/.test(best.tagName) ? best : best?.querySelector("input, select, textarea");
        if (target) {
          target.setAttribute("aria-invalid", "true");
          const by = (target.getAttribute("aria-describedby") || "").split(" ").filter(Boolean);
          if (!by.includes(id)) target.setAttribute("aria-describedby", [...by, id].join(" "));
        }
      }
    });
  }

  // ---- loading, saving ---------------------------------------------------------------------

  function stashDraft() {
    if (!state.grant || state.saved === null) return;
    if (ui.json.value !== state.saved) {
      state.drafts[state.grant] = { text: ui.json.value, sha: state.sha, saved: state.saved, path: state.path, tools: state.tools, custom: new Set(state.custom), stash: state.stash };
    } else {
      delete state.drafts[state.grant];
    }
  }

  function describeFile() {
    if (!state.path) {
      ui.file.textContent = "";
      return;
    }
    const file = state.files.find((f) => f.path === state.path);
    const others = (file?.grants || []).filter((g) => g !== state.grant);
    let text = `File ${state.path}`;
    if (state.version) text += ` (version ${state.version})`;
    if (others.length) text += `. It is also the policy of ${others.join(", ")}: saving changes it for them too.`;
    if (file?.error) text += ` The gateway could not load it: ${file.error}`;
    ui.file.textContent = text;
  }

  async function loadGrant(grant, { keepDraft = true } = {}) {
    const seq = ++state.loadSeq;
    state.grant = grant;
    const url = new URL(location.href);
    url.searchParams.set("grant", grant);
    history.replaceState(null, "", url);
    const draft = keepDraft ? state.drafts[grant] : undefined;
    setStatus(`Loading the policy of ${grant}…`);
    const r = await api("GET", `/api/policy?grant=${encodeURIComponent(grant)}`);
    if (seq !== state.loadSeq) return;
    if (!r.ok) {
      state.path = null; state.sha = null; state.saved = null; state.doc = null; state.tools = [];
      ui.json.value = "";
      ui.json.disabled = true;
      render();
      describeFile();
      showDiagnostics([]);
      ui.check.textContent = "";
      updateDirty();
      setStatus(r.status === 409 ? `${grant} has no policy file: ${r.data.error}` : `Cannot load the policy of ${grant}: ${r.data.error}`, "error");
      return;
    }
    const p = r.data;
    ui.json.disabled = false;
    state.path = p.path; state.version = p.version; state.tools = p.tools || [];
    state.custom = draft ? draft.custom : new Set();
    state.stash = draft ? draft.stash : {};
    if (draft && draft.sha === p.sha256) {
      state.sha = draft.sha; state.saved = draft.saved;
      ui.json.value = draft.text;
      setStatus(`Your unsaved draft for ${grant} is back.`);
    } else {
      state.sha = p.sha256; state.saved = p.text;
      ui.json.value = p.text;
      setStatus(draft ? `The file of ${grant} changed on disk since your draft: the draft was dropped.` : "");
    }
    delete state.drafts[grant];
    describeFile();
    state.doc = null;
    fromText();
    if (!state.parsed) render();
    check();
  }

  async function save() {
    if (!state.grant || state.sha === null) {
      setStatus("Nothing to save: choose a grant that has a policy file.", "error");
      return;
    }
    const text = ui.json.value;
    ui.save.disabled = true;
    setStatus("Saving…");
    const r = await api("POST", "/api/policy/save", { grant: state.grant, text, base_sha256: state.sha });
    ui.save.disabled = false;
    if (r.ok) {
      state.sha = r.data.sha256;
      state.saved = text;
      state.version = r.data.version;
      updateDirty();
      describeFile();
      const backup = r.data.backup ? `; the previous file is kept as ${r.data.backup}` : "";
      setStatus(`Saved ${r.data.saved} (version ${r.data.version})${backup}. The gateway uses it now.`, "ok");
      refreshList();
      return;
    }
    if (r.data.diagnostics) showDiagnostics(r.data.diagnostics);
    if (r.status === 409) {
      setStatus(`Not saved: ${r.data.error}. Use “Reload from disk” to get the current file (copy your draft first if you want to keep it).`, "error");
    } else {
      setStatus(`Not saved: ${r.data.error}`, "error");
    }
  }

  async function refreshList() {
    const r = await api("GET", "/api/policies");
    if (r.ok) {
      state.files = r.data.files || [];
      describeFile();
    }
  }

  async function start() {
    const r = await api("GET", "/api/policies");
    if (!r.ok) {
      ui.grant.replaceChildren(el("option", { value: "", text: "(none)" }));
      setStatus(`Cannot list the grants: ${r.data.error}`, "error");
      render();
      return;
    }
    state.grants = r.data.grants || [];
    state.files = r.data.files || [];
    if (state.grants.length === 0) {
      ui.grant.replaceChildren(el("option", { value: "", text: "(no grant)" }));
      setStatus("No grant exists yet: add one on the Grants page.");
      render();
      return;
    }
    ui.grant.replaceChildren(...state.grants.map((g) => el("option", {
      value: g.name,
      text: g.policy ? `${g.name} — ${g.policy.split("/").pop()}` : `${g.name} — no policy file`,
    })));
    const wanted = new URL(location.href).searchParams.get("grant");
    const first = state.grants.find((g) => g.name === wanted) || state.grants.find((g) => g.policy) || state.grants[0];
    ui.grant.value = first.name;
    await loadGrant(first.name);
  }

  // ---- try a call --------------------------------------------------------------------------

  async function tryCall() {
    const out = ui.tryResult;
    let args;
    try {
      args = JSON.parse(ui.tryArgs.value.trim() || "{}");
      if (!isObj(args)) throw new Error("the arguments are a JSON object { … }");
    } catch (e) {
      ui.tryArgs.setAttribute("aria-invalid", "true");
      out.replaceChildren(el("p", { class: "error", text: `The arguments are not valid: ${e.message}` }));
      return;
    }
    ui.tryArgs.removeAttribute("aria-invalid");
    if (!ui.tryTool.value) {
      out.replaceChildren(el("p", { class: "error", text: "Choose a tool first." }));
      return;
    }
    const against = document.querySelector('input[name="pb-try-against"]:checked')?.value || "draft";
    const body = { grant: state.grant, tool: ui.tryTool.value, args };
    if (against === "draft") body.text = ui.json.value;
    out.replaceChildren(el("p", { class: "empty", text: "Asking…" }));
    const r = await api("POST", "/api/policy/explain", body);
    if (!r.ok) {
      out.replaceChildren(el("p", { class: "error", text: `Cannot try it: ${r.data.error}` }),
        ...(r.data.diagnostics || []).map((d) => el("p", {}, el("code", { class: "pb-diag-text", text: d.text }))));
      return;
    }
    const d = r.data;
    const parts = [el("p", { class: "pb-decision" },
      el("span", { class: `pb-verdict pb-verdict-${d.decision}`, "data-decision": d.decision, text: d.decision }),
      d.rule ? [" by ", el("code", { text: d.rule })] : null,
      d.message ? [": ", el("span", { class: "pb-message", text: d.message })] : null)];
    if ((d.fired || []).length) {
      parts.push(el("h3", { text: "Rules that fired" }),
        el("ul", {}, ...d.fired.map((f) => el("li", {}, el("code", { text: f.rule }), ` ${f.effect}`))));
    }
    if ((d.counters || []).length) {
      parts.push(el("h3", { text: "Counters" }), el("ul", {}, ...d.counters.map((c) => el("li", { class: c.would_exceed ? "error" : "" },
        el("code", { text: c.counter }),
        ` ${c.used} of ${c.max} used this ${c.window} (per ${c.scope}); this call takes ${c.takes}`,
        c.would_exceed ? " and would exceed it" : "",
        c.resets_at ? `; resets at ${typeof c.resets_at === "number" ? new Date(c.resets_at).toISOString() : c.resets_at}` : ""))));
    }
    if (d.approval) {
      const a = d.approval;
      const bits = [];
      if (a.timeout_ms) bits.push(`waits up to ${Math.round(a.timeout_ms / 1000)} s`);
      else if (a.timeout) bits.push(`waits up to ${a.timeout}`);
      if (Array.isArray(a.approvers) && a.approvers.length) bits.push(`approvers: ${a.approvers.join(", ")}`);
      parts.push(el("p", { class: "pb-approval", text: `A human must approve it${bits.length ? ` (${bits.join("; ")})` : ""}.` }));
    }
    out.replaceChildren(...parts);
  }

  // ---- wiring ------------------------------------------------------------------------------

  ui.json.addEventListener("input", () => {
    updateDirty();
    clearTimeout(state.parseTimer);
    state.parseTimer = setTimeout(fromText, 200);
    scheduleCheck();
  });
  ui.def.addEventListener("change", () => {
    if (!state.doc) return;
    state.doc.default = ui.def.value;
    commit(true);
  });
  ui.description.addEventListener("input", () => {
    if (!state.doc) return;
    const v = ui.description.value;
    if (v === "") delete state.doc.description;
    else if (own(state.doc, "description")) state.doc.description = v;
    else {
      // A new description goes after `default`, where people look for it.
      const next = {};
      for (const k of Object.keys(state.doc)) {
        put(next, k, state.doc[k]);
        if (k === "default") put(next, "description", v);
      }
      if (!own(next, "description")) put(next, "description", v);
      state.doc = next;
    }
    commit(false);
  });
  ui.grant.addEventListener("change", () => {
    stashDraft();
    loadGrant(ui.grant.value);
  });
  ui.save.addEventListener("click", save);
  ui.reload.addEventListener("click", () => {
    delete state.drafts[state.grant];
    if (state.grant) loadGrant(state.grant, { keepDraft: false });
  });
  ui.tryRun.addEventListener("click", tryCall);
  // Ctrl+S / Cmd+S saves.
  document.addEventListener("keydown", (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === "s") {
      e.preventDefault();
      save();
    }
  });
  window.addEventListener("beforeunload", (e) => {
    if (updateDirty()) {
      e.preventDefault();
      e.returnValue = "";
    }
  });

  start();
})();
