/* The time range of a page: a preset (last hour ... everything) or a custom from/to, kept in the
   address as since/until (what the API takes), carried by host links and the navigation.
   When the database holds no live data (GET /api/span: live false), presets count back from the
   end of the stored data instead of from now, so an imported capture is seen at its own time.
   Loaded on every page after common.js; adds to NT. */
"use strict";

(() => {
  const PRESETS = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400, "0": null};
  const RANGE_EVENT = "nettally:range";
  const control = document.getElementById("range");
  const range = {since: "", until: "", anchor: null, span: null};

  const pad = (n) => String(n).padStart(2, "0");
  function localInput(epoch) {               // epoch seconds -> the value of a datetime-local input
    const d = new Date(epoch * 1000);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }
  function fromInput(value) {
    const t = Date.parse(value);             // a datetime-local value is read as local time
    return Number.isNaN(t) ? null : Math.floor(t / 1000);
  }
  /* since/until as given (epoch seconds, ISO 8601, or a span ago such as 90m): epoch seconds or null. */
  function epochOf(value) {
    if (value === "" || value === null || value === undefined) return null;
    if (/^\d+(\.\d+)?$/.test(value)) return Number(value);
    const ago = /^(\d+)([smhd])$/.exec(value);
    if (ago) return Date.now() / 1000 - Number(ago[1]) * {s: 1, m: 60, h: 3600, d: 86400}[ago[2]];
    const t = Date.parse(value);
    return Number.isNaN(t) ? null : t / 1000;
  }

  function params() {
    const out = {};
    if (NT.agent) out.agent = NT.agent;        // kept in every address and link the range makes
    if (range.since !== "") out.since = range.since;
    if (range.until !== "") out.until = range.until;
    return out;
  }
  const query = () => String(new URLSearchParams(params()));
  /* A page address with this range: links keep what the user is looking at. */
  function withRange(path) {
    const q = query();
    if (!q) return path;
    return path + (path.includes("?") ? "&" : "?") + q;
  }

  /* The preset a range is, or "custom". */
  function presetOf() {
    if (range.until === "" && range.since in PRESETS) return range.since;
    const until = epochOf(range.until);
    if (range.anchor !== null && until === range.anchor) {
      if (range.since === "0") return "0";
      for (const [name, seconds] of Object.entries(PRESETS)) {
        if (seconds && until - epochOf(range.since) === seconds) return name;
      }
    }
    return "custom";
  }

  function choosePreset(name) {
    if (range.anchor === null) { range.since = name; range.until = ""; return; }
    range.until = String(range.anchor);
    range.since = name === "0" ? "0" : String(range.anchor - PRESETS[name]);
  }

  function describe() {
    const preset = presetOf();
    const names = {"1h": "last hour", "24h": "last 24 hours", "7d": "last 7 days", "30d": "last 30 days", 0: "everything"};
    if (preset !== "custom") return names[preset];
    const since = epochOf(range.since);
    const until = epochOf(range.until);
    return `${since === null ? "the start" : NT.time(since)} to ${until === null ? "now" : NT.time(until)}`;
  }

  function render() {
    if (!control) return;
    const preset = presetOf();
    const select = document.getElementById("range-preset");
    select.value = preset;
    const custom = document.getElementById("range-custom");
    custom.hidden = preset !== "custom";
    const since = epochOf(range.since);
    const until = epochOf(range.until);
    if (since !== null && since > 0) document.getElementById("range-from").value = localInput(since);
    if (until !== null) document.getElementById("range-to").value = localInput(until);
    const note = document.getElementById("range-note");
    if (note) {
      const span = range.span;
      note.hidden = !(range.anchor !== null && span && span.last !== null);
      if (!note.hidden) {
        note.textContent = `No live capture is feeding this database: ranges end at its last stored traffic, ` +
          `${NT.time(span.last)} (data from ${NT.time(span.first)}).`;
      }
    }
  }

  function navLinks() {
    for (const a of document.querySelectorAll("nav a[data-ranged]")) a.setAttribute("href", withRange(a.dataset.path));
  }

  function changed() {
    render();
    navLinks();
    document.dispatchEvent(new CustomEvent(RANGE_EVENT, {detail: params()}));
  }

  async function init() {
    let span = null;
    try { span = await NT.api("/api/span"); } catch (e) { span = null; }   // an older server: count back from now
    range.span = span;
    range.anchor = span && !span.live && span.last !== null && span.last !== undefined ? Math.ceil(span.last) : null;
    const given = new URLSearchParams(window.location.search);
    if (given.has("since") || given.has("until")) {
      range.since = given.get("since") || "";
      range.until = given.get("until") || "";
    } else {
      choosePreset(control ? control.dataset.default || "24h" : "24h");
    }
    if (control) {
      const select = document.getElementById("range-preset");
      select.addEventListener("change", () => {
        if (select.value === "custom") {
          const until = epochOf(range.until) || Math.floor(Date.now() / 1000);
          const since = epochOf(range.since);
          document.getElementById("range-from").value = localInput(since && since > 0 ? since : until - 3600);
          document.getElementById("range-to").value = localInput(until);
          document.getElementById("range-custom").hidden = false;
          document.getElementById("range-from").focus();
          return;
        }
        choosePreset(select.value);
        changed();
      });
      document.getElementById("range-apply").addEventListener("click", () => {
        const since = fromInput(document.getElementById("range-from").value);
        const until = fromInput(document.getElementById("range-to").value);
        if (since === null || (until !== null && until <= since)) {
          NT.status("The range needs a start before its end.", true);
          return;
        }
        NT.status("");
        range.since = String(since);
        range.until = until === null ? "" : String(until);
        changed();
      });
    }
    render();
    navLinks();
    return span;
  }

  const ready = init();
  /* Calls fn() after every change of the range (not at the start: pages load once rangeReady). */
  const onRange = (fn) => document.addEventListener(RANGE_EVENT, () => fn());

  Object.assign(NT, {rangeReady: ready, rangeParams: params, rangeQuery: query, withRange, onRange,
                     rangeText: describe, rangePreset: presetOf, epochOf, isLive: () => !!(range.span && range.span.live),
                     rangeState: range});
})();
