/* Processes: bytes charged to each process (or process name) on this host. */
"use strict";

NT.listPage({
  path: "/api/processes", csvPath: "/api/processes.csv", table: document.getElementById("processes"), sort: "bytes",
  refresh: 15, empty: "no traffic attributed to a process in this range",
  columns: [
    {value: (r) => r.pid, num: true},
    {value: (r) => r.process, className: "mono"}, {value: (r) => r.username},
    {value: (r) => NT.rate(r.current_bps), num: true}, {value: (r) => NT.rate(r.peak_bps), num: true},
    {value: (r) => NT.bytes(r.tx_bytes), num: true}, {value: (r) => NT.bytes(r.rx_bytes), num: true},
    {value: (r) => NT.bytes(r.bytes), num: true}, {value: (r) => NT.time(r.last_seen)},
    {value: (r) => r.cmdline, className: "cmd", title: (r) => r.cmdline},
  ],
});
