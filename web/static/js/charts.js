/* Charts on a true time axis: Chart.js's time scale (date adapter vendored: chartjs-adapter-date-fns),
   buckets at their real times, missing buckets drawn as zero at the series' step, no smoothing,
   a lone bucket drawn as a point. Sent is drawn above the axis and received below it (mirrored),
   so neither can hide the other. Ticks fall on whole minutes, hours and days of this browser's
   time zone. window.nettallyCharts holds the page's charts by name (tests read their data). */
"use strict";

const NTChart = (() => {
  const DAY = 86400;
  const charts = {};
  window.nettallyCharts = charts;

  /* Tick spacings in seconds: each divides a day (or is whole days), so ticks land on round times. */
  const NICE = [10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
                DAY, 2 * DAY, 7 * DAY, 14 * DAY, 30 * DAY];
  const pad = (n) => String(n).padStart(2, "0");
  const hm = (d) => `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  const isMidnight = (d) => d.getHours() === 0 && d.getMinutes() === 0 && d.getSeconds() === 0;

  function dayLabel(d, withYear) {
    const opts = withYear ? {year: "numeric", month: "short", day: "numeric"} : {month: "short", day: "numeric"};
    return d.toLocaleDateString("en", opts);
  }

  /* afterBuildTicks: ticks at round local times, as many as the width holds (about 90 px each). */
  function roundTicks(scale) {
    const {min, max} = scale;
    if (!(max > min)) return;
    const room = Math.max(2, Math.floor((scale.width || 600) / 90));
    const span = (max - min) / 1000;
    const step = NICE.find((s) => span / s <= room) || NICE[NICE.length - 1];
    scale.ntStep = step;
    const ticks = [];
    const start = new Date(min);
    if (step < 60) start.setSeconds(0, 0);
    else start.setHours(0, 0, 0, 0);                 // local midnight: steps below a day divide it
    if (step < DAY) {
      const first = start.getTime() + Math.ceil((min - start.getTime()) / (step * 1000)) * step * 1000;
      for (let t = first; t <= max; t += step * 1000) ticks.push({value: t, major: isMidnight(new Date(t))});
    } else if (step >= 30 * DAY) {
      const d = new Date(start.getFullYear(), start.getMonth(), 1);
      while (d.getTime() < min) d.setMonth(d.getMonth() + 1);
      for (; d.getTime() <= max; d.setMonth(d.getMonth() + 1)) ticks.push({value: d.getTime(), major: true});
    } else {
      const d = new Date(start);
      while (d.getTime() < min) d.setDate(d.getDate() + 1);
      for (; d.getTime() <= max; d.setDate(d.getDate() + step / DAY)) ticks.push({value: d.getTime(), major: true});
    }
    scale.ticks = ticks;
  }

  function tickLabel(value) {
    const d = new Date(value);
    const withYear = new Date(this.min).getFullYear() !== new Date().getFullYear();
    if ((this.ntStep || 0) >= DAY) return dayLabel(d, withYear);
    if (isMidnight(d)) return dayLabel(d, withYear);
    return (this.ntStep || 60) < 60 ? `${hm(d)}:${pad(d.getSeconds())}` : hm(d);
  }

  /* Points every `step` seconds over [from, to): a bucket's value where there is one, 0 elsewhere.
     buckets: epoch seconds aligned to step. Far longer spans than data (since=0) start at the data. */
  function dense(buckets, values, step, from, to) {
    const at = new Map();
    buckets.forEach((b, i) => at.set(b, (at.get(b) || 0) + values[i]));
    let start = Math.floor(from / step) * step;
    if (buckets.length && (to - start) / step > 2000) start = Math.min(...buckets);
    if (!buckets.length && (to - start) / step > 2000) start = to - 2000 * step;
    const out = [];
    for (let t = start; t < to; t += step) out.push({x: t * 1000, y: at.get(t) || 0});
    return out;
  }

  /* A point radius per point: visible where a non-zero value stands alone between zeros. */
  function lonePoints(points, radius) {
    return points.map((p, i) => {
      const prev = i > 0 ? points[i - 1].y : 0;
      const next = i < points.length - 1 ? points[i + 1].y : 0;
      return p.y !== 0 && prev === 0 && next === 0 ? radius || 3 : 0;
    });
  }

  function alpha(hex, a) {
    const v = Math.round(a * 255).toString(16).padStart(2, "0");
    return /^#[0-9a-f]{6}$/i.test(hex) ? hex + v : hex;
  }

  /* One direction of one series as a filled line dataset. sign: 1 sent (above), -1 received (below). */
  function area({name, color, points, sign, stack, total, share, fill}) {
    const data = points.map((p) => ({x: p.x, y: sign * p.y}));
    return {
      label: name, name, direction: sign > 0 ? "sent" : "received", total, share,
      data, stack: stack || (sign > 0 ? "sent" : "received"),
      borderColor: color, backgroundColor: alpha(color, 0.45), borderWidth: 1, tension: 0,
      fill: fill || "origin", pointRadius: lonePoints(data), pointHoverRadius: 4,
      pointBackgroundColor: color, legendHidden: sign < 0,
    };
  }

  /* A time chart of rates (bit/s), sent up and received down. opts.stacked: areas stack per direction. */
  function timeChart(name, canvasId, opts) {
    const options = opts || {};
    const chart = new Chart(document.getElementById(canvasId), {
      type: "line",
      data: {datasets: []},
      options: {
        normalized: true,
        interaction: {mode: "index", intersect: false},
        scales: {
          x: {type: "time", afterBuildTicks: roundTicks,
              ticks: {autoSkip: false, maxRotation: 0, callback: tickLabel, major: {enabled: true},
                      font: (c) => (c.tick && c.tick.major ? {weight: "bold"} : undefined)}},
          y: {stacked: !!options.stacked, ticks: {callback: (v) => NT.rate(Math.abs(v))},
              grid: {color: (c) => (c.tick && c.tick.value === 0 ? NT.cssVar("--muted") : NT.cssVar("--grid"))}},
        },
        plugins: {
          legend: {display: options.legend !== false,
                   labels: {filter: (item, data) => !data.datasets[item.datasetIndex].legendHidden},
                   onClick: (e, item, legend) => toggleSeries(legend.chart, item.datasetIndex)},
          tooltip: {filter: (item) => item.parsed.y !== 0 || item.chart.data.datasets.length <= 2,
                    callbacks: {
                      title: (items) => (items.length ? bucketTitle(items[0]) : ""),
                      label: (c) => `${c.dataset.name} ${c.dataset.direction}: ${NT.rate(Math.abs(c.parsed.y))}`,
                    }},
        },
      },
    });
    chart.ntStep = 60;
    charts[name] = chart;
    return chart;
  }

  function bucketTitle(item) {
    const t = item.parsed.x / 1000;
    const step = item.chart.ntStep;
    return step > 1 ? `${NT.time(t)} (+${NT.duration(step)})` : NT.time(t);
  }

  /* The legend hides and shows a series' sent and received areas together. */
  function toggleSeries(chart, index) {
    const name = chart.data.datasets[index].name;
    const hidden = chart.isDatasetVisible(index);
    chart.data.datasets.forEach((d, i) => { if (d.name === name) chart.setDatasetVisibility(i, !hidden); });
    chart.update("none");
  }

  /* Shows [from, to) seconds with datasets; step: the bucket size the tooltips name. */
  function show(chart, datasets, from, to, step) {
    chart.data.datasets = datasets;
    chart.ntStep = step;
    chart.options.scales.x.min = from * 1000;
    chart.options.scales.x.max = to * 1000;
    chart.update("none");
  }

  const OTHERS_COLOR = "#94a3b8";

  /* Datasets and legend rows of an /api/historical answer: the `top` biggest series stacked as
     areas, the rest summed as "others" (with the answer's own `others`: every subject beyond its
     limit), sent above the axis and received below. Series without a direction (apps: `bytes`)
     are drawn above the axis as both ways; their rows have no tx / rx. */
  function historyDatasets(h, top, label) {
    const sum = (arrays, n) => Array.from({length: n}, (_, i) => arrays.reduce((a, arr) => a + (arr[i] || 0), 0));
    const n = h.buckets.length;
    const zeros = new Array(n).fill(0);
    const both = h.series.some((s) => s.bytes) || !!(h.others && h.others.bytes);
    const up = (s) => s.up || s.bytes || zeros;
    const down = (s) => s.down || zeros;
    const rows = h.series.slice(0, top).map((s, i) => ({key: s.key, name: label(s.key), color: NT.PALETTE[i % NT.PALETTE.length],
                                                         up: up(s), down: down(s)}));
    const rest = h.series.slice(top);
    const more = h.others && h.others.total > 0 ? [h.others] : [];
    const count = rest.length + (more.length ? h.others.count || 0 : 0);
    if (rest.length || more.length) {
      rows.push({key: null, name: count ? `others (${count})` : "others", color: OTHERS_COLOR, others: true,
                 up: sum([...more, ...rest].map(up), n), down: sum([...more, ...rest].map(down), n)});
    }
    for (const r of rows) {
      r.tx = both ? null : r.up.reduce((a, b) => a + b, 0);
      r.rx = both ? null : r.down.reduce((a, b) => a + b, 0);
      r.total = r.up.reduce((a, b) => a + b, 0) + r.down.reduce((a, b) => a + b, 0);
    }
    const grand = rows.reduce((a, r) => a + r.total, 0);
    const datasets = [];
    for (const [i, r] of rows.entries()) {
      const fill = i === 0 ? "origin" : both ? "-1" : "-2";    // stacked: down to the same direction's area below
      r.share = grand ? r.total / grand : null;
      const toRate = (arr) => arr.map((b) => (b * 8) / h.step);
      const legend = `${r.name}  ${NT.bytes(r.total)} (${NT.percent(r.share)})`;
      const sent = area({name: r.name, color: r.color, sign: 1, stack: "sent", total: r.total, share: r.share, fill,
                         points: dense(h.buckets, toRate(r.up), h.step, h.since, h.until)});
      sent.label = legend;
      if (both) {
        sent.direction = "both ways";
        datasets.push(sent);
        continue;
      }
      const received = area({name: r.name, color: r.color, sign: -1, stack: "received", total: r.total, share: r.share, fill,
                             points: dense(h.buckets, toRate(r.down), h.step, h.since, h.until)});
      received.label = legend;
      datasets.push(sent, received);
    }
    return {datasets, rows, grand};
  }

  /* /api/historical for the page's range: a preset by name (the server anchors it on the data's
     end when nothing is live); any other range, "everything" included, by since/until (the
     server widens it to whole buckets and says where they start and end). */
  const HISTORY_RANGES = ["1h", "24h", "7d", "30d"];
  async function history(extra) {
    const preset = NT.rangePreset();
    if (HISTORY_RANGES.includes(preset)) return NT.api("/api/historical", {range: preset, ...extra});
    const range = NT.rangeParams();
    return NT.api("/api/historical", {...range, since: range.since || "0", ...extra});
  }

  return {charts, dense, historyDatasets, history, lonePoints, area, timeChart, show, alpha, roundTicks, tickLabel};
})();
