// Sign-in: a JSON POST (never a cross-site form); the session cookie is HttpOnly and SameSite=Strict.
const form = document.getElementById("login");
const error = document.getElementById("error");
form.addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = new FormData(form);
  error.textContent = "";
  const res = await fetch("/api/login", {
    method: "POST", credentials: "same-origin", headers: { "content-type": "application/json" },
    body: JSON.stringify({ name: f.get("name"), password: f.get("password") }),
  });
  const body = await res.json().catch(() => ({}));
  if (res.ok) location.href = "/";
  else error.textContent = body.error || `sign-in failed (HTTP ${res.status})`;
});
fetch("/api/me").then((r) => r.json()).then((me) => { if (me.user) location.href = "/"; }).catch(() => {});
