/* Flows: filter by host, name, port, protocol, app, class and process; the CSV button exports the
   same filter. Each side by name where one is known (the address beside it), with its process;
   TCP flows with their round trip and retransmissions (sortable). */
"use strict";

(() => {
  const endpoint = (r, side) => {
    const port = r[`${side}_p`];
    const pid = r[`${side}_pid`];
    return NT.el("span", {className: "endpoint"}, NT.hostLink(r[`${side}_h`], r[`${side}_name`]), NT.el("wbr"),
                 NT.el("span", {className: "mono port"}, port ? `:${port}` : ""),
                 pid === null ? null : NT.el("span", {className: "process mono"}, `${r[`${side}_process`]} (${pid})`));
  };
  /* TCP health (issue 13): "–" for other protocols and where a field is missing (an older server). */
  const ms = (v) => (typeof v !== "number" ? null : `${v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0)} ms`);
  const rtt = (r) => (r.proto !== "tcp" ? null : ms(r.rtt_ms) || ms(r.rtt_avg_ms));
  const rttTitle = (r) => (r.proto === "tcp" && typeof r.rtt_avg_ms === "number"
    ? `running RTT: min ${ms(r.rtt_min_ms) || "–"}, average ${ms(r.rtt_avg_ms)}, max ${ms(r.rtt_max_ms) || "–"}` : "");
  const retransmits = (r) => (r.proto !== "tcp" || typeof r.retransmits !== "number" ? null : NT.count(r.retransmits));
  const what = (r) => NT.el("span", {className: "what"}, NT.appLabel(r.app, r.app_source), " ",
                            NT.el("span", {className: "proto"}, r.proto));
  NT.listPage({
    path: "/api/flows", csvPath: "/api/flows.csv", table: document.getElementById("flows"), sort: "last_seen",
    empty: "No flow matches these filters in this range.",
    columns: [
      {value: what}, {value: (r) => NT.clip(r.server_name, "mono")},
      {value: (r) => endpoint(r, "orig")}, {value: (r) => endpoint(r, "resp")},
      {value: (r) => NT.clip(r.service), className: "wide"}, {value: (r) => r.class, className: "words"},
      {value: (r) => NT.bytes(r.orig_bytes), num: true}, {value: (r) => NT.bytes(r.resp_bytes), num: true},
      {value: rtt, num: true, className: "wide", title: rttTitle}, {value: retransmits, num: true, className: "wide"},
      {value: (r) => NT.count(r.orig_packets + r.resp_packets), num: true, className: "wide"},
      {value: (r) => NT.time(r.first_seen), className: "wide words"}, {value: (r) => NT.time(r.last_seen), className: "words"},
    ],
    after: (d) => { document.getElementById("count").textContent = `${NT.count(d.total)} flows match`; },
  });

  // The apps of the last day as suggestions for the App field (any other name may be typed).
  NT.api("/api/apps", {since: "24h", by: "app", limit: 100}).then((a) => {
    document.getElementById("apps-seen").replaceChildren(
      ...a.rows.filter((r) => r.app).map((r) => NT.el("option", {value: r.app})));
  }, () => {});
})();
