/* One host: its name, totals, rates, traffic over time, bytes by class and service, peers (by
   name) and latest flows. */
"use strict";

(() => {
  const ip = document.getElementById("host").dataset.ip;
  const chart = NTChart.timeChart("host", "host-chart");
  const UP = NT.cssVar("--up");
  const DOWN = NT.cssVar("--down");

  function fact(dl, label, value) { dl.append(NT.el("dt", {}, label), NT.el("dd", {}, value)); }

  function showName(name) {
    const node = document.getElementById("host-name");
    node.textContent = name || "";
    node.title = name ? `${name} (${ip})` : "";
    document.title = `${name ? `${name} (${ip})` : ip} · NetTally`;
  }

  async function load() {
    const range = NT.rangeParams();
    window.history.replaceState(null, "", `?${NT.rangeQuery()}`);
    let h;
    try {
      h = await NT.api(`/api/hosts/${encodeURIComponent(ip)}`, range);
    } catch (e) {
      if (e.status !== 404) throw e;
      const everything = NT.el("a", {href: `?since=0${range.until ? `&until=${encodeURIComponent(range.until)}` : ""}`},
                               "everything stored");
      document.getElementById("facts").replaceChildren(NT.el("dd", {className: "empty-state"},
        `No traffic for this address in this range (${NT.rangeText()}). Try a longer range, or `, everything, "."));
      NTChart.show(chart, [], Date.now() / 1000 - 3600, Date.now() / 1000, 60);
      document.body.dataset.shown = NT.rangeQuery();
      return;
    }
    showName(h.name);
    const dl = NT.el("dl", {className: "facts", id: "facts"});
    fact(dl, "Name", h.name ? NT.clip(h.name) : "not seen on the wire");
    fact(dl, "MAC", h.mac || "unknown");
    fact(dl, "Vendor", h.vendor ? NT.clip(h.vendor) : "unknown");
    fact(dl, "Now", NT.rate(h.current_bps));
    fact(dl, "Average", NT.rate(h.avg_bps));
    // the peak is of the buckets the range was read at: minutes, or hours/days past their retention
    const peakOf = {1: "Peak second", 60: "Peak minute", 3600: "Peak hour", 86400: "Peak day"}[h.resolution] || "Peak";
    fact(dl, peakOf, NT.el("span", {}, NT.rate(h.peak_bps),
                           h.peak_at ? NT.el("span", {className: "muted"}, ` at ${NT.time(h.peak_at)}`) : null));
    fact(dl, "Sent", NT.bytes(h.tx_bytes));
    fact(dl, "Received", NT.bytes(h.rx_bytes));
    fact(dl, "First seen", NT.time(h.first_seen));
    fact(dl, "Last seen", NT.time(h.last_seen));
    document.getElementById("facts").replaceWith(dl);
    const step = h.history.step;
    const hist = h.history;
    const points = (values) => NTChart.dense(hist.buckets, values.map((b) => (b * 8) / step), step, h.since, h.until);
    const sent = points(hist.tx);
    NTChart.show(chart, [NTChart.area({name: "sent", color: UP, sign: 1, points: sent}),
                         {...NTChart.area({name: "received", color: DOWN, sign: -1, points: points(hist.rx)}),
                          legendHidden: false}],
                 sent.length ? sent[0].x / 1000 : h.since, h.until, step);
    NT.fillTable(document.getElementById("peers"), h.peers, [
      {value: (r) => NT.hostLink(r.peer, r.name)}, {value: (r) => NT.bytes(r.tx_bytes), num: true},
      {value: (r) => NT.bytes(r.rx_bytes), num: true}, {value: (r) => NT.count(r.flows), num: true},
    ], "No peer in this range.");
    const names = new Map(h.peers.map((p) => [p.peer, p.name]));
    const peer = (r) => {
      const outgoing = r.orig_h === ip;
      const [other, port] = outgoing ? [r.resp_h, r.resp_p] : [r.orig_h, r.orig_p];
      return NT.el("span", {className: "endpoint"}, outgoing ? "→ " : "← ", NT.hostLink(other, names.get(other)),
                   NT.el("wbr"), NT.el("span", {className: "mono port"}, port ? `:${port}` : ""));
    };
    NT.fillTable(document.getElementById("host-flows"), h.flows, [
      {value: (r) => NT.el("span", {className: "what"}, NT.appLabel(r.app, r.app_source), " ",
                           NT.el("span", {className: "proto"}, r.proto))},
      {value: (r) => NT.clip(r.server_name, "mono")}, {value: peer},
      {value: (r) => NT.bytes(r.bytes), num: true},
      {value: (r) => r.orig_process || r.resp_process, className: "mono"},
      {value: (r) => NT.time(r.last_seen), className: "words"},
    ], "No flow of this host in this range.");
    await loadShares(range);
  }

  async function loadShares(range) {
    const [classes, services] = await Promise.all([
      NT.api("/api/apps", {...range, host: ip, by: "class", limit: 20}),
      NT.api("/api/apps", {...range, host: ip, by: "service", limit: 20})]);
    NT.fillShares(document.getElementById("host-classes"), classes, "class");
    NT.fillShares(document.getElementById("host-services"), services, "service");
    document.body.dataset.shown = NT.rangeQuery();       // for tests: this range's answers are on screen
  }
  NT.onRange(() => load().catch((e) => NT.status(e.message, true)));
  NT.rangeReady.then(() => NT.every(15, load));
})();
