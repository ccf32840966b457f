// Model versions, gate decisions, promotions, reports; promote / roll back for admins (confirmed).
import { banner, fmtNum, fmtTime, getJSON, h, may, postJSON, reportLink, showError, start } from "./api.js";

async function act(what, body, question) {
  if (!window.confirm(question)) return;
  try {
    const r = await postJSON(`/api/models/${what}`, body);
    banner(`current model is now ${r.current}`);
    await load();
  } catch (err) {
    banner(`${what} refused: ${err.message}`);
  }
}

async function load() {
  let d;
  try {
    d = await getJSON("/api/models");
  } catch (err) {
    showError(err);
    return;
  }
  const admin = may("admin");
  document.getElementById("actions").replaceChildren(
    h("p", {}, `current: ${d.current || "none"}`),
    admin && d.history.some((x) => x.version === d.current && x.previous) ? h("button", { type: "button", class: "danger",
      onclick: () => act("rollback", { confirm: "rollback" }, `Roll back from ${d.current} to the version before it? Detect workers reload at once.`) }, "roll back") : null);
  document.querySelector("#versions tbody").replaceChildren(...d.versions.map((v) => h("tr", { class: v.current ? "current" : null },
    h("td", {}, v.current ? "●" : ""), h("td", {}, v.version), h("td", {}, fmtTime(v.created_at)), h("td", {}, fmtNum(v.auc)),
    h("td", {}, v.parent || "-"), h("td", {}, v.provenance ? JSON.stringify(v.provenance) : "-"),
    h("td", {}, v.decisions.map((x) => h("div", {}, `${x.decision}: ${x.reason || ""}`))),
    h("td", {}, v.promotions.map((x) => h("div", {}, `${fmtTime(x.at)}: ${x.reason || ""}`))),
    h("td", {}, v.reports.map((p) => [reportLink(v.version, p), " "])),
    h("td", {}, admin && !v.current && v.complete ? h("button", { type: "button",
      onclick: () => act("promote", { version: v.version, confirm: v.version }, `Promote ${v.version} to serve every detect worker now?`) }, "promote") : null))));
  document.querySelector("#history tbody").replaceChildren(...d.history.map((x) => h("tr", {},
    [fmtTime(x.at), x.version, x.previous || "-", x.reason || ""].map((c) => h("td", {}, c)))));
}

await start();
await load();
