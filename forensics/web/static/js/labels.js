// Every analyst label, newest first.
import { fmtTime, getJSON, h, showError, start } from "./api.js";

await start();
try {
  const d = await getJSON("/api/labels");
  const tbody = document.querySelector("#labels tbody");
  tbody.replaceChildren(...d.labels.map((l) => h("tr", { "data-alert-id": l.alert_id },
    h("td", {}, h("a", { href: `/verdict?id=${encodeURIComponent(l.alert_id)}` }, l.alert_id)),
    h("td", { class: `lbl ${l.label}` }, String(l.label).toUpperCase()), h("td", {}, l.by), h("td", {}, fmtTime(l.at)),
    h("td", {}, l.kind || "-"), h("td", {}, l.source || "-"), h("td", {}, `${l.crops} (${l.crop_status})`))));
  if (!d.labels.length) tbody.append(h("tr", {}, h("td", { colspan: 7, class: "note" }, "No labels yet.")));
} catch (err) {
  showError(err);
}
