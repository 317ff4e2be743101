/* Shared helpers. Every value from the API is written with textContent (el(), cell()):
   host names, process names and command lines are hostile text and never become HTML. */
"use strict";

const NT = (() => {
  const UNITS = ["B", "KB", "MB", "GB", "TB", "PB"];
  const RATE_UNITS = ["bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"];

  function scaled(n, units) {
    if (n === null || n === undefined || Number.isNaN(n)) return "–";
    let i = 0;
    let v = Number(n);
    while (Math.abs(v) >= 1000 && i < units.length - 1) { v /= 1000; i += 1; }
    const digits = i === 0 || Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2;
    return `${v.toFixed(digits)} ${units[i]}`;
  }
  const bytes = (n) => scaled(n, UNITS);
  const rate = (bps) => scaled(bps, RATE_UNITS);
  const count = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString());

  function pad(n) { return String(n).padStart(2, "0"); }
  function time(epoch) {
    if (epoch === null || epoch === undefined) return "–";
    const d = new Date((typeof epoch === "string" ? Date.parse(epoch) / 1000 : epoch) * 1000);
    if (Number.isNaN(d.getTime())) return String(epoch);
    const date = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
    return `${date} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }
  /* 60 -> "1 min", 3600 -> "1 h", 86400 -> "1 day" */
  function duration(seconds) {
    for (const [size, name] of [[86400, " day"], [3600, " h"], [60, " min"]]) {
      if (seconds >= size && seconds % size === 0) {
        const n = seconds / size;
        return `${n}${name}${name === " day" && n > 1 ? "s" : ""}`;
      }
    }
    return `${seconds} s`;
  }
  /* el("a", {href: "/x", className: "c", title: t}, "text", child...) */
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null) continue;
      if (k === "href") node.setAttribute("href", v);
      else if (k === "dataset") Object.assign(node.dataset, v);
      else node[k] = v;
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  /* A host by name first, its address beside it; the address alone where no name is known.
     Names came off the wire: text only, cut by CSS (.clip) with the whole of it in the title. */
  function hostLink(ip, name) {
    if (!ip) return "–";
    const href = NT.withRange ? NT.withRange(`/hosts/${encodeURIComponent(ip)}`) : `/hosts/${encodeURIComponent(ip)}`;
    if (!name) return el("a", {href, className: "mono ip"}, ip);
    return el("span", {className: "host"}, el("a", {href, className: "clip", title: `${name} (${ip})`}, name), " ",
              el("span", {className: "ip mono"}, ip));
  }

  /* Text that may be long (server names, services): cut by CSS, whole in the title. */
  function clip(text, className) {
    if (text === null || text === undefined || text === "") return null;
    return el("span", {className: `clip ${className || ""}`.trim(), title: String(text)}, text);
  }

  /* A flow's application; one guessed from the server's port alone is marked so, never shown as fact. */
  function appLabel(app, source) {
    if (!app) return null;
    if (source !== "port") return app;
    return el("span", {className: "guessed", title: `${app}: guessed from the port number, not read from the traffic`},
              app, " ", el("span", {className: "guess"}, "guess"));
  }

  /* The title of a peak cell: when, and at which bucket size, the peak was measured. */
  const peakTitle = (r) => (r.peak_at ? `at ${time(r.peak_at)}` : "") +
    (r.resolution ? `${r.peak_at ? ", " : ""}highest ${duration(r.resolution)} rate` : "");

  /* The sort key of the rate now (the last seconds): live views sort by it. */
  const NOW_SORT = "now";

  const percent = (share) => (share === null || share === undefined ? "–" : `${(share * 100).toFixed(1)} %`);

  /* /api/apps answers ("" is a flow no rule or reading named). */
  const UNNAMED = {app: "unknown", service: "no named service", class: "unclassified"};
  const appsKey = (row, by) => row[by] || UNNAMED[by];

  /* A breakdown table (class or service | bytes | share) of an /api/apps answer grouped `by`. */
  function fillShares(table, answer, by, empty) {
    fillTable(table, answer.rows, [
      {value: (r) => (r[by] ? clip(r[by], "share-key") : el("span", {className: "muted"}, UNNAMED[by]))},
      {value: (r) => bytes(r.bytes), num: true}, {value: (r) => percent(r.share), num: true},
    ], empty || "No traffic in this range.");
  }

  /* columns: [{value: row => text|Node, num: bool, className}] */
  function fillTable(table, rows, columns, empty) {
    const body = table.tBodies[0];
    const fresh = document.createElement("tbody");
    for (const row of rows) {
      const tr = el("tr");
      for (const col of columns) {
        const v = col.value(row);
        const cls = [col.num ? "num" : "", col.className || ""].join(" ").trim();
        const td = el("td", {className: cls || undefined}, v === null || v === undefined || v === "" ? "–" : v);
        if (col.title) td.title = col.title(row) || "";
        tr.append(td);
      }
      fresh.append(tr);
    }
    if (!rows.length) {
      const note = el("td", {colSpan: columns.length, className: "muted"}, empty || "Nothing in this range.");
      fresh.append(el("tr", {}, note));
    }
    table.replaceChild(fresh, body);
  }

  function status(message, isError) {
    const s = document.getElementById("status");
    s.textContent = message || "";
    s.classList.toggle("error", !!isError);
  }

  /* agent=NAME in the page's address: the page shows what that collector counted (several write
     this database: docs/FLEET.md). Every API call, CSV link and ranged link carries it; the
     picker in the header (shown when more than one agent writes) sets it. */
  const AGENT = new URLSearchParams(window.location.search).get("agent") || "";

  function withAgent(url) {
    if (AGENT && !url.searchParams.has("agent")) url.searchParams.set("agent", AGENT);
    return url;
  }

  async function agentPicker() {
    const pick = document.getElementById("agent-pick");
    if (!pick) return;
    let names = [];
    try { names = (await api("/api/agents")).agents.map((a) => a.agent); } catch (e) { return; }
    if (AGENT && !names.includes(AGENT)) names.push(AGENT);
    if (names.length < 2) return;
    pick.replaceChildren(el("option", {value: ""}, "All agents"), ...names.map((n) => el("option", {value: n}, n)));
    pick.value = AGENT;
    pick.hidden = false;
    pick.addEventListener("change", () => {
      const url = new URL(window.location.href);
      if (pick.value) url.searchParams.set("agent", pick.value); else url.searchParams.delete("agent");
      window.location.assign(url.pathname + url.search);
    });
  }

  async function api(path, params) {
    const url = new URL(path, window.location.origin);
    for (const [k, v] of Object.entries(params || {})) {
      if (v !== "" && v !== null && v !== undefined) url.searchParams.set(k, v);
    }
    withAgent(url);
    return answer(await fetch(url, {credentials: "same-origin", headers: {Accept: "application/json"}}));
  }

  /* A change (POST, PUT, PATCH, DELETE). The server takes changes only with this header, which
     a page on another site cannot send (web/auth.py), and with a JSON body. */
  async function send(method, path, body) {
    const init = {method, credentials: "same-origin", headers: {Accept: "application/json", "X-NetTally-Request": "1"}};
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return answer(await fetch(new URL(path, window.location.origin), init));
  }

  async function answer(response) {
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) {
      const error = new Error((body && body.error) || `${response.status} ${response.statusText}`);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  /* Runs load() now and every `seconds`, reporting failures in the status line. */
  function every(seconds, load) {
    const run = async () => {
      try { await load(); status(""); } catch (e) { status(e.message, true); }
    };
    run();
    return window.setInterval(run, seconds * 1000);
  }

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }
  const PALETTE = ["#2563eb", "#d97706", "#16a34a", "#dc2626", "#9333ea", "#0891b2", "#db2777", "#65a30d",
                   "#ea580c", "#4f46e5", "#0d9488", "#a16207"];

  function chartDefaults() {
    if (!window.Chart) return;
    Chart.defaults.color = cssVar("--muted");
    Chart.defaults.borderColor = cssVar("--grid");
    Chart.defaults.font.family = cssVar("--font");
    Chart.defaults.animation = false;
    Chart.defaults.maintainAspectRatio = false;
  }

  /* Sortable table headers (server-side sort): state = {sort, order}; onChange() reloads. */
  function sortable(table, state, onChange) {
    const heads = table.querySelectorAll("th[data-key]");
    const mark = () => heads.forEach((th) => {
      if (th.dataset.key !== state.sort) th.removeAttribute("aria-sort");
      else th.setAttribute("aria-sort", state.order === "asc" ? "ascending" : "descending");
    });
    heads.forEach((th) => th.addEventListener("click", () => {
      if (state.sort === th.dataset.key) state.order = state.order === "asc" ? "desc" : "asc";
      else { state.sort = th.dataset.key; state.order = "desc"; }
      state.offset = 0;
      mark();
      onChange();
    }));
    mark();
  }

  function pager(root, state, total, onChange) {
    const box = root.querySelector(".pager");
    const prev = box.querySelector(".prev");
    const next = box.querySelector(".next");
    const end = Math.min(state.offset + state.limit, total);
    box.querySelector(".page-info").textContent = total ? `${state.offset + 1}–${end} of ${count(total)}` : "";
    prev.disabled = state.offset === 0;
    next.disabled = end >= total;
    prev.onclick = () => { state.offset = Math.max(0, state.offset - state.limit); onChange(); };
    next.onclick = () => { state.offset += state.limit; onChange(); };
  }

  function formValues(form) {
    const out = {};
    for (const [k, v] of new FormData(form).entries()) out[k] = String(v).trim();
    return out;
  }

  function csvHref(path, params) {
    const url = new URL(path, window.location.origin);
    for (const [k, v] of Object.entries(params)) {
      if (v !== "" && v !== null && v !== undefined && k !== "limit" && k !== "offset") url.searchParams.set(k, v);
    }
    withAgent(url);
    return url.pathname + url.search;
  }

  /* A filterable, sortable, paged table: the form's fields, the page's range (range.js), sort,
     order and page go to `path` (and its CSV twin); the address bar keeps them so the view can be
     bookmarked. Search boxes (input[type=search]) reload as one types, after a pause. sort: a
     key, or a function giving it once the range is known (live views sort by the rate now).
     empty: the sentence an empty table shows. */
  function listPage({path, csvPath, table, columns, sort, refresh, empty, after}) {
    const form = document.getElementById("filters");
    const state = {sort: null, order: "desc", limit: 100, offset: 0};
    const given = new URLSearchParams(window.location.search);
    for (const [k, v] of given) {
      if (form.elements[k] && form.elements[k].name === k) form.elements[k].value = v;
      else if (k === "sort" || k === "order") state[k] = v;
      else if (k === "offset") state.offset = Math.max(0, parseInt(v, 10) || 0);
    }
    const params = () => ({...formValues(form), ...NT.rangeParams(), sort: state.sort, order: state.order,
                           limit: state.limit, offset: state.offset});
    let latest = 0;          // a slower, older answer never overwrites the rows of a newer filter
    async function load() {
      const mine = ++latest;
      const p = params();
      const shown = new URLSearchParams();
      for (const [k, v] of Object.entries(p)) if (v !== "" && k !== "limit" && !(k === "offset" && !v)) shown.set(k, v);
      window.history.replaceState(null, "", `?${shown}`);
      if (csvPath) document.getElementById("csv").href = csvHref(csvPath, p);
      const d = await api(path, p);
      if (mine !== latest) return;
      fillTable(table, d.rows, columns, emptySentence(empty, p));
      pager(document, state, d.total, reload);
      if (after) after(d);
      document.body.dataset.shown = String(shown);     // for tests: the rows on screen answer these filters
    }
    const reload = () => load().then(() => status(""), (e) => status(e.message, true));
    form.addEventListener("submit", (e) => { e.preventDefault(); state.offset = 0; reload(); });
    form.querySelectorAll("select[name]").forEach((s) => s.addEventListener("change", () => { state.offset = 0; reload(); }));
    let typing = null;
    form.querySelectorAll("input[type=search]").forEach((box) => box.addEventListener("input", () => {
      window.clearTimeout(typing);
      typing = window.setTimeout(() => { state.offset = 0; reload(); }, 300);
    }));
    NT.onRange(() => { state.offset = 0; reload(); });
    NT.rangeReady.then(() => {
      if (!state.sort) state.sort = typeof sort === "function" ? sort() : sort;
      sortable(table, state, reload);
      reload();
      if (refresh) window.setInterval(reload, refresh * 1000);
    });
  }

  /* What an empty list says: the page's sentence, and what to try. */
  function emptySentence(empty, p) {
    const base = empty || "Nothing in this range.";
    const hint = p.q ? ` Nothing matches “${p.q}”: try part of an address, a name, an app or a process.`
      : " Choose a longer range (or “everything”) above.";
    return base + hint;
  }

  chartDefaults();
  document.addEventListener("DOMContentLoaded", agentPicker);
  return {agent: AGENT, bytes, rate, count, time, duration, el, hostLink, clip, appLabel, percent, appsKey, fillShares, peakTitle,
          fillTable, status, api, send, every,
          PALETTE, cssVar, sortable, pager, formValues, csvHref, listPage, emptySentence, NOW_SORT};
})();
