/* Overview: live chart from /api/stream, numbers and top lists polled from the API. */
"use strict";

(() => {
  const WINDOW = 300;                       // seconds shown on the live chart
  const seconds = new Map();                // second -> Map(iface -> [up, down]) in bytes
  const ifaces = new Set();
  const select = document.getElementById("live-iface");

  const chart = NT.rateChart("live-chart", [NT.series("up (sent)", NT.cssVar("--up")),
                                            NT.series("down (received)", NT.cssVar("--down"))], {suggestedMax: 8000});

  function redraw() {
    if (!seconds.size) return;
    const keys = [...seconds.keys()].sort((a, b) => a - b);
    const chosen = select.value;
    const labels = [];
    const up = [];
    const down = [];
    for (const s of keys) {
      let u = 0;
      let d = 0;
      for (const [iface, v] of seconds.get(s)) {
        if (!chosen || iface === chosen) { u += v[0]; d += v[1]; }
      }
      labels.push(NT.clock(s));
      up.push(u * 8);
      down.push(d * 8);
    }
    chart.data.labels = labels;
    chart.data.datasets[0].data = up;
    chart.data.datasets[1].data = down;
    chart.update("none");
    const recent = keys.slice(-5);
    const sum = (arr) => arr.slice(-5).reduce((a, b) => a + b, 0) / Math.max(1, recent.length);
    document.getElementById("now-up").textContent = NT.rate(sum(up));
    document.getElementById("now-down").textContent = NT.rate(sum(down));
  }

  function addIface(name) {
    if (ifaces.has(name)) return;
    ifaces.add(name);
    select.append(NT.el("option", {value: name}, name));
  }

  function onUsage(event) {
    const d = JSON.parse(event.data);
    for (let s = d.first; s <= d.last; s += 1) seconds.set(s, new Map());
    for (const [s, iface, up, down] of d.points) {
      addIface(iface);
      seconds.get(s).set(iface, [up, down]);
    }
    for (const s of [...seconds.keys()]) if (s <= d.last - WINDOW) seconds.delete(s);
    redraw();
  }

  NT.live({usage: onUsage});
  select.addEventListener("change", redraw);

  async function loadUsage() {
    const u = await NT.api("/api/current_usage");
    document.getElementById("total-up").textContent = NT.bytes(u.total.up_bytes);
    document.getElementById("total-down").textContent = NT.bytes(u.total.down_bytes);
    const since = u.total.counted_since;
    document.getElementById("total-since").textContent = since === null ? "nothing counted yet"
      : `sent / received since ${new Date(since * 1000).toISOString().slice(0, 10)} (UTC day)`;
    const cov = u.coverage;
    const covCard = document.getElementById("coverage-card");
    document.getElementById("coverage").textContent = cov.ratio === null ? "–" : `${(cov.ratio * 100).toFixed(1)} %`;
    const reasons = Object.entries(cov.reasons).map(([r, b]) => `${r} ${NT.bytes(b)}`).join(", ");
    document.getElementById("coverage-detail").textContent =
      `${NT.bytes(cov.attributed_bytes)} of ${NT.bytes(cov.attributed_bytes + cov.unattributed_bytes)} this hour` +
      (reasons ? ` (not: ${reasons})` : "");
    covCard.classList.toggle("good", cov.ratio !== null && cov.ratio >= 0.95);
    document.getElementById("drops").textContent = NT.count(u.drops.frames);
    document.getElementById("drops-detail").textContent =
      `frames the kernel dropped; ${NT.count(u.drops.last_hour)} in the last hour`;
    document.getElementById("drops-card").classList.toggle("bad", u.drops.last_hour > 0);
    document.getElementById("drops-card").classList.toggle("good", u.drops.frames === 0);
    for (const i of u.interfaces) addIface(i.iface);
    NT.fillTable(document.getElementById("iface-table"), u.interfaces, [
      {value: (r) => r.iface, className: "mono"},
      {value: (r) => NT.rate(r.up_bps), num: true}, {value: (r) => NT.rate(r.down_bps), num: true},
      {value: (r) => NT.bytes(r.up_bytes), num: true}, {value: (r) => NT.bytes(r.down_bytes), num: true},
      {value: (r) => NT.count(r.drops), num: true},
    ], "no interface has counted anything yet");
  }

  async function loadTop() {
    const [hosts, procs] = await Promise.all([
      NT.api("/api/hosts", {since: "10m", limit: 10}),
      NT.api("/api/processes", {since: "10m", limit: 10, group: "name"}),
    ]);
    const rates = [{value: (r) => NT.rate(r.current_bps), num: true},
                   {value: (r) => NT.bytes(r.tx_bytes), num: true}, {value: (r) => NT.bytes(r.rx_bytes), num: true}];
    NT.fillTable(document.getElementById("top-hosts"), hosts.rows, [{value: (r) => NT.hostLink(r.ip, r.name)}, ...rates],
                 "no traffic in the last 10 minutes");
    NT.fillTable(document.getElementById("top-processes"), procs.rows, [{value: (r) => r.process, className: "mono"},
                 ...rates], "no traffic attributed in the last 10 minutes");
  }

  // One colour per class, the same on every load (classes come and go with the traffic).
  const CLASS_COLORS = {"video streaming": "#dc2626", "voice and video calls": "#9333ea",
                        "file transfer and downloads": "#d97706", "web browsing": "#2563eb", gaming: "#16a34a",
                        "system and background": "#64748b", other: "#0891b2", "": "#a3a3a3"};
  const classColor = (c, i) => CLASS_COLORS[c] || NT.PALETTE[i % NT.PALETTE.length];
  let classRows = [];
  const classesChart = new Chart(document.getElementById("classes-chart"), {
    type: "doughnut",
    data: {labels: [], datasets: [{data: [], backgroundColor: [], borderWidth: 0}]},
    options: {plugins: {legend: {display: false},     // the table below is the legend, with bytes and shares
                        tooltip: {callbacks: {label: (c) =>
                          `${c.label}: ${NT.bytes(c.parsed)} (${NT.percent(classRows[c.dataIndex].share)})`}}}},
  });

  async function loadClasses() {
    const t = await NT.api("/api/apps", {since: "1h", by: "class"});
    classRows = t.rows;
    const colors = t.rows.map((r, i) => classColor(r.class, i));
    classesChart.data.labels = t.rows.map((r) => NT.appsKey(r, "class"));
    classesChart.data.datasets[0].data = t.rows.map((r) => r.bytes);
    classesChart.data.datasets[0].backgroundColor = colors;
    classesChart.update("none");
    document.getElementById("classes-chart").parentElement.hidden = !t.rows.length;
    NT.fillTable(document.getElementById("classes"), t.rows, [
      {value: (r) => {
        const swatch = NT.el("span", {className: "swatch"});
        swatch.style.backgroundColor = colors[t.rows.indexOf(r)];    // through the CSSOM: the CSP allows it
        return NT.el("span", {}, swatch, NT.appsKey(r, "class"));
      }},
      {value: (r) => NT.bytes(r.bytes), num: true}, {value: (r) => NT.percent(r.share), num: true},
    ], "no traffic in the last hour");
  }

  // Open alerts first (they want acknowledging), then the latest of the last 24 hours.
  async function loadAlerts() {
    const [open, recent] = await Promise.all([NT.api("/api/alerts", {state: "open", since: "0", limit: 20}),
                                              NT.api("/api/alerts", {since: "24h", limit: 10})]);
    const ids = new Set(open.rows.map((r) => r.id));
    const rows = [...open.rows, ...recent.rows.filter((r) => !ids.has(r.id))].slice(0, Math.max(5, open.rows.length));
    const empty = document.getElementById("alerts-empty");
    const table = document.getElementById("recent-alerts");
    empty.hidden = rows.length > 0;
    table.hidden = rows.length === 0;
    empty.textContent = "no alerts open, none in the last 24 hours";
    NT.fillTable(table, rows, [...NT.alertColumns, NT.alertActionColumn(open.writable)], "none");
  }

  NT.every(5, loadUsage);
  NT.every(5, loadTop);
  NT.every(10, loadClasses);
  NT.onAlerts(loadAlerts, 30);
})();
