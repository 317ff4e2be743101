/* Alerts: what crossed a limit, by state, severity and range (acknowledge from here); how the
   e-mail and webhook deliveries fare; the rules in force (switch a rule off or on, or back to its
   file / built-in version). Everything is written as text. */
"use strict";

(() => {
  const form = document.getElementById("filters");
  const given = new URLSearchParams(window.location.search);
  for (const name of ["state", "severity"]) {
    const select = form.elements[name];
    const asked = given.get(name);
    // only a value the menu offers: anything else would silently show every alert
    if (asked !== null && select && [...select.options].some((o) => o.value === asked)) select.value = asked;
  }
  const table = document.getElementById("alerts");
  const DETAILS = ["rule", "kind", "scope", "subject", "origin", "value", "peak", "threshold", "unit", "window", "closed"];
  const details = (r) => DETAILS.filter((k) => r[k] !== null && r[k] !== undefined && r[k] !== "")
    .map((k) => `${k}=${k === "closed" ? NT.time(r[k]) : r[k]}`).join("  ");

  async function loadAlerts() {
    const params = {...NT.formValues(form), ...NT.rangeParams()};
    window.history.replaceState(null, "", `?${new URLSearchParams(params)}`);
    document.getElementById("csv").href = NT.csvHref("/api/alerts.csv", params);
    const a = await NT.api("/api/alerts", params);
    const empty = document.getElementById("alerts-empty");
    empty.hidden = a.rows.length > 0;
    const which = params.severity ? `no ${params.severity.replace(",", " or ")} alert` : "No alert";
    empty.textContent = `${which[0].toUpperCase()}${which.slice(1)} opened in this range (${NT.rangeText()}).`;
    NT.fillTable(table, a.rows, [...NT.alertColumns, NT.alertActionColumn(a.writable), {value: details, className: "mono"}],
                 "none");    document.body.dataset.shown = String(new URLSearchParams(params));    // for tests: these rows answer these filters
  }

  /* Delivery of alerts by e-mail and webhook (/api/alerts/delivery): counts since the collector
     started; the last error is the server's text (cleaned of credentials there), shown as text. */
  async function loadDelivery() {
    let d;
    try {
      d = await NT.api("/api/alerts/delivery");
    } catch (e) {
      if (e.status !== 404) throw e;
      d = null;                                    // an older server: no delivery counts
    }
    const channels = (d && d.channels) || [];
    const empty = document.getElementById("delivery-empty");
    const deliveryTable = document.getElementById("delivery");
    empty.hidden = channels.length > 0;
    deliveryTable.hidden = channels.length === 0;
    empty.textContent = d === null ? "This server does not report deliveries."
      : "No delivery reported: e-mail and webhook are off, or the collector has not sent anything since it started.";
    const n = (k) => ({value: (c) => NT.count(c[k]), num: true});
    NT.fillTable(deliveryTable, channels, [
      {value: (c) => c.channel, className: "mono"}, {value: (c) => NT.clip(c.target, "mono")},
      n("delivered"), n("failed"), n("retries"), n("dropped"), n("waiting"),
      {value: (c) => (c.last_error ? NT.el("span", {className: "delivery-error"}, c.last_error) : null),
       title: (c) => (c.last_error_at ? `at ${NT.time(c.last_error_at)}` : "")},
    ], "none");
    document.body.dataset.delivery = String(channels.length);     // for tests: the delivery rows are on screen
  }

  const WINDOWS = [[86400, "d"], [3600, "h"], [60, "min"]];
  function span(seconds) {
    for (const [size, name] of WINDOWS) if (seconds >= size && seconds % size === 0) return `${seconds / size} ${name}`;
    return `${seconds} s`;
  }
  function limit(entry) {
    const t = entry.rule.threshold;
    if (entry.unit === "bytes") return NT.bytes(t);
    if (entry.unit === "bit/s") return NT.rate(t);
    if (entry.unit === "share") return `${+(t * 100).toFixed(3)} %`;
    if (entry.unit === "ms") return `${+t.toFixed(3)} ms`;
    return "–";
  }
  const KIND_TEXT = {bytes: "bytes", rate: "rate", new_device: "new devices", drops: "dropped frames",
                     coverage: "share attributed to processes", rtt: "mean TCP round trip",
                     retransmits: "TCP retransmission rate"};
  function measures(rule) {
    const what = KIND_TEXT[rule.kind] || rule.kind;
    const per = rule.scope === "all" || rule.kind === "new_device" ? "" : ` per ${rule.scope}`;
    const direction = ["bytes", "rate"].includes(rule.kind) ? {tx: ", sent", rx: ", received"}[rule.direction] || "" : "";
    return `${what}${per}${direction}`;
  }

  async function change(method, name, body) {
    await NT.send(method, `/api/alerts/rules/${encodeURIComponent(name)}`, body);
    await loadRules();
  }

  function actions(entry) {
    const name = entry.rule.name;
    const box = NT.el("span", {className: "actions"});
    const toggle = NT.el("button", {type: "button", className: "toggle"}, entry.rule.enabled ? "Switch off" : "Switch on");
    toggle.addEventListener("click", () => change("PATCH", name, {enabled: !entry.rule.enabled})
      .catch((e) => NT.status(e.message, true)));
    box.append(toggle);
    if (entry.source === "api") {
      const reset = NT.el("button", {type: "button", className: "reset",
                                     title: entry.replaces ? `back to the ${entry.replaces} rule` : "remove this rule"},
                          entry.replaces ? "Reset" : "Remove");
      reset.addEventListener("click", () => change("DELETE", name).catch((e) => NT.status(e.message, true)));
      box.append(" ", reset);
    }
    return box;
  }

  async function loadRules() {
    const r = await NT.api("/api/alerts/rules");
    const writable = r.writable;
    const problems = document.getElementById("rules-problems");
    problems.hidden = r.problems.length === 0;
    problems.textContent = r.problems.join("; ");
    NT.fillTable(document.getElementById("rules"), r.rules, [
      {value: (e) => e.rule.name, className: "mono"},
      {value: (e) => NT.el("span", {}, NT.severityBadge(e.rule), e.rule.severity ? " " : null, measures(e.rule))},
      {value: limit, num: true},
      {value: (e) => span(e.rule.window)},
      {value: (e) => e.rule.match.join(", ") || "all", className: "mono"},
      {value: (e) => (e.replaces ? `${e.source} (over ${e.replaces})` : e.source)},
      {value: (e) => (e.rule.enabled ? "on" : "off")},
      {value: (e) => (writable ? actions(e) : null)},
    ], "no rules");
  }

  form.querySelectorAll("select[name]").forEach((s) => s.addEventListener("change",
    () => loadAlerts().catch((e) => NT.status(e.message, true))));
  NT.onRange(() => loadAlerts().catch((e) => NT.status(e.message, true)));
  NT.live({});
  NT.rangeReady.then(() => NT.onAlerts(loadAlerts, 15));
  NT.every(60, loadRules);
  NT.every(30, loadDelivery);
})();
