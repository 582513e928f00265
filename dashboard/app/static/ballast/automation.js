// The service page's automation card: the service's switches (auto-weights, OOM guard), the
// one switch that stops all automation, and each pod's auto weight with its reason.
//
// It reads GET /api/v1/services/<service>/automation every 5 s (and after each switch);
// an operator's click sends PATCH {"autoweights": true|false} (or oom_guard) there, or PUT
// {"paused": true|false} to /api/v1/automation/ — same origin, the session cookie and
// Django's CSRF header; a refusal's {"detail": "..."} is shown beside the switches.
// Viewers see the switches disabled. A 401 stops the polling (the session expired), as does
// the service page's "ballast:expired" event.
// Plain script, on its own: it shares nothing with service.js but the page's JSON.
(function () {
  "use strict";

  const page = JSON.parse(document.getElementById("ballast-service").textContent);
  const card = document.getElementById("automation");
  if (!card || !page.automation_api) return;
  const POLL_MS = 5000;
  const dash = "—";

  const state = { data: null, busy: false, timer: null, stopped: false };
  const buttons = {
    autoweights: document.getElementById("auto-weights"),
    oom_guard: document.getElementById("oom-guard"),
    paused: document.getElementById("automation-pause"),
  };
  const LABELS = { autoweights: "auto-weights", oom_guard: "OOM guard" };

  function csrfToken() {
    const found = document.cookie.split("; ").find((c) => c.startsWith("csrftoken="));
    return found ? decodeURIComponent(found.slice("csrftoken=".length)) : "";
  }

  function say(text, bad) {
    const status = document.getElementById("automation-status");
    status.textContent = text;
    status.className = bad ? "bad" : "muted";
  }

  // One request; the JSON answer, or null after saying what went wrong.
  async function call(method, url, body) {
    const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (method !== "GET") {
      init.headers["X-CSRFToken"] = csrfToken();
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (err) {
      say("the dashboard did not answer — retrying", true);
      return null;
    }
    if (response.status === 401) {
      stop();
      say("session expired — log in again", true);
      return null;
    }
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      say(data.detail || "refused (" + response.status + ")", true);
      return null;
    }
    return data;
  }

  function since(iso) {
    if (!iso) return dash;
    return new Date(iso).toLocaleTimeString([], { hour12: false });
  }

  function renderSwitch(name, on, paused) {
    const button = buttons[name];
    button.setAttribute("aria-pressed", String(on));
    const suffix = on && paused ? " (paused)" : "";
    button.textContent = LABELS[name] + ": " + (on ? "on" : "off") + suffix;
    button.className = on ? "switch on" : "switch";
    button.disabled = !page.can_act || state.busy;
  }

  function renderPause(paused) {
    const button = buttons.paused;
    button.setAttribute("aria-pressed", String(paused));
    button.textContent = paused ? "resume automation" : "stop all automation";
    button.className = paused ? "secondary" : "danger";
    button.disabled = !page.can_act || state.busy;
  }

  function renderWeights(data) {
    const body = card.querySelector("#auto-weights-table tbody");
    const rows = data.auto_weights.map((w) => {
      const row = document.createElement("tr");
      for (const text of [w.pod, String(w.weight), w.reason, since(w.updated_at)]) {
        const td = row.appendChild(document.createElement("td"));
        td.textContent = text;
      }
      row.cells[0].className = "text name";
      row.cells[2].className = "text reason";
      return row;
    });
    if (!rows.length) {
      const row = document.createElement("tr");
      const td = row.appendChild(document.createElement("td"));
      td.colSpan = 4;
      td.className = "text muted";
      td.textContent = emptyText(data);
      rows.push(row);
    }
    body.replaceChildren(...rows);
  }

  function emptyText(data) {
    if (data.paused) return "automation is paused: every pod has its default weight";
    if (!data.autoweights) return "auto-weights are off: every pod has its default weight";
    return "no auto weight yet: each pod is measured for 10 s first";
  }

  function render(data) {
    state.data = data;
    renderSwitch("autoweights", data.autoweights, data.paused);
    renderSwitch("oom_guard", data.oom_guard, data.paused);
    renderPause(data.paused);
    renderWeights(data);
  }

  async function load() {
    if (state.stopped) return;
    const data = await call("GET", page.automation_api);
    if (data) render(data);
  }

  async function act(method, url, body, done) {
    if (state.busy || !state.data) return;
    state.busy = true;
    render(state.data);
    const answer = await call(method, url, body);
    state.busy = false;
    if (answer) say(done, false);
    await load();
    if (!answer && state.data) render(state.data);
  }

  function toggle(name) {
    if (!state.data) return;
    const on = !state.data[name];
    const body = {};
    body[name] = on;
    act("PATCH", page.automation_api, body, LABELS[name] + " turned " + (on ? "on" : "off"));
  }

  function togglePause() {
    if (!state.data) return;
    const paused = !state.data.paused;
    const done = paused ? "all automation stopped: pods go back to their defaults"
                        : "automation runs again where it is on";
    act("PUT", page.pause_api, { paused }, done);
  }

  function stop() {
    state.stopped = true;
    clearInterval(state.timer);
  }

  // The service page saw the session end (its socket or another poll got a 401).
  document.addEventListener("ballast:expired", stop);
  buttons.autoweights.addEventListener("click", () => toggle("autoweights"));
  buttons.oom_guard.addEventListener("click", () => toggle("oom_guard"));
  buttons.paused.addEventListener("click", togglePause);
  load();
  state.timer = setInterval(load, POLL_MS);
})();
