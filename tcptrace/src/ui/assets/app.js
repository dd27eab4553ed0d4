// tcptrace's web view: three pages drawn from the JSON API, refreshed by polling.
// Every value goes into the page as text (textContent), never as markup; the only
// markup inserted is the server's SVG diagram, parsed as XML (it carries no script,
// and the Content-Security-Policy would refuse one).
"use strict";

const REFRESH_MS = 2000;
const PAGE_SIZE = 50;
const STATES = [
  "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT",
  "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV",
];

// ---- small DOM helpers ------------------------------------------------------------

/** An element with attributes and children (strings become text nodes). */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** A table: `headers` and rows of cells (a cell is text, a node, or [text, class]). */
function table(id, headers, rows, empty) {
  if (rows.length === 0) return el("p", { id, class: "empty" }, empty);
  return el("table", { id },
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((cell) => {
      if (Array.isArray(cell)) return el("td", { class: cell[1] }, cell[0]);
      return el("td", {}, cell);
    })))));
}

function link(href, text) {
  return el("a", { href }, text);
}

function connectionLink(id) {
  return id === null || id === undefined ? "–" : link(`#/connection/${id}`, `#${id}`);
}

// ---- formatting -------------------------------------------------------------------

function seconds(s) {
  if (s === null || s === undefined) return "–";
  if (s < 0.001) return `${(s * 1e6).toFixed(0)}µs`;
  if (s < 1) return `${(s * 1e3).toFixed(2)}ms`;
  if (s < 60) return `${s.toFixed(2)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(Math.floor(s % 60)).padStart(2, "0")}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  return `${Math.floor(s / 86400)}d${Math.floor((s % 86400) / 3600)}h`;
}

function nanos(ns) {
  return seconds(ns / 1e9);
}

function bytes(n) {
  if (n < 10 * 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit + 1 < units.length) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}

function words(name) {
  return name ? String(name).replaceAll("_", " ") : "–";
}

/** Container short id and pod, from the flattened workload fields. */
function workload(row) {
  const parts = [];
  if (row.container) parts.push(`container ${row.container.id.slice(0, 12)}`);
  if (row.pod_uid) parts.push(`pod ${row.pod_uid}`);
  return parts.length ? parts.join(", ") : "host";
}

function owner(o) {
  return o ? `${o.comm} (pid ${o.pid})` : "unknown";
}

// ---- fetching ---------------------------------------------------------------------

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function getJson(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new HttpError(response.status, body.error || response.statusText);
  return body;
}

function setStatus(text, bad) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.classList.toggle("bad", Boolean(bad));
}

// ---- routing ----------------------------------------------------------------------

/** The page the hash names: {page, params, id}. */
function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  const one = path.match(/^\/connection\/(\d+)$/);
  if (one) return { page: "connection", id: one[1], params };
  if (path === "/connections") return { page: "connections", params };
  return { page: "overview", params };
}

// ---- overview ---------------------------------------------------------------------

function section(id, title, ...body) {
  const wide = ["leaks", "listeners", "time-wait", "diagram-card"].includes(id);
  return el("section", { id, class: wide ? "card wide" : "card" }, el("h2", {}, title), ...body);
}

function healthSection(h) {
  const attached = h.programs.filter((p) => p.attached).length;
  const lostClass = h.events_lost + h.events_missed > 0 ? "bad" : "good";
  const programsClass = attached === h.programs.length && attached > 0 ? "good" : "bad";
  return section("health", "tcptrace itself",
    el("dl", { class: "facts" },
      el("dt", {}, "events"), el("dd", { id: "health-events" }, h.events.toLocaleString("en")),
      el("dt", {}, "lost or missed"),
      el("dd", { id: "health-lost", class: lostClass },
        `${h.events_lost.toLocaleString("en")} lost, ${h.events_missed.toLocaleString("en")} missed`),
      el("dt", {}, "programs attached"),
      el("dd", { id: "health-programs", class: programsClass }, `${attached} of ${h.programs.length}`),
      el("dt", {}, "tracked"),
      el("dd", { id: "health-tracked" },
        `${h.tracked_connections.toLocaleString("en")} of ${h.tracked_connections_limit.toLocaleString("en")} connections`),
      el("dt", {}, "version"), el("dd", {}, h.version)),
    el("ul", { class: "programs" }, h.programs.map((p) =>
      el("li", { class: p.attached ? "good" : "bad" }, `${p.attached ? "✓" : "✗"} ${p.program}`))));
}

function closeWaitSection(cw) {
  const summary = cw.stuck === 0
    ? el("p", { class: "good" }, `No connection has stayed in CLOSE_WAIT longer than ${seconds(cw.threshold_seconds)}.`)
    : el("p", { class: "bad", id: "leak-summary" },
      `${cw.stuck} connections stuck in CLOSE_WAIT (the peer closed, the application never did), ` +
      `oldest ${seconds(cw.oldest_age_seconds)}, ${bytes(cw.unread_bytes)} unread.`);
  const processes = table("leaks-by-process",
    ["pid", "command", "container / pod", "netns", "stuck sockets", "oldest"],
    cw.by_process.map((p) => [
      [p.pid === null ? "unknown" : String(p.pid), "pid"],
      p.comm || "–",
      [p.container || p.pod_uid ? [p.container && `container ${p.container}`, p.pod_uid && `pod ${p.pod_uid}`].filter(Boolean).join(", ") : "host", "workload"],
      String(p.netns),
      [String(p.leaks), "count"],
      seconds(p.oldest_age_seconds),
    ]),
    "No leaking process.");
  const other = cw.other_leaks > 0 ? el("p", {}, `…and ${cw.other_leaks} in other processes.`) : null;
  const oldest = cw.oldest.length === 0 ? null : el("details", {},
    el("summary", {}, "Oldest stuck connections"),
    table("oldest-leaks", ["connection", "local", "remote", "owner", "container / pod", "age", "unread"],
      cw.oldest.map((l) => [
        connectionLink(l.id), l.local, l.remote, owner(l.owner), workload(l),
        `${l.age_is_lower_bound ? "≥ " : ""}${seconds(l.age_seconds)}`, bytes(l.unread_bytes),
      ]), ""));
  return section("leaks", "Stuck CLOSE_WAIT (socket leaks)", summary, processes, other, oldest);
}

function halfOpenSection(h) {
  return section("half-open", "Half-open suspects",
    el("p", {}, h.count === 0
      ? `No peer has gone unanswered longer than ${seconds(h.threshold_seconds)}.`
      : `${h.count} connections whose peer stopped answering; longest ${seconds(h.oldest_unanswered_seconds)}.`),
    table("half-open-table", ["connection", "state", "local", "remote", "owner", "container / pod", "unanswered"],
      h.suspects.map((s) => [
        connectionLink(s.id), s.state, s.local, s.remote, owner(s.owner), workload(s), seconds(s.unanswered_seconds),
      ]), ""));
}

function fillBar(ratio) {
  const percent = Math.min(100, Math.round(ratio * 100));
  const level = ratio >= 0.9 ? "bad" : ratio >= 0.5 ? "warn" : "good";
  const fill = el("span", { class: "fill" });
  // Through the CSSOM: the Content-Security-Policy refuses style attributes.
  fill.style.width = `${percent}%`;
  return el("span", { class: `bar ${level}`, title: `${percent}%` }, fill, el("span", { class: "pct" }, `${percent}%`));
}

function listenersSection(l) {
  return section("listeners", "Listeners by accept queue fill",
    el("p", {}, `${l.total} listening sockets${l.truncated ? ", the fullest shown" : ""}.`),
    table("listeners-table", ["address", "netns", "owner", "container / pod", "queue fill", "accept queue", "SYN_RECV"],
      l.listeners.map((x) => [
        x.local, String(x.netns), owner(x.owner), workload(x), fillBar(x.fill_ratio),
        `${x.accept_queue} / ${x.accept_queue_limit}`, String(x.syn_recv),
      ]), "No listener."));
}

function timeWaitSection(t) {
  const range = t.port_range ? `${t.port_range.low}–${t.port_range.high}` : "unknown";
  return section("time-wait", "TIME_WAIT and ephemeral ports",
    el("p", {}, `${t.total.toLocaleString("en")} sockets in TIME_WAIT; ephemeral port range ${range}.`),
    table("time-wait-namespaces", ["netns", "TIME_WAIT", "port range"],
      t.namespaces.map((n) => [String(n.netns), n.time_wait.toLocaleString("en"),
        `${n.port_range.low}–${n.port_range.high}`]), "No namespace dumped yet."),
    el("h3", {}, "Port pressure (local address → remote, share of the range in use)"),
    table("port-pressure", ["netns", "local address", "remote", "TIME_WAIT", "live", "pressure"],
      t.port_pressure.map((p) => [String(p.netns), p.local_address, p.remote, String(p.time_wait),
        String(p.live), [fillBar(p.ratio), p.flagged ? "bad" : ""]]), "No pressure."),
    el("h3", {}, "Hot remotes"),
    table("time-wait-remotes", ["netns", "remote", "TIME_WAIT"],
      t.top_remotes.map((r) => [String(r.netns), r.remote, r.sockets.toLocaleString("en")]), "None."));
}

async function overviewPage() {
  const o = await getJson("/api/overview");
  const checked = o.checked_at ? `checked ${new Date(o.checked_at).toLocaleTimeString()}` : "waiting for the first check";
  return [
    el("h1", {}, "This host's TCP, now"),
    el("p", { class: "muted" }, `Detectors ${checked}.`),
    el("div", { class: "grid" },
      closeWaitSection(o.close_wait),
      healthSection(o.health),
      halfOpenSection(o.half_open),
      listenersSection(o.listeners),
      timeWaitSection(o.time_wait)),
  ];
}

// ---- connections ------------------------------------------------------------------

const FILTERS = ["state", "port", "netns", "container"];

function connectionsHash(params) {
  const kept = new URLSearchParams();
  for (const [name, value] of params) {
    if (value !== "" && !(name === "offset" && value === "0")) kept.set(name, value);
  }
  const query = kept.toString();
  return `#/connections${query ? `?${query}` : ""}`;
}

