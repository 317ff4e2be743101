/* One host: its name, totals, rates, traffic over time, bytes by class and service, peers (by
   name) and latest flows. */
"use strict";

(() => {
  const ip = document.getElementById("host").dataset.ip;
  const form = document.getElementById("filters");
  const since = new URLSearchParams(window.location.search).get("since");
  if (since) form.elements.since.value = since;
  const chart = NT.rateChart("host-chart", [NT.series("sent", NT.cssVar("--up")),
                                            NT.series("received", NT.cssVar("--down"))]);

  function fact(dl, label, value) { dl.append(NT.el("dt", {}, label), NT.el("dd", {}, value)); }

  function showName(name) {
    const node = document.getElementById("host-name");
    node.textContent = name || "";
    node.title = name ? `${name} (${ip})` : "";
    document.title = `${name ? `${name} (${ip})` : ip} · NetTally`;
  }

  async function load() {
    const chosen = form.elements.since.value;
    window.history.replaceState(null, "", `?since=${encodeURIComponent(chosen)}`);
    let h;
    try {
      h = await NT.api(`/api/hosts/${encodeURIComponent(ip)}`, {since: chosen});
    } catch (e) {
      if (e.status !== 404) throw e;
      document.getElementById("facts").replaceChildren(NT.el("dd", {}, "No traffic for this address in this range."));
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
    const peakOf = {60: "Peak minute", 3600: "Peak hour", 86400: "Peak day"}[h.resolution] || "Peak";
    fact(dl, peakOf, NT.rate(h.peak_bps));
    fact(dl, "Sent", NT.bytes(h.tx_bytes));
    fact(dl, "Received", NT.bytes(h.rx_bytes));
    fact(dl, "First seen", NT.time(h.first_seen));
    fact(dl, "Last seen", NT.time(h.last_seen));
    document.getElementById("facts").replaceWith(dl);
    const step = h.history.step;
    chart.data.labels = h.history.buckets.map((t) => NT.shortTime(t, step));
    chart.data.datasets[0].data = h.history.tx.map((b) => (b * 8) / step);
    chart.data.datasets[1].data = h.history.rx.map((b) => (b * 8) / step);
    chart.update("none");
    NT.fillTable(document.getElementById("peers"), h.peers, [
      {value: (r) => NT.hostLink(r.peer, r.name)}, {value: (r) => NT.bytes(r.tx_bytes), num: true},
      {value: (r) => NT.bytes(r.rx_bytes), num: true}, {value: (r) => NT.count(r.flows), num: true},
    ]);
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
    ]);
    await loadShares(chosen);
  }

  async function loadShares(chosen) {
    const [classes, services] = await Promise.all([
      NT.api("/api/apps", {since: chosen, host: ip, by: "class", limit: 20}),
      NT.api("/api/apps", {since: chosen, host: ip, by: "service", limit: 20})]);
    NT.fillShares(document.getElementById("host-classes"), classes, "class");
    NT.fillShares(document.getElementById("host-services"), services, "service");
    document.body.dataset.shown = `since=${chosen}`;       // for tests: this range's answers are on screen
  }
  form.addEventListener("change", () => load().catch((e) => NT.status(e.message, true)));
  NT.every(15, load);
})();
