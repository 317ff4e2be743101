/* Hosts: every address seen, with current / average / peak rates. */
"use strict";

NT.listPage({
  path: "/api/hosts", csvPath: "/api/hosts.csv", table: document.getElementById("hosts"), sort: "bytes", refresh: 15,
  columns: [
    {value: (r) => NT.hostLink(r.ip)}, {value: (r) => r.mac, className: "mono"},
    {value: (r) => NT.rate(r.current_bps), num: true}, {value: (r) => NT.rate(r.avg_bps), num: true},
    {value: (r) => NT.rate(r.peak_bps), num: true}, {value: (r) => NT.bytes(r.tx_bytes), num: true},
    {value: (r) => NT.bytes(r.rx_bytes), num: true}, {value: (r) => NT.bytes(r.bytes), num: true},
    {value: (r) => NT.time(r.first_seen)}, {value: (r) => NT.time(r.last_seen)},
  ],
});
