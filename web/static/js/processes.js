/* Processes: bytes charged to each process (or process name) on this host; a process's name
   opens its traffic by class and service (by name: every process of that name). */
"use strict";

(() => {
  let chosen = null;                 // the process name whose breakdown is shown
  let latest = 0;

  async function breakdown(name) {
    const mine = ++latest;
    const range = NT.rangeParams();
    const since = range.since || "";
    const [classes, services] = await Promise.all([
      NT.api("/api/apps", {...range, process: name, by: "class", limit: 20}),
      NT.api("/api/apps", {...range, process: name, by: "service", limit: 20})]);
    if (mine !== latest) return;
    document.getElementById("breakdown-name").textContent = name;
    document.getElementById("breakdown-name").title = name;
    NT.fillShares(document.getElementById("process-classes"), classes, "class", "No flow of this name in this range.");
    NT.fillShares(document.getElementById("process-services"), services, "service", "No flow of this name in this range.");
    const section = document.getElementById("breakdown");
    section.hidden = false;
    section.dataset.shown = `${name}|${since}`;        // for tests: this name's answers are on screen
  }
  const show = (name) => { chosen = name; breakdown(name).catch((e) => NT.status(e.message, true)); };

  const nameButton = (r) => {
    const button = NT.el("button", {type: "button", className: "linklike mono", title: `traffic of ${r.process} by class and service`},
                         r.process);
    button.addEventListener("click", () => show(r.process));
    return button;
  };

  NT.listPage({
    path: "/api/processes", csvPath: "/api/processes.csv", table: document.getElementById("processes"),
    sort: () => (NT.isLive() ? NT.NOW_SORT : "bytes"), refresh: 15, empty: "No traffic was attributed to a process in this range.",
    columns: [
      {value: (r) => r.pid, num: true},
      {value: nameButton}, {value: (r) => r.username},
      {value: (r) => NT.rate(r.current_bps), num: true}, {value: (r) => NT.rate(r.peak_bps), num: true, className: "wide", title: NT.peakTitle},
      {value: (r) => NT.bytes(r.tx_bytes), num: true}, {value: (r) => NT.bytes(r.rx_bytes), num: true},
      {value: (r) => NT.bytes(r.bytes), num: true}, {value: (r) => NT.time(r.last_seen), className: "wide"},
      {value: (r) => r.cmdline, className: "cmd", title: (r) => r.cmdline},
    ],
    after: () => { if (chosen !== null) show(chosen); },
  });
})();