function filterForm(params) {
  const input = (name, placeholder, size) =>
    el("input", { name, id: `filter-${name}`, placeholder, size, value: params.get(name) || "" });
  const state = el("select", { name: "state", id: "filter-state" },
    el("option", { value: "" }, "any state"),
    STATES.map((s) => el("option", { value: s }, s)));
  state.value = params.get("state") || "";
  return el("form", {
    id: "filters",
    class: "filters",
    onsubmit: (event) => {
      event.preventDefault();
      const next = new URLSearchParams();
      for (const [name, value] of new FormData(event.target)) next.set(name, String(value).trim());
      location.hash = connectionsHash(next);
    },
  },
  el("label", {}, "state ", state),
  el("label", {}, "port ", input("port", "any", 6)),
  el("label", {}, "netns ", input("netns", "any", 11)),
  el("label", {}, "container or pod ", input("container", "id prefix", 14)),
  el("button", { type: "submit" }, "Filter"),
  el("a", { href: "#/connections", class: "button" }, "Clear"));
}

async function connectionsPage(params) {
  const offset = Math.max(0, parseInt(params.get("offset") || "0", 10) || 0);
  const query = new URLSearchParams({ offset: String(offset), limit: String(PAGE_SIZE) });
  for (const name of FILTERS) if (params.get(name)) query.set(name, params.get(name));
  const list = await getJson(`/api/connections?${query}`);
  const rows = list.connections.map((c) => [
    connectionLink(c.id), [c.state, "state"], c.local, c.remote, String(c.netns), workload(c),
    owner(c.owner), seconds(c.in_state_seconds), String(c.retransmits),
  ]);
  const pageTo = (start) => {
    const next = new URLSearchParams(params);
    next.set("offset", String(start));
    return connectionsHash(next);
  };
  const first = list.connections.length ? offset + 1 : 0;
  const pager = el("div", { class: "pager", id: "pager" },
    offset > 0 ? link(pageTo(Math.max(0, offset - PAGE_SIZE)), "← newer") : el("span", { class: "muted" }, "← newer"),
    el("span", { id: "page-range" }, `${first}–${offset + list.connections.length} of ${list.matching}`),
    list.truncated ? link(pageTo(offset + PAGE_SIZE), "older →") : el("span", { class: "muted" }, "older →"));
  return [
    el("h1", {}, "Connections"),
    el("p", { class: "muted" }, "Live connections, the most recent state change first."),
    filterForm(params),
    pager,
    table("connections-table",
      ["connection", "state", "local", "remote", "netns", "container / pod", "owner", "in state", "retransmits"],
      rows, "No connection matches."),
  ];
}

