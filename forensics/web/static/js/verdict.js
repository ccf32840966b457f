// One file's verdict or one live episode: summary, per-track fake-probability timeline (uPlot),
// the evidence crops kept for its source, label buttons, and the saliency figure when available.
import uPlot from "../vendor/uPlot.esm.js";
import { banner, cropImg, fmtNum, fmtTime, getJSON, h, labelButtons, showError, start } from "./api.js";

const COLORS = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"];
const id = new URLSearchParams(location.search).get("id");

function summary(d) {
  const a = d.alert;
  const tracks = a.tracks ? Object.entries(a.tracks) : [];
  return [
    h("h2", {}, a.kind === "verdict" ? `${a.label} · ${a.file}` : `${a.kind} on ${a.source}`),
    h("dl", { class: "facts" },
      [["alert", a.alert_id], ["when", fmtTime(a.created_at)], ["source", a.source],
       ["score", fmtNum(a.score ?? (a.evidence || {}).fake_prob)], ["threshold", fmtNum(a.threshold)],
       ["anomaly rate", fmtNum(a.anomaly_rate, 2)], ["anomalous tracks", a.anomalous_tracks ?? "-"],
       ["low-quality rate", fmtNum(a.low_quality_rate, 2) + (a.low_quality ? ` (${Object.entries(a.low_quality).filter(([, n]) => n).map(([k, n]) => `${k} ${n}`).join(", ") || "none"})` : "")],
       ["frames / faces scored", a.frames_scored !== undefined ? `${a.frames_scored} / ${a.faces_scored}` : "-"],
       ["model", a.model ? `${a.model.version} (${(a.model.sha256 || "").slice(0, 12)})` : "-"]]
        .map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))])),
    tracks.length ? h("table", {}, h("thead", {}, h("tr", {}, ["track", "faces", "mean fake prob", "anomaly rate", "anomalous"].map((t) => h("th", {}, t)))),
      h("tbody", {}, tracks.map(([t, v]) => h("tr", {}, [t, v.faces, fmtNum(v.score), fmtNum(v.anomaly_rate, 2), v.anomalous ? "yes" : "no"].map((c) => h("td", {}, String(c))))))) : null,
    labelButtons(a.alert_id, d.label),
  ];
}

function chart(tl, threshold) {
  const el = document.getElementById("chart");
  const names = Object.keys(tl.tracks);
  const note = document.getElementById("chart-note");
  if (!names.length) {
    note.textContent = "No per-frame scores of this source remain in the results stream.";
    return;
  }
  const decisions = tl.scores === "label";
  note.textContent = `${tl.batches} batches${tl.complete ? "" : " (older batches trimmed from the results stream)"}; x: ${tl.x === "pts" ? "seconds of video" : "frame index"}.`
    + (decisions ? " Scores are published as labels only (alerts.scores = label): y is each crop's FAKE decision (1) or not (0)." : "");
  const data = uPlot.join(names.map((n) => [tl.tracks[n].x, tl.tracks[n].prob]));
  const series = [{ label: tl.x === "pts" ? "t (s)" : "frame" },
    ...names.map((n, i) => ({ label: `track ${n}`, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true, points: { show: true, size: 5 } }))];
  if (typeof threshold === "number") {
    data.push(data[0].map(() => threshold));
    series.push({ label: "threshold", stroke: "#555", dash: [6, 4], width: 1, points: { show: false } });
  }
  const width = Math.max(320, Math.min(1000, (el.clientWidth || 900) - 20));
  new uPlot({ width, height: 280, series, scales: { x: { time: false }, y: { range: [0, 1] } },
    axes: [{ label: tl.x === "pts" ? "seconds" : "frame" }, { label: decisions ? "FAKE decision" : "fake probability" }] }, data, el);
}

function crops(d) {
  const box = document.getElementById("crops");
  if (!d.crops.length) {
    box.replaceChildren(h("p", { class: "note" }, "No evidence crops kept for this source (expired after detect.evidence_ttl_s)."));
    return;
  }
  box.replaceChildren(...d.crops.map((f) => h("figure", {}, cropImg(d.alert.alert_id, f), h("figcaption", {}, `frame ${f.split(":")[0]} · track ${f.split(":")[1]}`))));
}

function explain(d) {
  const box = document.getElementById("explain");
  if (!d.explain.available) {
    box.replaceChildren(h("p", { class: "note" }, d.explain.howto));
    return;
  }
  if (!d.alert.evidence) {
    box.replaceChildren(h("p", { class: "note" }, "This alert carries no face evidence to explain."));
    return;
  }
  const btn = h("button", { type: "button" }, "compute saliency figure (input gradients, Grad-CAM)");
  btn.addEventListener("click", () => {
    btn.disabled = true;
    btn.textContent = "computing… (loads torch; up to a minute)";
    const img = h("img", { class: "saliency", alt: "saliency figure", src: `/api/alert/explain?id=${encodeURIComponent(d.alert.alert_id)}` });
    img.addEventListener("load", () => btn.remove());
    img.addEventListener("error", async () => {
      const r = await fetch(img.src).then((x) => x.json()).catch(() => ({ error: "failed" }));
      box.replaceChildren(h("p", { class: "error" }, `saliency: ${r.error}`));
    });
    box.append(img);
  });
  box.replaceChildren(btn);
}

await start();
if (!id) {
  banner("No alert id: open a verdict from the live alerts page.");
} else {
  try {
    const d = await getJSON(`/api/alert?id=${encodeURIComponent(id)}`);
    document.getElementById("summary").replaceChildren(...summary(d));
    const report = document.getElementById("case-report");
    report.href = `/api/alert/report?id=${encodeURIComponent(d.alert.alert_id)}`;
    report.hidden = false;
    crops(d);
    explain(d);
    chart(await getJSON(`/api/alert/timeline?id=${encodeURIComponent(id)}`), d.alert.threshold);
  } catch (err) {
    showError(err);
  }
}
