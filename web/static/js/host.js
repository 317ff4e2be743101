/* One host: totals, rates, traffic over time, peers and latest flows. */
"use strict";

(() => {
  const ip = document.getElementById("host").dataset.ip;
  const form = document.getElementById("filters");
  const since = new URLSearchParams(window.location.search).get("since");
  if (since) form.elements.since.value = since;
  const chart = NT.rateChart("host-chart", [NT.series("sent", NT.cssVar("--up")),
                                            NT.series("received", NT.cssVar("--down"))]);

  function fact(dl, label, value) { dl.append(NT.el("dt", {}, label), NT.el("dd", {}, value)); }

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
    const dl = NT.el("dl", {className: "facts", id: "facts"});
    fact(dl, "MAC", h.mac || "unknown");
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
      {value: (r) => NT.hostLink(r.peer)}, {value: (r) => NT.bytes(r.tx_bytes), num: true},
      {value: (r) => NT.bytes(r.rx_bytes), num: true}, {value: (r) => NT.count(r.flows), num: true},
    ]);
    NT.fillTable(document.getElementById("host-flows"), h.flows, [
      {value: (r) => r.proto},
      {value: (r) => `${r.orig_h}${r.orig_p ? `:${r.orig_p}` : ""}`, className: "mono"},
      {value: (r) => `${r.resp_h}${r.resp_p ? `:${r.resp_p}` : ""}`, className: "mono"},
      {value: (r) => NT.bytes(r.bytes), num: true},
      {value: (r) => r.orig_process || r.resp_process, className: "mono"}, {value: (r) => NT.time(r.last_seen)},
    ]);
  }
  form.addEventListener("change", () => load().catch((e) => NT.status(e.message, true)));
  NT.every(15, load);
})();
