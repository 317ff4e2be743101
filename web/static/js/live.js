/* Alerts everywhere and the live stream: the panels' alert columns with their Acknowledge
   button, a toast when an alert opens, and the one /api/stream connection of a page. Loaded on
   every page after common.js; adds to NT. Alert subjects and messages are hostile text: written
   with textContent only (NT.el). */
"use strict";

(() => {
  const {el, time, status, api, send} = NT;

  const ALERTS_CHANGED = "nettally:alerts";      // document event: alerts changed, panels reload

  async function acknowledge(id) {
    await send("POST", `/api/alerts/${encodeURIComponent(id)}/acknowledge`);
    dropToast(id);
    document.dispatchEvent(new CustomEvent(ALERTS_CHANGED));
  }

  function ackButton(r) {
    const button = el("button", {type: "button", className: "ack"}, "Acknowledge");
    button.dataset.alert = String(r.id);
    button.addEventListener("click", () => {
      button.disabled = true;
      acknowledge(r.id).then(() => status(""), (e) => { button.disabled = false; status(e.message, true); });
    });
    return button;
  }

  function alertState(r) {
    if (r.state !== "open") return r.acked ? "closed, acknowledged" : "closed";
    return r.acked ? "open, acknowledged" : "open";
  }

  /* The acknowledge cell: a button for an open alert nobody acknowledged yet (if this server
     can write the database: /api/alerts says `writable`), else who did. */
  function alertActionColumn(writable) {
    return {value: (r) => {
      if (r.acked) return `acknowledged ${time(r.acked)}${r.acked_by ? ` by ${r.acked_by}` : ""}`;
      return r.state === "open" && writable ? ackButton(r) : null;
    }};
  }

  /* Severities, least urgent first (docs/ALERTS.md). The badge's class comes from this list only,
     never from the text the server sent; an alert without one (an older server) shows "–". */
  const SEVERITIES = ["info", "warning", "critical"];
  const severityRank = (r) => SEVERITIES.indexOf(r.severity);
  function severityBadge(r) {
    if (!r.severity) return null;
    const known = SEVERITIES.includes(r.severity);
    return el("span", {className: `severity severity-${known ? r.severity : "unknown"}`}, r.severity);
  }

  const alertColumns = [
    {value: (r) => time(r.opened)},
    // the badge shares the state's cell: the columns of the alert tables stay where they were
    {value: (r) => el("span", {}, severityBadge(r), r.severity ? " " : null, alertState(r)), className: "state"},
    {value: (r) => r.message},
  ];

  const MAX_TOASTS = 5;
  const TOAST_SECONDS = 120;
  let newestAlert = null;                  // newest alert id this page knows; null: none heard yet

  function toastBox() {
    let box = document.getElementById("toasts");
    if (!box) {
      box = el("div", {id: "toasts", className: "toasts"});
      box.setAttribute("aria-live", "assertive");
      document.body.append(box);
    }
    return box;
  }

  function dropToast(id) {
    for (const t of toastBox().querySelectorAll(".toast")) if (t.dataset.alert === String(id)) t.remove();
  }

  function toast(r) {
    const box = toastBox();
    if ([...box.children].some((t) => t.dataset.alert === String(r.id))) return;
    const close = el("button", {type: "button", className: "dismiss", title: "Dismiss"}, "Dismiss");
    const known = SEVERITIES.includes(r.severity);
    const node = el("div", {className: `toast${known ? ` toast-${r.severity}` : ""}`},
      el("div", {className: "toast-head"}, el("strong", {}, "Alert"), severityBadge(r)),
      el("p", {className: "toast-message"}, r.message),
      el("p", {className: "muted"}, `opened ${time(r.opened)}`),
      el("div", {className: "toast-actions"}, ackButton(r), close));
    node.dataset.alert = String(r.id);
    node.setAttribute("role", "alert");
    close.addEventListener("click", () => node.remove());
    box.prepend(node);
    while (box.children.length > MAX_TOASTS) box.lastElementChild.remove();
    window.setTimeout(() => node.remove(), TOAST_SECONDS * 1000);
  }

  /* snapshot: {latest, open_count, open: [alert rows, newest first]} from the stream (or a poll).
     The first one only tells what is already known; later, every open alert newer than that
     and not acknowledged gets a toast (also after a reconnect: one opened meanwhile is still
     in `open`). Toasts of alerts no longer open and unacknowledged go away. */
  function alertsSeen(snapshot) {
    const open = snapshot.open || [];
    if (newestAlert !== null) {
      for (const r of [...open].reverse()) if (r.id > newestAlert && !r.acked) toast(r);
    }
    newestAlert = Math.max(newestAlert || 0, snapshot.latest || 0, ...open.map((r) => r.id));
    document.body.dataset.alertsKnown = String(newestAlert);     // for tests: the page has heard
    if (open.length >= (snapshot.open_count || 0)) {
      const pending = new Set(open.filter((r) => !r.acked).map((r) => String(r.id)));
      for (const t of toastBox().querySelectorAll(".toast")) if (!pending.has(t.dataset.alert)) t.remove();
    }
    document.dispatchEvent(new CustomEvent(ALERTS_CHANGED, {detail: snapshot}));
  }

  /* Calls load() now and when alerts change (at most once a second), and every `seconds`. */
  function onAlerts(load, seconds) {
    let queued = false;
    const run = () => load().then(() => status(""), (e) => status(e.message, true));
    document.addEventListener(ALERTS_CHANGED, () => {
      if (queued) return;
      queued = true;
      window.setTimeout(() => { queued = false; run(); }, 1000);
    });
    run();
    window.setInterval(run, seconds * 1000);
  }

  /* The live stream (/api/stream), one per page: handlers by event name ("usage"). Alert events
     always go to alertsSeen. The browser reconnects a dropped stream by itself (after the
     server's retry: 2 s); a refused one (503: too many streams open) it gives up on, so that case
     is retried here. */
  const streamHandlers = {};
  let streamOn = false;
  function live(handlers) {
    Object.assign(streamHandlers, handlers || {});
    if (streamOn) return;
    streamOn = true;
    const connect = () => {
      const stream = new EventSource(NT.agent ? "/api/stream?agent=" + encodeURIComponent(NT.agent) : "/api/stream");
      stream.addEventListener("usage", (e) => streamHandlers.usage && streamHandlers.usage(e));
      stream.addEventListener("alerts", (e) => alertsSeen(JSON.parse(e.data)));
      stream.addEventListener("problem", (e) => status(JSON.parse(e.data).error, true));
      stream.onopen = () => status("");
      stream.onerror = () => {
        if (stream.readyState === EventSource.CLOSED) {
          status("live stream refused; trying again in 10 s", true);
          window.setTimeout(connect, 10000);
        } else {
          status("live stream interrupted; reconnecting…", true);
        }
      };
    };
    connect();
  }

  /* Pages without the live stream still hear of new alerts: a small poll of the open ones. */
  const STREAM_PAGES = ["overview", "alerts"];
  if (!STREAM_PAGES.includes(document.body.dataset.page)) {
    const poll = () => api("/api/alerts", {state: "open", limit: 20})
      .then((a) => alertsSeen({latest: null, open_count: a.rows.length, open: a.rows}), () => {});
    poll();
    window.setInterval(poll, 20000);
  }

  Object.assign(NT, {alertColumns, alertActionColumn, acknowledge, onAlerts, live, SEVERITIES, severityRank, severityBadge});
})();
