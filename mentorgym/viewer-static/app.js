"use strict";
// mentorgym view: the page. Everything that comes from a trajectory or a run (actions,
// observations, tool outputs, labels, configs, file names) is put on the page as text:
// el() and svg() below create nodes and set textContent; nothing here parses HTML.

const PAGE_SIZES = [50, 100, 200];
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d", "#4d7c0f"];
const FOLD_LINES = 30;
const FOLD_CHARS = 4000;
const PREVIEW_LINES = 8;
const RUN_POLL_MS = 2000;
const LIST_POLL_MS = 5000;

let timers = [];
let keyNav = null; // the episode page's arrow keys; cleared on every route
function clearTimers() {
  timers.forEach(clearInterval);
  timers = [];
  keyNav = null;
}
window.addEventListener("keydown", (e) => { if (keyNav) keyNav(e); });

// --- DOM helpers (text only) ------------------------------------------------------------------

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = String(v);
    else if (k === "on") for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
    else if (k === "href") node.setAttribute("href", internalHref(v));
    else node.setAttribute(k, String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// Links the page makes point inside the page only (never a URL taken from data).
function internalHref(v) {
  const s = String(v);
  return s.startsWith("#") ? s : "#/";
}

const SVG_NS = "http://www.w3.org/2000/svg";
function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

// A colour key; set through the style object, since the CSP allows no inline style attributes.
function swatch(color) {
  const i = el("i", { class: "swatch" });
  i.style.background = color;
  return i;
}

function fmt(x, digits = 3) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  if (typeof x !== "number") return String(x);
  if (Number.isInteger(x)) return x.toLocaleString("en-US");
  return Math.abs(x) >= 1000 ? x.toFixed(0) : x.toFixed(digits);
}

async function api(path) {
  const r = await fetch(path, { credentials: "same-origin" });
  if (!r.ok) {
    let msg = await r.text();
    try { msg = JSON.parse(msg).detail || msg; } catch (_) { /* plain text */ }
    throw new Error(`${path}: ${r.status} ${msg}`);
  }
  return r.json();
}

function showErrors(errors, total) {
  const box = document.getElementById("errors");
  box.replaceChildren();
  if (!errors || errors.length === 0) { box.hidden = true; return; }
  box.hidden = false;
  const n = total || errors.length;
  box.append(el("strong", { text: `${n} line(s) could not be read and are left out:` }));
  const ul = el("ul");
  for (const e of errors) {
    ul.append(el("li", {}, el("code", { text: e.file }), ` line ${e.line ?? "?"}: ${e.reason}`));
  }
  if (n > errors.length) ul.append(el("li", { text: `… and ${n - errors.length} more` }));
  box.append(ul);
}

function fail(err) {
  const main = document.getElementById("main");
  main.replaceChildren(el("div", { class: "fatal" }, el("strong", { text: "Error: " }), String(err.message || err)));
}

// --- routing ----------------------------------------------------------------------------------

