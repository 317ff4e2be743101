/* Overview: the live chart from /api/stream (when a live capture feeds the database), the traffic
   of the range by interface, top hosts and processes (by the rate now when live, else by bytes),
   traffic by class, the slowest and lossiest TCP hosts, processes or apps, and the alerts. */
"use strict";

(() => {
  const WINDOW = 300;                       // seconds shown on the live chart
  const seconds = new Map();                // second -> Map(iface -> [up, down]) in bytes
  const ifaces = new Set();
  const select = document.getElementById("live-iface");

  const live = NTChart.timeChart("live", "live-chart", {legend: true});
  const traffic = NTChart.timeChart("traffic", "traffic-chart", {stacked: true});
  const UP = NT.cssVar("--up");
  const DOWN = NT.cssVar("--down");

  function redraw() {
    if (!seconds.size) return;
    const keys = [...seconds.keys()].sort((a, b) => a - b);
    const chosen = select.value;
    const up = [];
    const down = [];
    for (const s of keys) {
      let u = 0;
      let d = 0;
      for (const [iface, v] of seconds.get(s)) {
        if (!chosen || iface === chosen) { u += v[0]; d += v[1]; }
      }
      up.push({x: s * 1000, y: u * 8});
      down.push({x: s * 1000, y: d * 8});
    }
    const last = keys[keys.length - 1];
    NTChart.show(live, [NTChart.area({name: "up (sent)", color: UP, sign: 1, points: up}),
                        {...NTChart.area({name: "down (received)", color: DOWN, sign: -1, points: down}), legendHidden: false}],
                 last + 1 - WINDOW, last + 1, 1);
    const mean = (arr) => arr.slice(-5).reduce((a, p) => a + p.y, 0) / Math.max(1, Math.min(5, arr.length));
    document.getElementById("now-up").textContent = NT.rate(mean(up));
    document.getElementById("now-down").textContent = NT.rate(mean(down));
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
    const local = cov.attributed_bytes + cov.unattributed_bytes;
    document.getElementById("coverage-detail").textContent = local
      ? `${NT.bytes(cov.attributed_bytes)} of ${NT.bytes(local)} this hour, local flows once per side` +
        (reasons ? ` (not: ${reasons})` : "")
      : "nothing of this host's own in the last hour";
    covCard.title = "A flow between two processes of this host is charged to both, so it counts once per side here.";
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
    ], "No interface has counted anything yet. Start a capture (sudo python run.py) or import a capture file.");
  }

  /* The live panel says so when nothing live feeds the database (an imported capture, say). */
  function liveState() {
    const on = NT.isLive();
    const span = NT.rangeState.span;
    document.getElementById("live-box").hidden = !on;
    const empty = document.getElementById("live-empty");
    empty.hidden = on;
    empty.textContent = span && span.last !== null && span.last !== undefined
      ? `No live capture is feeding this database. It holds traffic from ${NT.time(span.first)} to ` +
        `${NT.time(span.last)}: the chart and lists below show it at its own time.`
      : "No live capture is feeding this database and it holds no traffic yet. Start one with " +
        "“sudo python run.py”, or import a capture file with “python run.py import FILE”.";
    if (!on) {
      document.getElementById("now-detail").textContent = "no live capture";
      document.getElementById("now-up").textContent = "–";
      document.getElementById("now-down").textContent = "–";
    }
  }

  async function loadTraffic() {
    const h = await NTChart.history({by: "interface", limit: 10});
    const {datasets, rows} = NTChart.historyDatasets(h, 6, String);
    NTChart.show(traffic, datasets, h.since, h.until, h.step);
    const empty = document.getElementById("traffic-empty");
    empty.hidden = rows.length > 0;
    empty.textContent = `No traffic in this range (${NT.rangeText()}). Choose a longer range or “everything”.`;
    document.body.dataset.traffic = String(rows.length);       // for tests: the chart of this range is drawn
  }

  async function loadTop() {
    const sort = NT.isLive() ? NT.NOW_SORT : "bytes";
    const range = NT.rangeParams();
    const [hosts, procs] = await Promise.all([
      NT.api("/api/hosts", {...range, sort, limit: 10}),
      NT.api("/api/processes", {...range, sort, limit: 10, group: "name"}),
    ]);
    const rates = [{value: (r) => NT.rate(r.current_bps), num: true},
                   {value: (r) => NT.bytes(r.tx_bytes), num: true}, {value: (r) => NT.bytes(r.rx_bytes), num: true}];
    const what = NT.rangeText();
    document.querySelectorAll(".range-text").forEach((n) => { n.textContent = `${what}${NT.isLive() ? ", by rate now" : ""}`; });
    NT.fillTable(document.getElementById("top-hosts"), hosts.rows, [{value: (r) => NT.hostLink(r.ip, r.name)}, ...rates],
                 `No traffic in this range (${what}).`);
    NT.fillTable(document.getElementById("top-processes"), procs.rows, [{value: (r) => r.process, className: "mono"},
                 ...rates], `No traffic attributed to a process in this range (${what}).`);
    document.body.dataset.shown = NT.rangeQuery();     // for tests: the lists of this range are on screen
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
  NTChart.charts.classes = classesChart;

  async function loadClasses() {
    const t = await NT.api("/api/apps", {...NT.rangeParams(), by: "class"});
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
    ], `No traffic in this range (${NT.rangeText()}).`);
  }

  // Open alerts first (they want acknowledging), the critical ones at the top, newest first within
  // a severity; then the latest of the last 24 hours.
  async function loadAlerts() {
    const [open, recent] = await Promise.all([NT.api("/api/alerts", {state: "open", since: "0", limit: 20}),
                                              NT.api("/api/alerts", {since: "24h", limit: 10})]);
    const ids = new Set(open.rows.map((r) => r.id));
    const urgent = [...open.rows].sort((a, b) => NT.severityRank(b) - NT.severityRank(a));   // stable: newest first kept
    const rows = [...urgent, ...recent.rows.filter((r) => !ids.has(r.id))].slice(0, Math.max(5, open.rows.length));
    const empty = document.getElementById("alerts-empty");
    const table = document.getElementById("recent-alerts");
    empty.hidden = rows.length > 0;
    table.hidden = rows.length === 0;
    empty.textContent = "No alert is open and none opened in the last 24 hours.";
    NT.fillTable(table, rows, [...NT.alertColumns, NT.alertActionColumn(open.writable)], "none");
  }

  /* Slow or lossy (GET /api/health): the few hosts, processes or apps with the highest RTT p95 and
     the highest retransmission rate in the range. A server without /api/health, or rows without a
     field (an older version of it), show a sentence or "–" rather than fail. */
  const WORST = 5;
  const LOSS_MIN_SEGMENTS = 100;              // as the retransmits alert kind: 1 in 3 says little
  const healthBy = document.getElementById("health-by");
  const ms = (v) => (typeof v !== "number" ? "–" : `${v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0)} ms`);
  const WHO = {host: "host", process: "process", app: "app"};
  function who(r, by) {
    if (by === "host") return NT.hostLink(r.ip);
    if (by === "process") return NT.el("span", {className: "mono"}, r.process);
    const app = NT.el("span", {className: r.app ? "mono" : "muted"}, NT.appsKey(r, "app"));
    return r.service ? NT.el("span", {}, app, " ", NT.clip(r.service, "muted")) : app;
  }
  async function loadHealth() {
    const by = healthBy.value;
    const range = NT.rangeParams();
    const empty = document.getElementById("health-empty");
    const tables = document.getElementById("health-tables");
    let slow;
    let lossy;
    try {
      [slow, lossy] = await Promise.all([
        NT.api("/api/health", {...range, by, sort: "rtt_p95_ms", limit: WORST}),
        NT.api("/api/health", {...range, by, sort: "retransmit_rate", min_segments: LOSS_MIN_SEGMENTS, limit: WORST})]);
    } catch (e) {
      if (e.status !== 404 && e.status !== 400) throw e;
      empty.hidden = false;                   // a server that does not measure TCP health (yet)
      tables.hidden = true;
      empty.textContent = "This server does not report TCP health.";
      return;
    }
    const what = NT.rangeText();
    document.getElementById("health-range").textContent = what;
    const rtt = (slow.rows || []).filter((r) => typeof r.rtt_p95_ms === "number");
    const loss = (lossy.rows || []).filter((r) => r.retransmits > 0);
    empty.hidden = rtt.length > 0 || loss.length > 0;
    tables.hidden = !empty.hidden;
    empty.textContent = `Nothing slow or lossy to show: no TCP ${WHO[by]} has a measured round trip or a ` +
      `retransmission in this range (${what}).`;
    NT.fillTable(document.getElementById("health-rtt"), rtt, [
      {value: (r) => who(r, by)}, {value: (r) => ms(r.rtt_p50_ms), num: true}, {value: (r) => ms(r.rtt_p95_ms), num: true},
      {value: (r) => NT.count(r.rtt_flows ?? r.tcp_flows), num: true},
    ], `No round trip measured in this range (${what}).`);
    NT.fillTable(document.getElementById("health-loss"), loss, [
      {value: (r) => who(r, by)}, {value: (r) => NT.percent(r.retransmit_rate), num: true},
      {value: (r) => NT.count(r.retransmits), num: true}, {value: (r) => NT.count(r.data_segments), num: true},
    ], `No retransmission among ${WHO[by]}s with ${LOSS_MIN_SEGMENTS} data segments or more in this range (${what}).`);
    document.body.dataset.health = `${by}|${NT.rangeQuery()}`;      // for tests: this panel answers these
  }
  healthBy.addEventListener("change", () => loadHealth().then(() => NT.status(""), (e) => NT.status(e.message, true)));

  NT.rangeReady.then(() => {
    liveState();
    NT.every(NT.isLive() ? 15 : 120, loadHealth);
    NT.every(5, loadUsage);
    NT.every(NT.isLive() ? 5 : 60, loadTop);
    NT.every(NT.isLive() ? 30 : 300, loadTraffic);
    NT.every(10, loadClasses);
  });
  NT.onRange(() => Promise.all([loadTop(), loadTraffic(), loadClasses(), loadHealth()]).then(() => NT.status(""),
                                                                               (e) => NT.status(e.message, true)));
  NT.onAlerts(loadAlerts, 30);
})();
