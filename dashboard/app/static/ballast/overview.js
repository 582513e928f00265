// The overview page: swaps in fresh service cards from the server every refresh
// interval (one template renders them, on load and on refresh). Plain script.
(function () {
  "use strict";

  const status = document.getElementById("status");
  const container = document.getElementById("overview");
  const url = status.dataset.refreshUrl;
  const everyMs = Number(status.dataset.refreshMs) || 2000;
  let failures = 0;
  let downSince = null; // when the dashboard stopped answering

  function clock(date) {
    return date.toLocaleTimeString([], { hour12: false });
  }

  // The figures shown are no longer current: greyed, and the page says since when.
  function expired() {
    document.body.classList.add("stale");
    status.className = "bad";
    const link = document.createElement("a");
    link.href = "/accounts/login/?next=" + encodeURIComponent(location.pathname);
    link.textContent = "log in again";
    status.replaceChildren("session expired — ", link, " to see current figures");
  }

  async function refresh() {
    try {
      const response = await fetch(url, { credentials: "same-origin", redirect: "manual" });
      if (response.type === "opaqueredirect" || response.status === 401 || response.status === 403) {
        return expired(); // the session ended: stop refreshing
      }
      if (!response.ok) throw new Error("HTTP " + response.status);
      container.innerHTML = await response.text();
      failures = 0;
      downSince = null;
      document.body.classList.remove("stale");
      status.className = "muted";
      status.textContent = "live";
    } catch (err) {
      failures += 1;
      downSince = downSince || new Date();
      document.body.classList.add("stale");
      status.className = "bad";
      status.textContent = "disconnected since " + clock(downSince) + " — retrying";
    }
    // Back off while the server is unreachable, up to 30 s.
    setTimeout(refresh, Math.min(everyMs * 2 ** Math.min(failures, 5), 30000));
  }

  setTimeout(refresh, everyMs);
})();
