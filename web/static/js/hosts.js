/* Hosts: every address seen, by name where one was learnt, with current / average / peak rates. */
"use strict";

(() => {
  const link = (r) => `/hosts/${encodeURIComponent(r.ip)}`;
  NT.listPage({
    path: "/api/hosts", csvPath: "/api/hosts.csv", table: document.getElementById("hosts"), refresh: 15,
    sort: () => (NT.isLive() ? NT.NOW_SORT : "bytes"), empty: "No host had traffic in this range.",
    columns: [
      {value: (r) => (r.name ? NT.el("a", {href: link(r), className: "clip name", title: `${r.name} (${r.ip})`}, r.name) : null)},
      {value: (r) => NT.hostLink(r.ip)}, {value: (r) => r.mac, className: "mono wide"},
      {value: (r) => NT.clip(r.vendor)},
      {value: (r) => NT.rate(r.current_bps), num: true}, {value: (r) => NT.rate(r.avg_bps), num: true, className: "wide"},
      {value: (r) => NT.rate(r.peak_bps), num: true, className: "wide", title: NT.peakTitle}, {value: (r) => NT.bytes(r.tx_bytes), num: true},
      {value: (r) => NT.bytes(r.rx_bytes), num: true}, {value: (r) => NT.bytes(r.bytes), num: true},
      {value: (r) => NT.time(r.first_seen), className: "wide words"}, {value: (r) => NT.time(r.last_seen), className: "words"},
    ],
  });
})();
