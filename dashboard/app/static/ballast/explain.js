// Explain and preview on the service page.
//
// Why: each pod's row has a "why" button (a disclosure, keyboard reachable) that opens
// the panel below the table with the balancers' reasons for the pod's share — state and
// why, weight, slow start, effective weight, expected share, the policy's load signal,
// peak-EWMA latency and penalty, ejections — from GET .../pods/<pod>/explain/, fetched
// when opened and every 2 s while open.
//
// Preview: beside an operator's controls, the share of every pod after the weight being
// typed (before "set") or the drain being asked (before its confirmation), from the act
// with ?dry_run=1 (nothing changes, nothing is audited), with the API's warnings.
//
// Plain script; service.js creates it with `ballastExplain(page)`, calls `newRow(entry,
// pod)` for each new row, `refresh(pod, controls)` after rendering one, `forget(pod)`
// when one goes, and `stop()` when the session expired; controls.js awaits
// `preview(pod, "drain")` for the text its confirmation adds, and `preview(pod, null)`
// hides it again.
window.ballastExplain = function (page) {
  "use strict";

  const dash = "—";
  const REFRESH_MS = 2000; // the open panel's refresh
  const DEBOUNCE_MS = 250; // a preview is asked once typing pauses
  // A drain's question waits this long for its preview, then asks without it (the
  // preview still shows beside the control once it comes).
  const CONFIRM_WAIT_MS = 10000;

  const state = {
    open: null, // the pod whose "why" is open
    button: null, // its button
    timer: null,
    previews: new Map(), // pod → {box, seq, act, timer}
    stopped: false,
  };

  function csrfToken() {
    const found = document.cookie.split("; ").find((c) => c.startsWith("csrftoken="));
    return found ? decodeURIComponent(found.slice("csrftoken=".length)) : "";
  }

  // Resolves to {status, data}; a network failure is status 0 with a `detail`.
  async function call(method, url, body) {
    if (state.stopped) return { status: 401, data: { detail: "session expired: log in again" } };
    const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (method !== "GET") init.headers["X-CSRFToken"] = csrfToken();
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    try {
      const response = await fetch(url, init);
      return { status: response.status, data: await response.json().catch(() => ({})) };
    } catch (err) {
      return { status: 0, data: { detail: "the dashboard did not answer (" + err.message + ")" } };
    }
  }

  function podUrl(pod, action) {
    return page.api + "pods/" + encodeURIComponent(pod) + "/" + action;
  }
  function pct(v) {
    return v == null ? dash : (v * 100).toFixed(1) + " %";
  }
  function when(ms) {
    return ms == null ? dash : new Date(ms).toLocaleTimeString([], { hour12: false });
  }
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  }

  // ---- why --------------------------------------------------------------------------

  function panel() {
    return document.getElementById("why-panel");
  }

  // The "why" cell goes after the figures, before the actions (service.js reaches the
  // figures' cells through its own list, tests by their place in the row).
  function newRow(entry, pod) {
    const td = el("td", "why");
    const button = el("button", "secondary why-toggle", "why");
    button.type = "button";
    button.setAttribute("aria-expanded", "false");
    button.setAttribute("aria-controls", "why-panel");
    button.title = "why " + pod + " gets its share of new requests";
    button.addEventListener("click", () => toggle(pod, button));
    td.appendChild(button);
    entry.row.insertBefore(td, entry.cells[entry.cells.length - 1].nextSibling);
    if (entry.controls) {
      const box = el("div", "preview");
      box.hidden = true;
      box.dataset.role = "preview";
      box.setAttribute("aria-live", "polite");
      entry.controls.box.after(box);
      state.previews.set(pod, { box, seq: 0, act: null, timer: null });
    }
  }

  function toggle(pod, button) {
    const wasOpen = state.open === pod;
    close();
    if (wasOpen) return;
    state.open = pod;
    state.button = button;
    button.setAttribute("aria-expanded", "true");
    const box = panel();
    box.hidden = false;
    box.replaceChildren(el("h2", "", "Why " + pod + " gets its share"), el("p", "muted", "loading…"));
    loadWhy();
  }

  function close() {
    clearTimeout(state.timer);
    if (state.button) state.button.setAttribute("aria-expanded", "false");
    state.open = state.button = null;
    const box = panel();
    if (box) box.hidden = true;
  }

  async function loadWhy() {
    const pod = state.open;
    if (pod == null || state.stopped) return;
    const response = await call("GET", podUrl(pod, "explain/"));
    if (state.open !== pod) return; // closed, or another opened, meanwhile
    renderWhy(pod, response);
    state.timer = setTimeout(loadWhy, REFRESH_MS);
  }

  function renderWhy(pod, response) {
    const box = panel();
    const title = el("h2", "", "Why " + pod + " gets its share");
    const data = response.data || {};
    if (response.status !== 200) {
      return box.replaceChildren(title, el("p", "bad", data.detail || "HTTP " + response.status));
    }
    const first = data.replicas[0];
    const list = el("dl", "why-facts");
    for (const [term, value] of whyRows(data, first)) list.append(el("dt", "", term), el("dd", "", value));
    box.replaceChildren(title, el("p", "why-summary", data.summary), list);
  }

  function whyRows(data, r) {
    const rows = [
      ["state", r.state + (r.state_reason ? " — " + r.state_reason : "") + ", since " + when(r.state_since)],
      ["weight", String(r.weight)],
      ["slow start", r.slow_start_factor < 1
        ? "× " + r.slow_start_factor.toFixed(2) + ", full weight at " + when(r.slow_start_ends)
        : "none (full weight)"],
      ["effective weight", String(r.effective_weight)],
      ["expected share", pct(r.expected_share) + " (" + data.policy + ": by " + data.share_basis + ")"],
      ["in flight", String(r.in_flight)],
    ];
    if (data.policy === "least_request") {
      rows.push(["load compared", r.load + " (in flight + fast failures " + r.fast_failure_load + ")"]);
    } else if (data.policy === "peak_ewma") {
      rows.push(["latency estimate", r.ewma_latency_ms.toFixed(1) + " ms; cost " + r.load.toFixed(1)]);
      rows.push(["latency penalty", r.latency_penalty > 1
        ? "× " + r.latency_penalty.toFixed(2) + ": slower than the fastest pod, it gets less"
        : "none (among the fastest)"]);
    }
    rows.push(["ejections", r.ejections_total
      ? r.ejections_total + " (multiplier " + r.ejection_multiplier + "), last at " +
        when(r.last_ejected) + ": " + r.last_ejection_reason
      : "never"]);
    for (const other of data.replicas.slice(1)) {
      rows.push(["replica " + other.replica, other.state + ", share " + pct(other.expected_share)]);
    }
    return rows;
  }

  // ---- preview ----------------------------------------------------------------------

  // The weight typed in a row's number (or moved on its slider): its preview once
  // typing pauses. controls.js has set the number by then (its listener came first).
  function onInput(event) {
    const role = event.target.dataset.role;
    if (role !== "weight-number" && role !== "weight-range") return;
    const row = event.target.closest("tr");
    const entry = row && state.previews.get(row.dataset.pod);
    if (!entry) return;
    const number = row.querySelector("[data-role=weight-number]");
    // Back at the weight it has (controls.js marks an edit): nothing to preview.
    if (!number.classList.contains("edited")) return preview(row.dataset.pod, null);
    const weight = Number(number.value);
    clearTimeout(entry.timer);
    entry.timer = setTimeout(() => preview(row.dataset.pod, "weight", weight), DEBOUNCE_MS);
  }

  // Shows what `act` ("weight" with `weight`, or "drain") would do beside the pod's
  // controls; resolves to the same in words for a confirmation ("" when it could not be
  // had; for a drain, a note when it takes longer than CONFIRM_WAIT_MS). `act` null
  // hides it.
  function preview(pod, act, weight) {
    const shown = show(pod, act, weight);
    if (act !== "drain") return shown;
    const late = new Promise((resolve) => setTimeout(
      () => resolve("\n\n(the expected shares are still on their way: see beside the control)"),
      CONFIRM_WAIT_MS));
    return Promise.race([shown, late]);
  }

  async function show(pod, act, weight) {
    const entry = state.previews.get(pod);
    if (!entry) return "";
    const seq = ++entry.seq; // a later preview (or a hide) wins over one still on its way
    clearTimeout(entry.timer);
    entry.act = act;
    if (act === null) {
      entry.box.hidden = true;
      return "";
    }
    if (act === "weight" && !Number.isInteger(weight)) {
      entry.box.hidden = true;
      return "";
    }
    const what = act === "drain" ? "drain " + pod : "weight " + weight + " on " + pod;
    entry.box.hidden = false;
    entry.box.replaceChildren("preview of " + what + "…");
    const body = act === "weight" ? { weight } : {};
    const response = await call("POST", podUrl(pod, act) + "?dry_run=1", body);
    if (seq !== entry.seq) return "";
    return renderPreview(entry.box, what, response);
  }

  function renderPreview(box, what, response) {
    const data = response.data || {};
    if (response.status !== 200) {
      const why = data.detail || "HTTP " + response.status;
      box.replaceChildren(el("span", "bad", "preview of " + what + ": " + why));
      return "\n\n(no preview: " + why + ")";
    }
    const basis = data.share_basis === "weights" ? "" : " (at equal load)";
    const shares = data.pods.map((p) => p.pod + " " + pct(p.share) + " → " + pct(p.share_after));
    const head = el("div", "", "");
    head.append(el("b", "", "after " + what + basis + ": "), shares.join(", "));
    const warnings = data.warnings.map((w) => el("div", "preview-warn", "⚠ " + w.text));
    box.replaceChildren(head, ...warnings);
    box.classList.toggle("warned", warnings.length > 0);
    const lines = data.warnings.map((w) => "⚠ " + w.text);
    return "\n\nExpected share after it" + basis + ": " + shares.join(", ") +
      (lines.length ? "\n" + lines.join("\n") : "");
  }

  // After a render of the row: a weight preview goes once the weight is no longer being
  // edited (set, or undone with Escape).
  function refresh(pod, controls) {
    const entry = state.previews.get(pod);
    if (!entry || !controls || entry.act !== "weight") return;
    if (!controls.number.classList.contains("edited")) preview(pod, null);
  }

  function forget(pod) {
    const entry = state.previews.get(pod);
    if (entry) clearTimeout(entry.timer);
    state.previews.delete(pod);
    if (state.open === pod) close();
  }

  function start() {
    document.querySelector("#pods tbody").addEventListener("input", onInput);
  }

  function stop() {
    state.stopped = true;
    clearTimeout(state.timer);
    for (const entry of state.previews.values()) clearTimeout(entry.timer);
  }

  return { newRow, refresh, forget, preview, start, stop };
};
