/* History: traffic per bucket over the page's range, by interface, host, process or app: the
   biggest series stacked as areas and the rest as "others" (the server sums every subject beyond
   them), sent above the axis and received below (apps, which have no direction: above); the
   table under the chart is its legend, with bytes and shares. */
"use strict";

(() => {
  const TOP = 8;
  const form = document.getElementById("filters");
  const by = new URLSearchParams(window.location.search).get("by");
  if (by) form.elements.by.value = by;
  const chart = NTChart.timeChart("history", "history-chart", {stacked: true});

  async function load() {
    const chosen = form.elements.by.value;
    const shown = new URLSearchParams({...NT.rangeParams(), by: chosen});
    window.history.replaceState(null, "", `?${shown}`);
    const h = await NTChart.history({by: chosen, limit: chosen === "interface" ? 20 : TOP});
    const label = (key) => (chosen === "app" ? NT.appsKey({app: key}, "app") : String(key));
    const {datasets, rows, grand} = NTChart.historyDatasets(h, TOP, label);
    NTChart.show(chart, datasets, h.since, h.until, h.step);
    const empty = document.getElementById("history-empty");
    empty.hidden = rows.length > 0;
    empty.textContent = `No traffic in this range (${NT.rangeText()}). Choose a longer range or “everything”.`;
    const span = h.until - h.since;
    NT.fillTable(document.getElementById("series"), rows, [
      {value: (r) => {
        const swatch = NT.el("span", {className: "swatch"});
        swatch.style.backgroundColor = r.color;
        const name = r.others ? NT.el("span", {className: "muted"}, r.name)
          : chosen === "host" ? NT.hostLink(r.key)
            : chosen === "app" && !r.key ? NT.el("span", {className: "muted"}, r.name) : NT.el("span", {className: "mono"}, r.name);
        return NT.el("span", {}, swatch, name);
      }},
      {value: (r) => NT.bytes(r.tx), num: true}, {value: (r) => NT.bytes(r.rx), num: true},
      {value: (r) => NT.bytes(r.total), num: true}, {value: (r) => NT.percent(r.share), num: true},
      {value: (r) => NT.rate((r.total * 8) / span), num: true},
    ], `No traffic in this range (${NT.rangeText()}).`);
    document.body.dataset.shown = String(shown);       // for tests: this range's chart is drawn
    document.body.dataset.total = String(grand);
  }
  const reload = () => load().then(() => NT.status(""), (e) => NT.status(e.message, true));
  form.elements.by.addEventListener("change", reload);
  NT.onRange(reload);
  NT.rangeReady.then(() => {
    reload();
    window.setInterval(reload, 60000);
  });
})();
