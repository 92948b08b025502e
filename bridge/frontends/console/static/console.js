// smpp-bridge web console: the only script. It refreshes the overview's numbers and asks before
// a form marked data-confirm is sent. Served by the bridge; nothing is loaded from elsewhere.
"use strict";

function refreshLive(box) {
  const src = box.dataset.src;
  const every = Math.max(2, Number(box.dataset.seconds) || 5) * 1000;
  let busy = false;
  async function tick() {
    if (busy || document.hidden) return;
    busy = true;
    try {
      const resp = await fetch(src, { credentials: "same-origin", cache: "no-store" });
      if (resp.status === 401) { window.location.reload(); return; }
      if (resp.ok) {
        box.innerHTML = await resp.text();
        box.dataset.refreshed = String(Date.now());
        box.classList.remove("stale");
      } else {
        box.classList.add("stale");
      }
    } catch (e) {
      box.classList.add("stale");  // the bridge is restarting or the network dropped; try again
    } finally {
      busy = false;
    }
  }
  setInterval(tick, every);
}

document.addEventListener("DOMContentLoaded", () => {
  const live = document.getElementById("live");
  if (live) refreshLive(live);
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (ev) => {
      if (!window.confirm(form.dataset.confirm)) ev.preventDefault();
    });
  }
});
