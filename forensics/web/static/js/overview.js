// Overview: sources, detect group, dead letters, serving model; refreshed every 3 s.
import { ago, banner, fmtNum, fmtTime, getJSON, h, reportLink, showError, start } from "./api.js";

function rows(tbody, items, cells) {
  tbody.replaceChildren(...items.map((it) => h("tr", {}, cells(it).map((c) => h("td", {}, c)))));
}

function modelCard(m, announced) {
  if (!m.ok) return h("p", { class: "error" }, `Model registry unavailable: ${m.error}`);
  if (!m.current) return h("p", {}, "No model is promoted yet (forensics train, then forensics models promote).");
  const prov = m.provenance ? Object.entries(m.provenance).map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join(" · ") : "not recorded in this version's manifest";
  return h("div", {},
    h("p", {}, h("strong", {}, `serving ${m.current}`), ` · created ${fmtTime(m.created_at)} · input ${m.input_size}px · video AUC ${fmtNum(m.video_auc)} · parent ${m.parent || "-"}`),
    h("p", {}, `sha256 ${m.sha256 ? m.sha256.slice(0, 16) + "…" : "-"}`,
      announced && announced.version !== m.current ? h("span", { class: "error" }, ` · Redis announces ${announced.version}`) : null),
    h("p", {}, `provenance: ${prov}`),
    h("p", {}, "report: ", m.reports.length ? m.reports.map((p) => [reportLink(m.current, p), " "]) : "none in the manifest"));
}

async function refresh() {
  let d;
  try {
    d = await getJSON("/api/overview");
  } catch (err) {
    showError(err);
    return;
  }
  const problems = [];
  if (!d.redis.ok) problems.push(`Redis is unreachable: ${d.redis.error} (retrying)`);
  if (!d.model.ok) problems.push(`Model registry unavailable: ${d.model.error}`);
  banner(problems.join(" — "));
  document.getElementById("model").replaceChildren(modelCard(d.model, d.announced_model));
  if (!d.redis.ok) return;
  rows(document.querySelector("#sources tbody"), d.sources, (s) => [
    s.id, s.kind || "-", h("span", { class: `state ${s.state || (s.down === 1 ? "down" : "")}` }, s.state || (s.down === 1 ? "down" : s.status || "-")),
    s.frames_sampled ?? "-", s.frames_sent ?? s.batches ?? "-", s.frames_dropped ?? "-", s.reconnects ?? "-",
    ago(s.last_frame_at), s.file || s.url || s.reason || "",
  ]);
  const det = d.detect;
  document.getElementById("detect").replaceChildren(
    h("p", {}, h("strong", {}, `${det.backlog}`), " frame batches not yet acknowledged · ",
      h("strong", {}, `${det.consumers.length}`), " consumers · ",
      h("strong", { class: det.dead ? "error" : null }, `${det.dead}`), " dead letters"));
  rows(document.querySelector("#consumers tbody"), det.consumers, (c) => [c.name, c.pending, `${(c.idle_ms / 1000).toFixed(1)} s`]);
  rows(document.querySelector("#dead tbody"), det.dead_recent, (x) => [x.id, x.origin, x.deliveries, x.error]);
  const k = d.alerts.recent_by_kind;
  document.getElementById("alert-counts").replaceChildren(
    h("p", {}, `${d.alerts.total} alerts in the stream; of the last ${d.alerts.recent}: `,
      Object.keys(k).length ? Object.entries(k).map(([kind, n]) => `${kind} ${n}`).join(", ") : "none",
      " · ", h("a", { href: "/alerts" }, "live alerts")));
}

await start();
await refresh();
setInterval(refresh, 3000);
