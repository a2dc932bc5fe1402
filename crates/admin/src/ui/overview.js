// The overview: the last hour's calls and refusals per minute (an SVG bar chart), totals, top
// tools and upstream health, refreshed every 5 s.
const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function chart(perMinute) {
  const width = 720, height = 180, pad = 28;
  const max = Math.max(1, ...perMinute.map((m) => m.calls));
  const bar = (width - pad) / perMinute.length;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height + 20}`, role: "img",
    "aria-label": `Calls per minute over the last hour; at most ${max} in a minute` });
  root.append(svg("text", { x: 0, y: 12, class: "axis" }, String(max)));
  root.append(svg("text", { x: 0, y: height, class: "axis" }, "0"));
  perMinute.forEach((m, i) => {
    const x = pad + i * bar;
    const h = (m.calls / max) * (height - 16);
    const r = (m.refused / max) * (height - 16);
    const g = svg("g", {});
    g.append(svg("title", {}, `${new Date(m.minute).toLocaleTimeString()}: ${m.calls} calls, ${m.refused} refused`));
    g.append(svg("rect", { x, y: height - h, width: Math.max(1, bar - 1), height: h, class: "calls" }));
    if (r > 0) g.append(svg("rect", { x, y: height - r, width: Math.max(1, bar - 1), height: r, class: "refused" }));
    root.append(g);
  });
  root.append(svg("text", { x: pad, y: height + 16, class: "axis" }, "60 min ago"));
  root.append(svg("text", { x: width - 30, y: height + 16, class: "axis" }, "now"));
  return root;
}

async function refresh() {
  const status = document.getElementById("status");
  const { ok, data } = await api("/api/overview");
  if (!ok) return say(status, `Cannot load the overview: ${data.error}`, true);
  say(status, "");
  document.getElementById("calls").textContent = data.totals.calls;
  document.getElementById("refused").textContent = data.totals.refused;
  document.getElementById("pending").replaceChildren(
    data.approvals_pending ? el("a", { href: "/approvals" }, data.approvals_pending) : "0");
  document.getElementById("sessions").textContent = data.sessions;
  document.getElementById("chart").replaceChildren(chart(data.per_minute));
  const most = Math.max(1, ...data.top_tools.map((t) => t.calls));
  document.getElementById("top").replaceChildren(
    ...(data.top_tools.length ? data.top_tools.map((t) => el("tr", {},
      el("td", {}, el("code", {}, `${t.server}/${t.tool}`)),
      el("td", {}, t.calls),
      el("td", { className: t.refused ? "error" : "" }, t.refused),
      el("td", { className: "bar-col" }, el("span", { className: "bar", style: `width:${(100 * t.calls) / most}%` })),
    )) : [el("tr", {}, el("td", { colSpan: 4, className: "empty" }, "No calls in the last hour."))]));
  document.getElementById("health").replaceChildren(...data.servers.map((s) => el("tr", {},
    el("td", {}, s.name, " ", el("span", { className: "empty" }, s.transport)),
    el("td", {}, badge(s.state === "down" ? "down" : "up", s.state === "down" ? "critical" : "good"),
      " ", el("span", { className: "empty" }, s.error || s.state)),
    el("td", {}, s.tools),
    el("td", { className: s.upstream_errors ? "error" : "" }, s.upstream_errors),
  )));
}

refresh();
setInterval(refresh, 5000);