// ---- one connection ---------------------------------------------------------------

function timelineTable(c) {
  const start = c.steps.length ? c.steps[0].entered_ns : 0;
  const rows = c.steps.map((s, i) => {
    const next = c.steps[i + 1];
    const name = s.state === "CLOSE" && i === c.steps.length - 1 && c.lifecycle.time_wait ? "TIME_WAIT" : s.state;
    return [[name, "state"], `+${nanos(s.entered_ns - start)}`,
      next ? nanos(next.entered_ns - s.entered_ns) : i === c.steps.length - 1 && name !== "CLOSE" && name !== "TIME_WAIT" ? "so far" : "–"];
  });
  // The state before connect() or accept is not part of the story (as in `watch`).
  if (!c.seen_since_start && c.steps.length > 1 && ["CLOSE", "LISTEN"].includes(c.steps[0].state)) rows.shift();
  return table("timeline", ["state", "entered", "lasted"], rows, "No state seen.");
}

function marksList(c) {
  if (c.marks.length === 0) return null;
  const start = c.steps.length ? c.steps[0].entered_ns : 0;
  return el("ul", { id: "marks", class: "marks" }, c.marks.map((m) =>
    el("li", { class: m.kind.startsWith("reset") ? "bad" : "warn" },
      `+${nanos(m.at_ns - start)} ${words(m.kind)}${m.state ? ` in ${m.state}` : ""}`)));
}

