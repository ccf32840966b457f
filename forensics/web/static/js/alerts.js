// Live alerts: the newest page from the API, then new ones over SSE (EventSource reconnects by
// itself and resumes with Last-Event-ID). Filter by kind and source; newest first.
import { alertCard, banner, getJSON, h, showError, start } from "./api.js";

const feed = document.getElementById("feed");
const form = document.getElementById("filters");
const live = document.getElementById("live");
const more = document.getElementById("more");
const shown = new Set();
let source = null;
let oldest = null;

function filters() {
  const f = new FormData(form);
  const q = new URLSearchParams();
  for (const k of ["kind", "source"]) if (f.get(k)) q.set(k, f.get(k));
  return q;
}

function add(entry, atTop) {
  if (shown.has(entry.alert.alert_id)) return;
  shown.add(entry.alert.alert_id);
  const card = alertCard(entry);
  if (atTop) {
    card.classList.add("new");
    feed.prepend(card);
  } else feed.append(card);
}

async function loadPage(before) {
  const q = filters();
  q.set("limit", "50");
  if (before) q.set("before", before);
  const d = await getJSON(`/api/alerts?${q}`);
  d.alerts.forEach((a) => add(a, false));
  oldest = d.next;
  more.hidden = !oldest;
  return d;
}

function connect(q) {
  if (source) source.close();
  source = new EventSource(`/api/alerts/stream?${q}`);
  source.addEventListener("open", () => { live.textContent = "live"; live.className = "live on"; });
  source.addEventListener("error", () => { live.textContent = "reconnecting…"; live.className = "live off"; });
  source.addEventListener("status", (e) => {
    const s = JSON.parse(e.data);
    banner(s.redis === false ? `Redis is unreachable: ${s.error} (retrying; alerts appear when it is back)` : "");
  });
  source.addEventListener("alert", (e) => {
    const alert = JSON.parse(e.data);
    add({ id: e.lastEventId, alert, label: null }, true);
    const hot = alert.kind === "deepfake" || alert.kind === "anomaly" || alert.label === "FAKE";
    if (hot && document.hidden) badge(unseen + 1);
  });
}

// While the tab is in the background, the title counts deepfake/anomaly/FAKE alerts not yet seen.
const baseTitle = document.title;
let unseen = 0;
function badge(n) {
  unseen = n;
  document.title = n ? `(${n}) ${baseTitle}` : baseTitle;
}
document.addEventListener("visibilitychange", () => { if (!document.hidden) badge(0); });

async function reload() {
  feed.replaceChildren();
  shown.clear();
  try {
    const d = await loadPage(null);
    const q = filters();
    if (d.alerts.length) q.set("since", d.alerts[0].id);
    connect(q);
  } catch (err) {
    showError(err);
    setTimeout(reload, 3000);
  }
}

form.addEventListener("change", reload);
form.addEventListener("submit", (e) => { e.preventDefault(); reload(); });
more.addEventListener("click", () => loadPage(oldest).catch(showError));
await start();
feed.append(h("p", { class: "note", text: "loading…" }));
await reload();
