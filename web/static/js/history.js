/* History: traffic per bucket over 1 h / 24 h / 7 d / 30 d, by interface, host or process. */
"use strict";

(() => {
  const form = document.getElementById("filters");
  const buttons = document.querySelectorAll("#ranges button");
  const known = [...buttons].map((b) => b.dataset.range);
  const asked = new URLSearchParams(window.location.search).get("range");
  let range = known.includes(asked) ? asked : "1h";
  const by = new URLSearchParams(window.location.search).get("by");
  if (by) form.elements.by.value = by;
  const chart = NT.rateChart("history-chart", []);
  // one legend entry per series: solid lines are what it sent, dashed what it received
  chart.options.plugins.legend = {labels: {filter: (item) => !(item.lineDash && item.lineDash.length)}};

  async function load() {
    buttons.forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.range === range)));
    const chosen = form.elements.by.value;
    window.history.replaceState(null, "", `?range=${range}&by=${chosen}`);
    const h = await NT.api("/api/historical", {range, by: chosen});
    const toRate = (arr) => arr.map((b) => (b * 8) / h.step);
    chart.data.labels = h.buckets.map((t) => NT.shortTime(t, h.step));
    chart.data.datasets = [];
    h.series.forEach((s, i) => {
      const color = NT.PALETTE[i % NT.PALETTE.length];
      const name = String(s.key);
      chart.data.datasets.push({...NT.series(`${name}`, color), data: toRate(s.up)});
      chart.data.datasets.push({...NT.series(`${name} down`, color, true), data: toRate(s.down)});
    });
    chart.update("none");
    const span = h.until - h.since;
    NT.fillTable(document.getElementById("series"), h.series, [
      {value: (s) => (chosen === "host" ? NT.hostLink(s.key) : String(s.key)), className: "mono"},
      {value: (s) => NT.bytes(s.up.reduce((a, b) => a + b, 0)), num: true},
      {value: (s) => NT.bytes(s.down.reduce((a, b) => a + b, 0)), num: true},
      {value: (s) => NT.rate((s.total * 8) / span), num: true},
    ], "no traffic in this range");
  }
  const reload = () => load().then(() => NT.status(""), (e) => NT.status(e.message, true));
  buttons.forEach((b) => b.addEventListener("click", () => { range = b.dataset.range; reload(); }));
  form.elements.by.addEventListener("change", reload);
  reload();
  window.setInterval(reload, 60000);
})();