function parseHash() {
  const h = location.hash.replace(/^#/, "") || "/";
  const [path, query] = h.split("?");
  return { parts: path.split("/").filter(Boolean), params: new URLSearchParams(query || "") };
}

function go(path, params) {
  const q = params ? params.toString() : "";
  location.hash = q ? `${path}?${q}` : path;
}

async function route() {
  clearTimers();
  const { parts, params } = parseHash();
  document.getElementById("nav-runs").classList.toggle("active", parts[0] === "runs");
  document.getElementById("nav-episodes").classList.toggle("active", parts[0] !== "runs");
  try {
    if (parts[0] === "episode" && parts.length === 3) await viewEpisode(Number(parts[1]), Number(parts[2]));
    else if (parts[0] === "runs") await viewRuns(params);
    else await viewList(params);
  } catch (err) {
    fail(err);
  }
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", route);

// --- episode list ----------------------------------------------------------------------------

const MIX = {
  student: () => "student only",
  teacher: () => "teacher only",
  mixed: (e) => `mixed: ${e.student_turns}/${e.turns} student`,
  none: () => "no turns",
};
const FILTERS = ["run", "kind", "iteration", "env", "success", "mix", "min_return", "max_return", "label_diffs", "format_errors", "q", "sort", "limit"];

function select(name, value, options) {
  const s = el("select", { name, "data-filter": name });
  for (const [v, label] of options) {
    const o = el("option", { value: v, text: label });
    if (String(v) === String(value ?? "")) o.selected = true;
    s.append(o);
  }
  return s;
}

async function viewList(params) {
  sessionStorage.setItem("mentorgym-list", location.hash || "#/");
  const cat = await api("api/catalog");
  document.getElementById("source").textContent = cat.path;
  const query = new URLSearchParams();
  for (const k of FILTERS) if (params.get(k)) query.set(k, params.get(k));
  const offset = Number(params.get("offset") || 0);
  query.set("offset", String(offset));
  if (!query.get("limit")) query.set("limit", "50");
  const data = await api(`api/episodes?${query}`);
  showErrors(data.errors, data.error_count);

  const apply = () => {
    const p = new URLSearchParams();
    for (const node of form.querySelectorAll("[data-filter]")) {
      const v = node.type === "checkbox" ? (node.checked ? "1" : "") : node.value.trim();
      if (v) p.set(node.dataset.filter, v);
    }
    go("/", p);
  };
  const runs = cat.runs.map((r) => [r.rid, r.name]);
  const form = el("form", { class: "filters", on: { submit: (e) => { e.preventDefault(); apply(); } } },
    runs.length > 1 ? el("label", {}, "run ", select("run", params.get("run"), [["", "all"], ...runs])) : null,
    el("label", {}, "file ", select("kind", params.get("kind"), [["", "all"], ...data.facets.kinds.map((k) => [k, k])])),
    data.facets.iterations.length ? el("label", {}, "iteration ", select("iteration", params.get("iteration"), [["", "all"], ...data.facets.iterations.map((i) => [i, i])])) : null,
    el("label", {}, "env ", select("env", params.get("env"), [["", "all"], ...data.facets.envs.map((e) => [e, e])])),
    el("label", {}, "result ", select("success", params.get("success"), [["", "all"], ["1", "success"], ["0", "failure"]])),
    el("label", {}, "actors ", select("mix", params.get("mix"), [["", "all"], ["student", "student only"], ["mixed", "student + teacher"], ["teacher", "teacher only"]])),
    el("label", {}, "return ≥ ", el("input", { "data-filter": "min_return", type: "number", step: "any", value: params.get("min_return") || "", class: "num" })),
    el("label", {}, "≤ ", el("input", { "data-filter": "max_return", type: "number", step: "any", value: params.get("max_return") || "", class: "num" })),
    el("label", {}, el("input", { "data-filter": "label_diffs", type: "checkbox", checked: params.get("label_diffs") === "1" }), " label differs"),
    el("label", {}, el("input", { "data-filter": "format_errors", type: "checkbox", checked: params.get("format_errors") === "1" }), " format errors"),
    el("label", {}, "sort ", select("sort", params.get("sort"), [["", "file order"], ["return", "return ↑"], ["-return", "return ↓"], ["-turns", "turns ↓"]])),
    el("input", { "data-filter": "q", type: "search", placeholder: "search actions, messages, labels…", value: params.get("q") || "", class: "search", "aria-label": "search" }),
    el("input", { type: "hidden", "data-filter": "limit", value: params.get("limit") || "" }),
    el("button", { type: "submit", text: "Apply" }),
    el("button", { type: "button", text: "Reset", on: { click: () => go("/") } }),
  );
  for (const s of form.querySelectorAll("select, input[type=checkbox]")) s.addEventListener("change", apply);

  const table = el("table", { class: "episodes" },
    el("thead", {}, el("tr", {}, ["run", "file", "iter", "#", "env", "seed / task", "turns", "actors", "return", "result", "label ≠", "format err", "refused"].map((h) => el("th", { text: h })))));
  const tbody = el("tbody");
  const runName = Object.fromEntries(cat.runs.map((r) => [r.rid, r.name]));
  for (const e of data.items) {
    const href = `#/episode/${e.fid}/${e.k}`;
    const tr = el("tr", { class: e.success ? "ok" : "bad", "data-href": href, on: { click: () => { location.hash = href; } } },
      el("td", { text: e.run === null ? "" : runName[e.run] ?? e.run }),
      el("td", { text: e.kind }),
      el("td", { text: e.iteration ?? "" }),
      el("td", {}, el("a", { href, text: e.k })),
      el("td", { text: e.env_id }),
      el("td", { text: e.task_id ?? e.seed ?? "" }),
      el("td", { class: "n", text: e.turns }),
      el("td", { text: MIX[e.mix] === undefined ? e.mix : MIX[e.mix](e) }),
      el("td", { class: "n", text: fmt(e.return, 2) }),
      el("td", {}, el("span", { class: `badge ${e.success ? "ok" : "bad"}`, text: e.success ? "success" : (e.truncated ? "failure (truncated)" : "failure") })),
      el("td", { class: "n", text: e.label_diffs || "" }),
      el("td", { class: "n", text: e.format_errors || "" }),
      el("td", { text: e.refusals || "", title: "why the grader refused part of the patch" }),
    );
    tbody.append(tr);
  }
  table.append(tbody);

  const pager = (where) => {
    const last = Math.min(offset + data.items.length, data.total);
    const move = (o) => { const p = new URLSearchParams(params); p.set("offset", String(Math.max(0, o))); go("/", p); };
    return el("div", { class: "pager", "data-where": where },
      el("button", { type: "button", text: "‹ prev", disabled: offset <= 0, on: { click: () => move(offset - data.limit) } }),
      el("span", { class: "count", text: data.total ? `${fmt(offset + 1)}–${fmt(last)} of ${fmt(data.total)} episodes` : "no episodes match" }),
      el("button", { type: "button", text: "next ›", disabled: last >= data.total, on: { click: () => move(offset + data.limit) } }),
      select("limit-pick", data.limit, PAGE_SIZES.map((n) => [n, `${n} a page`])),
    );
  };
  // The episode page steps through this page of results (prev/next, arrow keys).
  sessionStorage.setItem("mentorgym-list-items", JSON.stringify(data.items.map((e) => `#/episode/${e.fid}/${e.k}`)));
  const main = document.getElementById("main");
  main.replaceChildren(form, pager("top"), table, pager("bottom"));
  for (const s of main.querySelectorAll("select[name=limit-pick]")) {
    s.addEventListener("change", () => { const p = new URLSearchParams(params); p.set("limit", s.value); p.delete("offset"); go("/", p); });
  }

  // A live run adds episodes: re-query now and then and say so, without losing the filters.
  const total = data.total;
  timers.push(setInterval(async () => {
    try {
      const fresh = await api(`api/episodes?${query}`);
      if (fresh.total !== total) {
        document.getElementById("live").textContent = `${fmt(fresh.total - total)} new episode(s): reloading`;
        route();
      }
    } catch (_) { /* the next poll tries again */ }
  }, LIST_POLL_MS));
}

// --- one episode -----------------------------------------------------------------------------

const GRID_LINE = /^[#$.@*+ _-]+$/;
const CELL = { "#": "wall", " ": "floor", "_": "floor", "-": "floor", "$": "box", ".": "target", "@": "player", "*": "box-on-target", "+": "player-on-target" };

function gridBlock(lines) {
  const width = Math.max(...lines.map((l) => l.length));
  const g = el("div", { class: "grid", role: "img", "aria-label": lines.join("\n") });
  g.style.gridTemplateColumns = `repeat(${width}, 1.5em)`;
  for (const line of lines) {
    for (let i = 0; i < width; i++) {
      const ch = line[i] ?? " ";
      g.append(el("div", { class: `cell ${CELL[ch] || "floor"}`, text: ch === " " ? "" : ch }));
    }
  }
  return g;
}

// Split a Sokoban message into text and grid blocks (3+ rows of grid characters with walls).
function sokobanBlocks(text) {
  const lines = text.split("\n");
  const out = [];
  let buf = [];
  let grid = [];
  const flushGrid = () => {
    if (grid.length >= 3) { if (buf.length) out.push(["text", buf.join("\n")]); buf = []; out.push(["grid", grid]); }
    else buf.push(...grid);
    grid = [];
  };
  for (const line of lines) {
    if (GRID_LINE.test(line) && line.includes("#")) grid.push(line);
    else { flushGrid(); buf.push(line); }
  }
  flushGrid();
  if (buf.length) out.push(["text", buf.join("\n")]);
  return out;
}

function isDiff(text) {
  const marks = text.split("\n").filter((l) => /^(diff --git |--- |\+\+\+ |@@ )/.test(l)).length;
  return marks >= 2;
}

function diffPre(text) {
  const pre = el("pre", { class: "diff" });
  for (const line of text.split("\n")) {
    let cls = "";
    if (/^(diff --git |index |--- |\+\+\+ )/.test(line)) cls = "meta";
    else if (line.startsWith("@@")) cls = "hunk";
    else if (line.startsWith("+")) cls = "add";
    else if (line.startsWith("-")) cls = "del";
    pre.append(el("span", { class: cls, text: line }), "\n");
  }
  return pre;
}

function plainPre(text) {
  return isDiff(text) ? diffPre(text) : el("pre", { text });
}

// Long text folds: a preview and a button that shows all of it.
function folded(text, build) {
  const lines = text.split("\n");
  if (lines.length <= FOLD_LINES && text.length <= FOLD_CHARS) return build(text);
  const preview = lines.slice(0, PREVIEW_LINES).join("\n").slice(0, 1200);
  const box = el("div", { class: "fold" });
  const full = build(text);
  const head = build(preview);
  const btn = el("button", { type: "button", class: "unfold", text: `unfold: ${fmt(lines.length)} lines, ${fmt(text.length)} characters` });
  btn.addEventListener("click", () => {
    const open = box.classList.toggle("open");
    box.replaceChildren(open ? full : head, btn);
    btn.textContent = open ? "fold" : `unfold: ${fmt(lines.length)} lines, ${fmt(text.length)} characters`;
  });
  box.append(head, btn);
  return box;
}

function content(text, ctx) {
  const s = typeof text === "string" ? text : JSON.stringify(text, null, 1);
  if (ctx.sokoban) {
    const blocks = sokobanBlocks(s);
    if (blocks.some(([kind]) => kind === "grid")) {
      return el("div", { class: "content" }, blocks.map(([kind, v]) => (kind === "grid" ? gridBlock(v) : v.trim() ? el("pre", { text: v }) : null)));
    }
  }
  return el("div", { class: "content" }, folded(s, plainPre));
}

function message(m, ctx) {
  const role = typeof m?.role === "string" ? m.role : "?";
  const body = content(m?.content ?? "", ctx);
  if (role === "system") {
    return el("details", { class: "msg role-system" }, el("summary", { text: "system prompt" }), body);
  }
  return el("div", { class: `msg role-${role.replace(/[^a-z]/g, "")}` }, el("div", { class: "role", text: role }), body);
}

function turnView(t, k, ctx) {
  const byTeacher = ctx.teachers.includes(t.actor);
  const info = t.info && typeof t.info === "object" ? t.info : {};
  const timing = t.timing && typeof t.timing === "object" ? t.timing : {};
  const actor = String(t.actor ?? "?");
  const label = t.teacher_action;
  const differs = !byTeacher && typeof label === "string" && label !== t.action;
  const who = byTeacher ? "teacher" : "student";
  const head = el("div", { class: "turn-head" },
    el("h3", { text: `Turn ${k}` }),
    el("span", { class: `badge actor-${who}`, text: actor }),
    el("span", { class: "reward", text: `reward ${fmt(t.reward, 2)}` }),
    info.format_error ? el("span", { class: "badge bad", text: "format error" }) : null,
    differs ? el("span", { class: "badge diff", text: "label differs" }) : null,
    el("span", { class: "muted", text: `policy ${fmt(timing.policy_s, 2)} s · env ${fmt(timing.env_s, 2)} s` }),
  );
  const obs = (Array.isArray(t.observation) ? t.observation : []).map((m) => message(m, ctx));
  let act;
  if (differs) {
    act = el("div", { class: "pair label-diff" },
      el("div", { class: "side student" }, el("div", { class: "role", text: `${actor} wrote` }), content(t.action ?? "", ctx)),
      el("div", { class: "side teacher" }, el("div", { class: "role", text: "teacher's label" }), content(label, ctx)));
  } else {
    act = el("div", { class: `msg role-assistant action actor-${who}` },
      el("div", { class: "role", text: `${actor} wrote` + (typeof label === "string" && !byTeacher ? " · teacher's label agrees" : "") }),
      content(t.action ?? "", ctx));
  }
  const extra = Object.fromEntries(Object.entries(info).filter(([key]) => key !== "model_patch"));
  return el("section", { class: "turn", id: `turn-${k}` }, head, obs, act,
    typeof info.model_patch === "string" && info.model_patch ? el("div", { class: "msg patch" }, el("div", { class: "role", text: "submitted patch" }), folded(info.model_patch, diffPre)) : null,
    Object.keys(extra).length ? el("details", { class: "info" }, el("summary", { text: "info" }), el("pre", { text: JSON.stringify(extra, null, 1) })) : null,
  );
}

async function viewEpisode(fid, k) {
  const data = await api(`api/episode/${fid}/${k}`);
  showErrors([]);
  const ep = data.episode;
  const s = data.summary;
  const ctx = { sokoban: /sokoban/i.test(String(ep.env_id ?? "")), teachers: data.teacher_names };
  const back = sessionStorage.getItem("mentorgym-list") || "#/";
  // Previous / next: within the filtered list this episode was opened from, else within its file.
  const here = `#/episode/${fid}/${k}`;
  let listed = [];
  try { listed = JSON.parse(sessionStorage.getItem("mentorgym-list-items") || "[]"); } catch (_) { listed = []; }
  const at = listed.indexOf(here);
  const prevHref = at >= 0 ? listed[at - 1] : k > 0 ? `#/episode/${fid}/${k - 1}` : undefined;
  const nextHref = at >= 0 ? listed[at + 1] : k + 1 < data.file.episodes ? `#/episode/${fid}/${k + 1}` : undefined;
  const scope = at >= 0 ? `${at + 1} of ${listed.length} listed` : `episode ${k + 1} of ${data.file.episodes} in this file`;
  const where = [data.run_name && `run ${data.run_name}`, data.file.iteration !== null && `iteration ${data.file.iteration}`, data.file.kind].filter(Boolean).join(" · ");
  const header = el("div", { class: "episode-head" },
    el("div", { class: "nav" },
      el("a", { href: back, text: "← episodes" }),
      prevHref ? el("a", { href: prevHref, text: "‹ previous", title: "← key" }) : null,
      nextHref ? el("a", { href: nextHref, text: "next ›", title: "→ key" }) : null,
      el("span", { class: "muted", text: scope })),
    el("h2", {}, `${ep.env_id ?? "?"} · `, ep.task_id !== null && ep.task_id !== undefined ? `task ${ep.task_id}` : `seed ${ep.seed ?? "–"}`),
    el("div", { class: "facts" },
      el("span", { class: `badge ${s.success ? "ok" : "bad"}`, text: s.success ? "success" : "failure" }),
      ep.truncated ? el("span", { class: "badge", text: "truncated" }) : null,
      el("span", { text: `return ${fmt(s.return, 2)}` }),
      el("span", { text: `${s.turns} turns (${s.student_turns} student, ${s.other_turns} teacher)` }),
      s.label_diffs ? el("span", { text: `${s.label_diffs} label difference(s)` }) : null,
      s.format_errors ? el("span", { text: `${s.format_errors} format error(s)` }) : null,
      s.refusals ? el("span", { class: "badge bad", text: `refused: ${s.refusals}` }) : null,
      el("span", { class: "muted", text: where })),
    el("div", { class: "muted small" }, el("code", { text: `${data.file.path}` }), ` line ${s.line} · episode ${k}`,
      ep.meta && Object.keys(ep.meta).length ? ` · meta ${JSON.stringify(ep.meta)}` : ""),
  );
  const turns = (Array.isArray(ep.turns) ? ep.turns : []).map((t, i) => turnView(t, i, ctx));
  const fin = Array.isArray(ep.final_observation) && ep.final_observation.length
    ? el("section", { class: "turn final" }, el("div", { class: "turn-head" }, el("h3", { text: "After the last turn" })), ep.final_observation.map((m) => message(m, ctx)))
    : null;
  document.getElementById("main").replaceChildren(header, ...turns, fin || "");
  window.scrollTo(0, 0);
  keyNav = (e) => {
    if (e.target.closest && e.target.closest("input, select, textarea")) return;
    if (e.key === "ArrowLeft" && prevHref) location.hash = prevHref;
    else if (e.key === "ArrowRight" && nextHref) location.hash = nextHref;
    else if (e.key === "Escape") location.hash = back;
  };
}

// --- runs ------------------------------------------------------------------------------------

function niceTicks(lo, hi, n = 5, integer = false) {
  if (!(hi > lo)) { hi = lo + 1; }
  const span = hi - lo;
  const step0 = Math.pow(10, Math.floor(Math.log10(span / n)));
  const err = (span / n) / step0;
  let step = step0 * (err >= 7.5 ? 10 : err >= 3.5 ? 5 : err >= 1.5 ? 2 : 1);
  if (integer) step = Math.max(1, Math.round(step));
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

// Ticks of a log axis (given in log10 units): 1, 2 and 5 times powers of ten inside the range.
function logTicks(lo, hi) {
  const out = [];
  for (let e = Math.floor(lo); e <= Math.ceil(hi); e++) {
    for (const m of [1, 2, 5]) {
      const v = Math.log10(m) + e;
      if (v >= lo - 1e-9 && v <= hi + 1e-9) out.push(v);
    }
  }
  return out.length >= 2 ? out : niceTicks(lo, hi);
}

function lineChart({ id, title, xLabel, yLabel, series, xMin, xMax, yMin, yMax, logY, integerX }) {
  const W = 560, H = 300, L = 58, R = 16, T = 30, B = 44;
  const pts = series.flatMap((s) => s.points);
  const box = el("figure", { class: "chart", id, "data-points": pts.length });
  box.append(el("figcaption", { text: title }));
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": title });
  if (!pts.length) {
    root.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, "no data yet"));
    box.append(root);
    return box;
  }
  const useLog = logY && pts.every(([, y]) => y > 0);
  const ty = (y) => (useLog ? Math.log10(y) : y);
  let x0 = Math.min(xMin ?? Infinity, ...pts.map((p) => p[0])), x1 = Math.max(xMax ?? -Infinity, ...pts.map((p) => p[0]));
  let y0 = yMin ?? Math.min(...pts.map((p) => ty(p[1]))), y1 = yMax ?? Math.max(...pts.map((p) => ty(p[1])));
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => H - B - ((ty(y) - y0) / (y1 - y0)) * (H - T - B);
  const axes = svg("g", { class: "axes" });
  for (const v of useLog ? logTicks(y0, y1) : niceTicks(y0, y1)) {
    const y = H - B - ((v - y0) / (y1 - y0)) * (H - T - B);
    axes.append(svg("line", { x1: L, x2: W - R, y1: y, y2: y, class: "gridline" }));
    axes.append(svg("text", { x: L - 6, y: y + 4, "text-anchor": "end" }, useLog ? fmt(Math.pow(10, v), 2) : fmt(v, 2)));
  }
  for (const v of niceTicks(x0, x1, 6, integerX)) {
    const x = sx(v);
    axes.append(svg("line", { x1: x, x2: x, y1: H - B, y2: H - B + 4, class: "tick" }));
    axes.append(svg("text", { x, y: H - B + 16, "text-anchor": "middle" }, fmt(v, 1)));
  }
  axes.append(svg("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis" }));
  axes.append(svg("line", { x1: L, x2: L, y1: T, y2: H - B, class: "axis" }));
  axes.append(svg("text", { x: (L + W - R) / 2, y: H - 8, "text-anchor": "middle", class: "label" }, xLabel));
  axes.append(svg("text", { x: 14, y: (T + H - B) / 2, "text-anchor": "middle", class: "label", transform: `rotate(-90 14 ${(T + H - B) / 2})` }, yLabel + (useLog ? " (log)" : "")));
  root.append(axes);
  for (const s of series) {
    if (!s.points.length) continue;
    const g = svg("g", { class: "series", "data-run": s.name });
    g.append(svg("polyline", { points: s.points.map(([x, y]) => `${sx(x)},${sy(y)}`).join(" "), fill: "none", stroke: s.color, "stroke-width": 2 }));
    if (s.points.length <= 60) {
      for (const [x, y] of s.points) {
        const c = svg("circle", { cx: sx(x), cy: sy(y), r: 3, fill: s.color });
        c.append(svg("title", {}, `${s.name}: ${xLabel} ${fmt(x)}, ${yLabel} ${fmt(y)}`));
        g.append(c);
      }
    }
    root.append(g);
  }
  box.append(root);
  box.append(el("div", { class: "legend" }, series.map((s) => el("span", {}, swatch(s.color), s.name))));
  return box;
}

async function viewRuns(params) {
  const cat = await api("api/catalog");
  document.getElementById("source").textContent = cat.path;
  showErrors([]);
  const main = document.getElementById("main");
  if (!cat.runs.length) {
    main.replaceChildren(el("p", { class: "muted", text: `${cat.path} holds no run directory. A run is what \`mentorgym train\` writes: metrics.jsonl, config.yaml and iter_XX/ folders. Open a run directory or a folder of runs to see curves.` }));
    return;
  }
  const chosen = params.get("ids") ? params.get("ids").split(",").map(Number) : cat.runs.slice(0, COLORS.length).map((r) => r.rid);
  const runs = cat.runs.filter((r) => chosen.includes(r.rid));
  const color = Object.fromEntries(cat.runs.map((r, i) => [r.rid, COLORS[i % COLORS.length]]));
  const state = Object.fromEntries(runs.map((r) => [r.rid, { offset: 0, records: [], errors: [] }]));
  const configs = Object.fromEntries(await Promise.all(runs.map(async (r) => [r.rid, (await api(`api/runs/${r.rid}`)).config])));

  const picker = el("div", { class: "run-picker" }, el("strong", { text: "runs " }), cat.runs.map((r) => {
    const box = el("input", { type: "checkbox", value: r.rid, checked: chosen.includes(r.rid) });
    box.addEventListener("change", () => {
      const ids = [...picker.querySelectorAll("input:checked")].map((b) => b.value);
      go("/runs", new URLSearchParams(ids.length ? { ids: ids.join(",") } : { ids: "-1" }));
    });
    return el("label", { class: "run-choice" }, box, swatch(color[r.rid]), r.name);
  }));
  const scalarPick = el("select", { name: "scalar" });
  const charts = el("div", { class: "charts" });
  const summary = el("table", { class: "run-summary" });
  const configBox = el("div", { class: "configs" }, runs.map((r, i) => {
    const c = configs[r.rid];
    return el("details", { class: "config", open: i === 0 }, el("summary", { text: `config · ${r.name}` }),
      c.text === null ? el("p", { class: "muted", text: "no config.yaml in this run" }) : el("pre", { text: c.text }));
  }));
  main.replaceChildren(picker, summary, el("div", { class: "scalar" }, "more: ", scalarPick), charts, configBox);

  let scalar = params.get("scalar") || "";
  scalarPick.addEventListener("change", () => { scalar = scalarPick.value; draw(); });

  function draw() {
    const evalSeries = (key) => runs.map((r) => ({ name: r.name, color: color[r.rid], points: state[r.rid].records.filter((x) => x.kind === "eval" && typeof x[key] === "number" && typeof x.iteration === "number").map((x) => [x.iteration, x[key]]) }));
    const trainSeries = (key) => runs.map((r) => ({ name: r.name, color: color[r.rid], points: state[r.rid].records.filter((x) => x.kind === "train" && typeof x[key] === "number" && typeof x.step === "number").map((x) => [x.step, x[key]]) }));
    const planned = Math.max(0, ...runs.map((r) => (typeof configs[r.rid].values?.iterations === "number" ? configs[r.rid].values.iterations - 1 : 0)));
    const numeric = new Set();
    for (const r of runs) for (const x of state[r.rid].records) for (const [k, v] of Object.entries(x)) if (typeof v === "number" && !["step", "iteration"].includes(k)) numeric.add(`${x.kind === "eval" ? "eval" : "train"}:${k}`);
    const keys = [...numeric].sort();
    scalarPick.replaceChildren(el("option", { value: "", text: "(choose a scalar)" }), keys.map((k) => el("option", { value: k, text: k.replace(":", " · ") })));
    scalarPick.value = keys.includes(scalar) ? scalar : "";
    const figs = [
      lineChart({ id: "chart-success", title: "held-out success by iteration (student alone)", xLabel: "iteration", yLabel: "success", series: evalSeries("success_rate"), xMin: 0, xMax: planned, integerX: true, yMin: 0, yMax: 1 }),
      lineChart({ id: "chart-loss", title: "training loss by step", xLabel: "step", yLabel: "loss", series: trainSeries("loss"), logY: true }),
    ];
    if (scalarPick.value) {
      const [kind, key] = scalarPick.value.split(":");
      figs.push(lineChart({ id: "chart-extra", title: `${key} (${kind})`, xLabel: kind === "eval" ? "iteration" : "step", yLabel: key, series: kind === "eval" ? evalSeries(key) : trainSeries(key), integerX: true }));
    }
    charts.replaceChildren(...figs);

    summary.replaceChildren(el("thead", {}, el("tr", {}, ["run", "algorithm", "env", "iterations", "held-out success (first → last)", "steps", "last loss", ""].map((h) => el("th", { text: h })))));
    const body = el("tbody");
    for (const r of runs) {
      const recs = state[r.rid].records;
      const evals = recs.filter((x) => x.kind === "eval" && typeof x.success_rate === "number");
      const train = recs.filter((x) => x.kind === "train");
      const v = configs[r.rid].values || {};
      body.append(el("tr", {},
        el("td", {}, swatch(color[r.rid]), r.name),
        el("td", { text: v.algorithm ?? "" }),
        el("td", { text: v.env_id ?? "" }),
        el("td", { class: "n", text: `${evals.length}${typeof v.iterations === "number" ? ` / ${v.iterations}` : ""}` }),
        el("td", { class: "n", text: evals.length ? `${fmt(evals[0].success_rate, 2)} → ${fmt(evals[evals.length - 1].success_rate, 2)}` : "–" }),
        el("td", { class: "n", text: train.length ? fmt(train[train.length - 1].step) : "–" }),
        el("td", { class: "n", text: train.length ? fmt(train[train.length - 1].loss, 4) : "–" }),
        el("td", {}, el("a", { href: `#/?run=${r.rid}`, text: "episodes" }))));
    }
    summary.append(body);
    showErrors(runs.flatMap((r) => state[r.rid].errors));
  }

  async function poll() {
    let changed = false;
    for (const r of runs) {
      const s = state[r.rid];
      const m = await api(`api/runs/${r.rid}/metrics?offset=${s.offset}`);
      if (m.reset) { s.records = []; s.errors = []; changed = true; }
      if (m.records.length || m.errors.length) changed = true;
      s.records.push(...m.records);
      s.errors.push(...m.errors);
      s.offset = m.offset;
    }
    if (changed) {
      draw();
      document.getElementById("live").textContent = `live · updated ${new Date().toLocaleTimeString()}`;
    }
  }
  await poll();
  draw();
  timers.push(setInterval(() => poll().catch(() => { /* the next poll tries again */ }), RUN_POLL_MS));
}
