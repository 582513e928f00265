// The overview page: swaps in fresh service cards from the server every refresh
// interval (one template renders them, on load and on refresh). Plain script.
(function () {
  "use strict";

  const status = document.getElementById("status");
  const container = document.getElementById("overview");
  const url = status.dataset.refreshUrl;
  const everyMs = Number(status.dataset.refreshMs) || 2000;
  let failures = 0;

  function expired() {
    status.className = "bad";
    const link = document.createElement("a");
    link.href = "/accounts/login/?next=" + encodeURIComponent(location.pathname);
    link.textContent = "log in again";
    status.replaceChildren("session expired — ", link);
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
      status.className = "muted";
      status.textContent = "live";
    } catch (err) {
      failures += 1;
      status.className = "bad";
      status.textContent = "cannot reach the dashboard — retrying";
    }
    // Back off while the server is unreachable, up to 30 s.
    setTimeout(refresh, Math.min(everyMs * 2 ** Math.min(failures, 5), 30000));
  }

  setTimeout(refresh, everyMs);
})();
