// Shared by every page: the JSON API, the header, the "backend down" banner, alert cards, labels.
// DOM is built with textContent only (never innerHTML), so no alert field can inject markup.

let me = null;

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function banner(message) {
  const el = document.getElementById("banner");
  if (!el) return;
  el.hidden = !message;
  el.textContent = message || "";
}

export async function getJSON(url) {
  const res = await fetch(url, { credentials: "same-origin", headers: { accept: "application/json" } });
  if (res.status === 401) {
    location.href = "/login";
    throw new Error("signed out");
  }
  const body = await res.json().catch(() => ({ error: `HTTP ${res.status}` }));
  if (!res.ok) {
    const err = new Error(body.error || `HTTP ${res.status}`);
    err.status = res.status;
    err.body = body;
    throw err;
  }
  return body;
}

export async function postJSON(url, data) {
  const res = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json", "x-csrf-token": me ? me.csrf : "" },
    body: JSON.stringify(data),
  });
  const body = await res.json().catch(() => ({ error: `HTTP ${res.status}` }));
  if (!res.ok) throw new Error(body.error || `HTTP ${res.status}`);
  return body;
}

export function may(role) {
  const order = ["viewer", "analyst", "admin"];
  return !!me && order.indexOf(me.role) >= order.indexOf(role);
}

const NAV = [["/", "Overview"], ["/alerts", "Live alerts"], ["/labels", "Labels"], ["/models", "Models"]];

export async function start() {
  me = await getJSON("/api/me");
  if (!me.user) {
    location.href = "/login";
    throw new Error("signed out");
  }
  const top = document.getElementById("top");
  const logout = me.via === "session"
    ? h("button", { type: "button", class: "link", onclick: async () => { await postJSON("/api/logout", {}); location.href = "/login"; } }, "sign out")
    : null;
  top.append(
    h("nav", {},
      h("strong", {}, "video forensics"),
      NAV.map(([href, text]) => h("a", { href, class: location.pathname === href ? "here" : null }, text))),
    h("span", { class: "who" }, `${me.user} (${me.role})`, logout),
  );
  return me;
}

export function fmtTime(value) {
  if (value === null || value === undefined || value === "") return "-";
  const d = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  return isNaN(d) ? String(value) : d.toLocaleString();
}

export function fmtNum(v, digits = 3) {
  return typeof v === "number" ? v.toFixed(digits) : v === null || v === undefined ? "-" : String(v);
}

export function ago(ts) {
  if (typeof ts !== "number") return "-";
  const s = Date.now() / 1000 - ts;
  return s < 90 ? `${s.toFixed(1)} s ago` : s < 5400 ? `${(s / 60).toFixed(0)} min ago` : fmtTime(ts);
}

export function labelText(rec) {
  if (!rec) return "not labelled";
  return `labelled ${rec.label.toUpperCase()} by ${rec.by}, ${fmtTime(rec.at)}`;
}

export function labelButtons(alertId, current, onDone) {
  const status = h("span", { class: "label-status", text: labelText(current) });
  if (!may("analyst")) return h("div", { class: "labels" }, status);
  const send = async (label, btn) => {
    btn.disabled = true;
    try {
      const rec = await postJSON("/api/alert/label", { id: alertId, label });
      status.textContent = labelText(rec);
      status.dataset.label = rec.label;
      if (onDone) onDone(rec);
    } catch (err) {
      status.textContent = `not labelled: ${err.message}`;
    } finally {
      btn.disabled = false;
    }
  };
  const real = h("button", { type: "button", class: "real", "data-label": "real" }, "REAL");
  const fake = h("button", { type: "button", class: "fake", "data-label": "fake" }, "FAKE");
  real.addEventListener("click", () => send("real", real));
  fake.addEventListener("click", () => send("fake", fake));
  return h("div", { class: "labels" }, real, fake, status);
}

export function cropImg(alertId, field) {
  const q = new URLSearchParams({ id: alertId });
  if (field) q.set("field", field);
  const img = h("img", { class: "crop", src: `/api/alert/crop?${q}`, alt: "evidence face crop", loading: "lazy" });
  img.addEventListener("error", () => img.replaceWith(h("div", { class: "crop none", text: "no crop" })), { once: true });
  return img;
}

function headline(a) {
  if (a.kind === "verdict") return `${a.label} · ${a.file || a.source}`;
  if (a.kind === "source") return `source ${a.state || a.event || ""} · ${a.source}`;
  return `${a.kind} · ${a.source}`;
}

export function alertCard(entry) {
  const a = entry.alert;
  const ev = a.evidence || {};
  const anomalous = ev.anomalous === true || (typeof a.anomaly_rate === "number" && a.kind === "anomaly")
    || (a.anomalous_tracks || 0) > 0;
  const facts = [
    ["score", fmtNum(a.score ?? ev.fake_prob)],
    ["threshold", fmtNum(a.threshold)],
    ["anomaly rate", fmtNum(a.anomaly_rate, 2)],
    ["Mahalanobis", ev.mahalanobis === undefined ? "-" : ev.mahalanobis_threshold === undefined
      ? fmtNum(ev.mahalanobis, 1) : `${fmtNum(ev.mahalanobis, 1)} / ${fmtNum(ev.mahalanobis_threshold, 1)}`],
    ["model", a.model ? a.model.version : "-"],
  ];
  const hot = a.kind === "deepfake" || a.kind === "anomaly" || a.label === "FAKE";
  return h("article", { class: `alert kind-${a.kind}${hot ? " hot" : ""}`, "data-alert-id": a.alert_id, "data-entry": entry.id },
    a.kind === "source" ? h("div", { class: "crop none", text: "-" }) : cropImg(a.alert_id),
    h("div", { class: "body" },
      h("div", { class: "title" },
        h("span", { class: `badge ${a.kind}` }, a.kind),
        anomalous ? h("span", { class: "badge anomaly", title: "features far from the clean training data" }, "anomalous") : null,
        h("a", { href: `/verdict?id=${encodeURIComponent(a.alert_id)}` }, headline(a))),
      h("div", { class: "meta" }, `${fmtTime(a.created_at)} · ${a.source}`),
      h("dl", {}, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
      a.kind === "source" ? null : labelButtons(a.alert_id, entry.label)));
}

export function reportLink(version, path) {
  return h("a", { href: `/models/${encodeURIComponent(version)}/${path.split("/").map(encodeURIComponent).join("/")}`, target: "_blank", rel: "noopener" }, path.replace(/^report\//, ""));
}

export function showError(err) {
  banner(err.status === 503 ? `Backend down: ${err.message} (retrying)` : err.message);
}
