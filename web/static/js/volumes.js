/* Volumes, vnStat-style: bytes per calendar day or month for interfaces, hosts, processes or
   apps (GET /api/volumes), and each interface's 95th-percentile rate, as billed. */
"use strict";

(() => {
  const form = document.getElementById("filters");
  const given = new URLSearchParams(window.location.search);
  for (const k of ["by", "period"]) if (given.get(k)) form.elements[k].value = given.get(k);

  const pick = (r, names) => names.map((n) => r[n]).find((v) => v !== undefined && v !== null);
  const startOf = (r) => pick(r, ["period", "start", "period_start", "day", "month"]);
  const subjectOf = (r) => pick(r, ["subject", "iface", "ip", "host", "process", "app", "key"]);

  const totalOf = (r) => (r.bytes !== undefined && r.bytes !== null ? r.bytes : (r.rx_bytes || 0) + (r.tx_bytes || 0));

  function periodLabel(start, period) {
    if (typeof start === "string") return start;
    const d = new Date(start * 1000);
    const iso = d.toISOString();
    return period === "month" ? iso.slice(0, 7) : iso.slice(0, 10);
  }
  function periodSeconds(start, period, now) {
    if (typeof start !== "number") return null;
    let end;
    if (period === "month") {
      const d = new Date(start * 1000);
      end = Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1) / 1000;
    } else {
      end = start + 86400;
    }
    return Math.max(1, Math.min(end, now) - start);
  }

  function subjectCell(by, subject) {
    if (subject === "" || subject === null || subject === undefined) return NT.el("span", {className: "muted"}, "unknown");
    if (by === "host") return NT.hostLink(subject);
    return NT.el("span", {className: "mono"}, String(subject));
  }

  async function load() {
    const params = NT.formValues(form);
    window.history.replaceState(null, "", `?${new URLSearchParams(params)}`);
    const v = await NT.api("/api/volumes", {...params, limit: params.by === "iface" ? 50 : 20});
    const now = Date.now() / 1000;
    const rows = v.rows || [];
    NT.fillTable(document.getElementById("volumes"), rows, [
      {value: (r) => periodLabel(startOf(r), params.period), className: "mono"},
      {value: (r) => subjectCell(params.by, subjectOf(r))},
      {value: (r) => NT.bytes(r.rx_bytes), num: true}, {value: (r) => NT.bytes(r.tx_bytes), num: true},
      {value: (r) => NT.bytes(totalOf(r)), num: true},
      {value: (r) => {
        const seconds = periodSeconds(startOf(r), params.period, now);
        return seconds ? NT.rate((totalOf(r) * 8) / seconds) : null;
      }, num: true},
    ], params.by === "app" ? "No traffic is stored yet. (Apps have one total: sent and received are not told apart.)"
      : "No traffic is stored yet: volumes appear once a capture has run or a file was imported.");
    await loadPercentiles(v, params);
    document.body.dataset.shown = String(new URLSearchParams(params));     // for tests: these tables are on screen
  }

  /* The 95th percentiles come with the interface volumes (p95), or from by=iface when another
     subject is shown. */
  async function loadPercentiles(v, params) {
    let answer = v;
    if (!(answer.p95 || answer.percentiles)) answer = await NT.api("/api/volumes", {by: "iface", period: params.period});
    const rows = answer.p95 || answer.percentiles || [];
    NT.fillTable(document.getElementById("p95"), rows, [
      {value: (r) => periodLabel(startOf(r), params.period), className: "mono"},
      {value: (r) => subjectCell("iface", subjectOf(r))},
      {value: (r) => NT.rate(pick(r, ["rx_p95_bps", "p95_rx_bps", "in_bps"])), num: true},
      {value: (r) => NT.rate(pick(r, ["tx_p95_bps", "p95_tx_bps", "out_bps"])), num: true},
      {value: (r) => NT.rate(pick(r, ["p95_bps", "bps", "max_p95_bps"])), num: true},
      {value: (r) => (r.expected ? `${NT.count(r.samples)} of ${NT.count(r.expected)}` : NT.count(r.samples)), num: true,
       title: (r) => (r.first_sample ? `5-minute samples from ${NT.time(r.first_sample)} to ${NT.time(r.last_sample)}` : "")},
    ], "No interface traffic is stored yet.");
  }

  const reload = () => load().then(() => NT.status(""), (e) => NT.status(e.message, true));
  form.querySelectorAll("select[name]").forEach((s) => s.addEventListener("change", reload));
  reload();
  window.setInterval(reload, 60000);
})();
