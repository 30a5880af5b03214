// triage review: the page script. Served by the app itself (CSP 'self'); evidence strings are
// only ever written with textContent, and HTML fragments come from the server's autoescaping
// templates.
"use strict";

function csrf() {
  const m = document.querySelector('meta[name="csrf"]');
  return m ? m.content : "";
}

async function post(url, body) {
  const r = await fetch(url, {
    method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf()},
    body: JSON.stringify(body || {}),
  });
  let data = {};
  try { data = await r.json(); } catch (e) { data = {}; }
  return {ok: r.ok, status: r.status, data: data};
}

function setupLogout() {
  const b = document.getElementById("logout");
  if (!b) return;
  b.addEventListener("click", async () => {
    await post("/api/logout");
    location.href = "/login";
  });
}

function setupLogin() {
  const form = document.getElementById("login");
  if (!form) return;
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const err = document.getElementById("login-error");
    err.textContent = "";
    const r = await fetch("/api/login", {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({username: form.username.value, password: form.password.value}),
    });
    if (r.ok) {
      const next = form.dataset.next || "/";
      location.href = next.startsWith("/") && !next.startsWith("//") ? next : "/";
    } else {
      let msg = "log in failed";
      try { msg = (await r.json()).error || msg; } catch (e) { /* keep the default */ }
      err.textContent = msg;
    }
  });
}

// Replace a tbody with the server's escaped rendering of the same rows.
async function refreshRows(tbodyId, url) {
  const tbody = document.getElementById(tbodyId);
  if (!tbody) return;
  const r = await fetch(url, {credentials: "same-origin"});
  if (!r.ok) return;
  const doc = new DOMParser().parseFromString("<table><tbody>" + await r.text() + "</tbody></table>", "text/html");
  const fresh = doc.querySelector("tbody");
  tbody.replaceChildren(...Array.from(fresh.childNodes).map((n) => document.importNode(n, true)));
}

function openEvents(onFlag, onProgress, onEnded) {
  const state = document.getElementById("live-state");
  const es = new EventSource("/api/events");
  es.addEventListener("open", () => { if (state) state.textContent = "live"; });
  es.addEventListener("error", () => { if (state) state.textContent = "reconnecting…"; });
  es.addEventListener("flag", (ev) => onFlag && onFlag(JSON.parse(ev.data)));
  es.addEventListener("progress", (ev) => onProgress && onProgress(JSON.parse(ev.data)));
  es.addEventListener("scan-ended", (ev) => onEnded && onEnded(JSON.parse(ev.data)));
  return es;
}

function setupQueue() {
  const query = new URLSearchParams(location.search);
  query.set("partial", "1");
  const url = "/?" + query.toString();
  let pending = null;
  const refresh = () => {
    if (pending) return;
    pending = setTimeout(() => { pending = null; refreshRows("queue-rows", url); }, 200);
  };
  const list = document.getElementById("live-flags");
  openEvents((f) => {
    const li = document.createElement("li");
    li.className = "live-flag";
    const badge = document.createElement("span");
    badge.className = "badge flag-" + String(f.code).replace(/[^A-Z_]/g, "");
    badge.textContent = f.code;
    const text = document.createElement("span");
    text.textContent = " " + f.case + " / " + f.device + ": " + f.message;
    li.append(badge, text);
    list.prepend(li);
    refresh();
  }, refresh, (end) => {
    // what `triage flags --follow` prints when the scan it follows ends
    const li = document.createElement("li");
    li.className = "live-flag scan-ended";
    li.textContent = end.case + ": " + end.message;
    list.prepend(li);
    refresh();
  });
}

function setupProgress() {
  let pending = null;
  openEvents(null, () => {
    if (pending) return;
    pending = setTimeout(() => { pending = null; refreshRows("progress-rows", "/progress?partial=1"); }, 200);
  });
}

const KEYS = {"1": "A", "2": "B", "3": "C", "0": "non-pertinent", "u": "uncategorised"};

function setupDevice() {
  const tiles = Array.from(document.querySelectorAll("figure.finding"));
  const status = document.getElementById("grade-status");
  let current = 0;
  const select = (i, scroll = true) => {
    if (!tiles.length) return;
    current = Math.max(0, Math.min(tiles.length - 1, i));
    tiles.forEach((t, j) => t.classList.toggle("selected", j === current));
    tiles[current].focus({preventScroll: !scroll});
  };
  const grade = async (tile, g) => {
    const r = await post("/api/findings/" + encodeURIComponent(tile.dataset.id) + "/grade", {grade: g, note: ""});
    if (r.ok) {
      tile.querySelector(".grade").textContent = r.data.grade;
      tile.classList.add("graded");
      status.textContent = "graded " + r.data.grade;
      const left = tiles.filter((t) => !t.classList.contains("graded") &&
        t.querySelector(".grade").textContent === "not graded").length;
      const count = document.getElementById("reviewed-count");
      if (count) count.textContent = (tiles.length - left) + " of " + tiles.length + " findings";
    } else {
      status.textContent = "not saved: " + (r.data.error || r.status);
    }
    return r;
  };
  tiles.forEach((t, i) => {
    t.addEventListener("click", (ev) => {
      if (ev.target.closest("form, button, input")) return;
      select(i);
    });
    t.querySelectorAll(".grade-btn").forEach((b) => b.addEventListener("click", () => { select(i); grade(t, b.dataset.grade); }));
    const form = t.querySelector("form.reveal");
    if (form) {
      form.addEventListener("submit", (ev) => {
        ev.preventDefault();
        const reason = form.querySelector(".reason").value.trim();
        if (!reason) { status.textContent = "give a reason to reveal"; return; }
        const img = t.querySelector("img.thumb");
        img.src = img.dataset.src + "?clear=1&reason=" + encodeURIComponent(reason);
        img.classList.add("revealed");
        img.alt = "clear picture (revealed, audited)";
      });
    }
  });
  document.addEventListener("keydown", (ev) => {
    if (ev.target.closest && ev.target.closest("input, textarea, select")) return;
    if (ev.altKey || ev.ctrlKey || ev.metaKey) return;
    if (ev.key === "ArrowRight" || ev.key === "ArrowDown") { ev.preventDefault(); select(current + 1); }
    else if (ev.key === "ArrowLeft" || ev.key === "ArrowUp") { ev.preventDefault(); select(current - 1); }
    else if (KEYS[ev.key] && tiles.length) {
      ev.preventDefault();
      const tile = tiles[current];
      grade(tile, KEYS[ev.key]).then((r) => { if (r.ok) select(current + 1); });
    }
  });
  select(0, false);      // the page opens at its top: reasons and coverage first
  const blur = document.getElementById("blur");
  if (blur) {
    blur.addEventListener("change", async () => {
      const r = await post("/api/me/blur", {blur: parseInt(blur.value, 10)});
      if (!r.ok) return;
      document.getElementById("blur-value").textContent = r.data.blur;
      document.querySelectorAll("img.thumb:not(.revealed)").forEach((img) => {
        img.src = img.dataset.src + "?b=" + r.data.blur;
      });
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  setupLogout();
  const page = document.body.dataset.page;
  if (page === "login") setupLogin();
  if (page === "queue") setupQueue();
  if (page === "progress") setupProgress();
  if (page === "device") setupDevice();
});
