/* Flows: filter by host, port, protocol and process; the CSV button exports the same filter. */
"use strict";

(() => {
  const endpoint = (r, side) => {
    const port = r[`${side}_p`];
    return NT.el("span", {className: "mono"}, NT.hostLink(r[`${side}_h`]), port ? `:${port}` : "");
  };
  const proc = (r, side) => (r[`${side}_pid`] === null ? null : `${r[`${side}_process`]} (${r[`${side}_pid`]})`);
  NT.listPage({
    path: "/api/flows", csvPath: "/api/flows.csv", table: document.getElementById("flows"), sort: "last_seen",
    empty: "no flow matches",
    columns: [
      {value: (r) => r.proto}, {value: (r) => endpoint(r, "orig")}, {value: (r) => endpoint(r, "resp")},
      {value: (r) => NT.bytes(r.orig_bytes), num: true}, {value: (r) => NT.bytes(r.resp_bytes), num: true},
      {value: (r) => NT.count(r.orig_packets + r.resp_packets), num: true},
      {value: (r) => proc(r, "orig"), className: "mono"}, {value: (r) => proc(r, "resp"), className: "mono"},
      {value: (r) => NT.time(r.first_seen)}, {value: (r) => NT.time(r.last_seen)},
    ],
    after: (d) => { document.getElementById("count").textContent = `${NT.count(d.total)} flows match`; },
  });
})();
