/* Agents: the collectors writing into this database (GET /api/agents), refreshed every 5 s. */
"use strict";

(() => {
  const table = document.getElementById("agents");
  const empty = document.getElementById("agents-empty");

  function age(seconds) {
    if (seconds < 120) return `${Math.round(seconds)} s ago`;
    if (seconds < 7200) return `${Math.round(seconds / 60)} min ago`;
    if (seconds < 172800) return `${Math.round(seconds / 3600)} h ago`;
    return `${Math.round(seconds / 86400)} days ago`;
  }

  async function load() {
    const answer = await NT.api("/api/agents", {});
    const rows = answer.agents || [];
    empty.hidden = rows.length > 0;
    table.hidden = rows.length === 0;
    NT.fillTable(table, rows, [
      {value: (r) => NT.el("span", {className: "mono"}, r.agent)},
      {value: (r) => r.version, className: "mono"},
      {value: (r) => (r.interfaces.length ? r.interfaces.join(", ") : "imports only")},
      {value: (r) => NT.time(r.started)},
      {value: (r) => NT.el("span", {title: NT.time(r.last_write)}, age(r.last_write_age_s))},
      {value: (r) => NT.count(r.writes), num: true},
      {value: (r) => `${r.last_write_ms.toFixed(1)} ms`, num: true},
      {value: (r) => NT.count(r.last_write_rows), num: true},
      {value: (r) => NT.bytes(r.dropped_bytes), num: true},
      {value: (r) => NT.count(r.capture_drops_24h), num: true},
    ]);
  }
  NT.every(5, load);
})();