function carried(c) {
  const w = c.closed_with;
  if (!w) return el("p", { class: "muted" }, "What it carried is read by the kernel when it closes.");
  const facts = [
    ["sent", bytes(w.bytes_sent)], ["received", bytes(w.bytes_received)],
    ["smoothed RTT", w.srtt_us ? seconds(w.srtt_us / 1e6) : "not measured"],
    ["min RTT", w.min_rtt_us ? seconds(w.min_rtt_us / 1e6) : "not measured"],
    ["segments", `${w.segments_sent} out, ${w.segments_received} in`],
    ["retransmits", String(w.total_retransmits)],
  ];
  if (w.unacked_bytes) facts.push(["never acknowledged", bytes(w.unacked_bytes)]);
  if (w.error) facts.push(["error", String(w.error)]);
  return el("dl", { id: "carried", class: "facts" }, facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

async function diagramNode(c) {
  if (c.peer === undefined || c.peer === null) {
    return el("p", { class: "muted" }, "Its other end is not on this host (or not tracked): no sequence diagram.");
  }
  const response = await fetch(`/api/connections/${c.id}/diagram.svg`);
  if (!response.ok) return el("p", { class: "muted" }, "The sequence diagram is no longer available.");
  const text = await response.text();
  const parsed = new DOMParser().parseFromString(text, "image/svg+xml");
  const svg = parsed.documentElement;
  if (svg.nodeName !== "svg") return el("p", { class: "bad" }, "The diagram did not parse.");
  return document.importNode(svg, true);
}

async function connectionPage(id) {
  let c;
  try {
    c = await getJson(`/api/connections/${id}`);
  } catch (error) {
    if (error.status === 404) {
      return [el("h1", {}, `Connection #${id}`),
        el("p", { class: "bad" }, "Not live, and finished too long ago to be remembered."),
        link("#/connections", "All connections")];
    }
    throw error;
  }
  const state = c.steps.length ? c.steps[c.steps.length - 1].state : "?";
  const life = c.lifecycle;
  const facts = [
    ["state", state === "CLOSE" && life.time_wait ? "closed (TIME_WAIT)" : state],
    ["direction", words(c.direction)], ["owner", owner(c.owner)], ["netns", String(c.netns)],
    ["container / pod", workload(c)],
    ["handshake", life.handshake_ns ? nanos(life.handshake_ns) : "–"],
    ["ended", life.close ? words(life.close) : "still open"],
    ["retransmits", String(c.retransmits)],
  ];
  if (c.peer !== undefined) facts.push(["other end", connectionLink(c.peer)]);
  if (c.close_shape) facts.push(["close", words(c.close_shape)]);
  if (c.seen_since_start) facts.push(["note", "first seen mid-life: its first state began before tcptrace saw it"]);
  return [
    el("h1", {}, `Connection #${c.id}: ${c.local} → ${c.remote}`),
    el("dl", { class: "facts", id: "connection-facts" }, facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
    el("div", { class: "grid" },
      section("timeline-card", "Timeline", timelineTable(c), marksList(c)),
      section("carried-card", "What it carried", carried(c))),
    section("diagram-card", "Sequence diagram", el("div", { id: "diagram" }, await diagramNode(c))),
  ];
}

// ---- the refresh loop -------------------------------------------------------------

let refreshing = false;
// A navigation that came while a refresh was under way: refresh again when it ends.
let again = false;

async function refresh() {
  if (refreshing) {
    again = true;
    return;
  }
  refreshing = true;
  const hash = location.hash;
  const r = route();
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.page === r.page || (r.page === "connection" && a.dataset.page === "connections"));
  }
  try {
    const nodes = r.page === "overview" ? await overviewPage()
      : r.page === "connections" ? await connectionsPage(r.params)
        : await connectionPage(r.id);
    // A newer navigation (another page, offset or filter) may have happened while this
    // page was fetched: then it is not drawn, and the refresh below draws the new one.
    if (location.hash === hash) {
      const main = document.getElementById("main");
      // Keep the filter inputs the user is typing in.
      const focused = document.activeElement && document.activeElement.closest("#filters") ? document.getElementById("filters") : null;
      if (focused) {
        nodes[nodes.findIndex((n) => n.id === "filters")] = focused;
      }
      main.replaceChildren(...nodes);
      setStatus(`updated ${new Date().toLocaleTimeString()}`, false);
    }
  } catch (error) {
    setStatus(`tcptrace did not answer: ${error.message}`, true);
  } finally {
    refreshing = false;
    if (again) {
      again = false;
      refresh();
    }
  }
}

function start() {
  refresh();
  setInterval(() => {
    if (!document.hidden) refresh();
  }, REFRESH_MS);
  window.addEventListener("hashchange", refresh);
}

start();
