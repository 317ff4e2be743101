/* Alerts: what crossed a limit, from the alerts part's history. */
"use strict";

(() => {
  const form = document.getElementById("filters");
  const table = document.getElementById("alerts");
  const details = (r) => {
    const skip = new Set(["id", "state", "status", "message", "summary", "text", "opened"]);
    return Object.entries(r).filter(([k, v]) => !skip.has(k) && v !== null && typeof v !== "object")
      .map(([k, v]) => `${k}=${v}`).join("  ");
  };
  async function load() {
    const a = await NT.api("/api/alerts", NT.formValues(form));
    const empty = document.getElementById("alerts-empty");
    empty.hidden = a.rows.length > 0;
    empty.textContent = a.available ? "no alerts in this range" : "alerts are not set up in this build";
    NT.fillTable(table, a.rows, [...NT.alertColumns, {value: details, className: "mono"}], "none");
  }
  form.addEventListener("change", () => load().catch((e) => NT.status(e.message, true)));
  NT.every(15, load);
})();
