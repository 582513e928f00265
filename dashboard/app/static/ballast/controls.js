// The operator's controls on the service page: per pod a weight (slider and number,
// applied on "set"), drain / undrain, restart and clear; for the service its policy and a
// rollout restart; and the progress of restarts and rollouts, step by step, with a
// cancel button beside a running one.
//
// They call the REST API: same origin, the session cookie and Django's CSRF header;
// errors come back as {"detail": "..."}. An act answers {result: ok|pending|failed,
// replicas: [...]}; a restart or rollout answers 202 with the operation, whose steps
// are polled. Plain script; service.js creates it with `ballastControls(page, view)`,
// where `view` gives the latest frame (`frame()`), a pod's controls (`controlsOf(pod)`),
// what a drain would do (`preview(pod, act)`, explain.js),
// re-renders the rows' weight cells and controls (`refreshRows()`) and is told when the
// session has expired (`expired()`): then every poll stops, until the operator logs in.
window.ballastControls = function (page, view) {
  "use strict";

  const dash = "—";
  // Same origin, the session cookie and Django's CSRF header; errors come back as
  // {"detail": "..."}. An act answers {result: ok|pending|failed, replicas: [...]}; a
  // restart or rollout answers 202 with the operation, whose steps are polled.

  const STEPS = ["draining", "drained", "restarting", "waiting_ready", "done"];
  const DRAINING = new Set(["DRAINING", "DRAINED"]);
  // A running operation's steps are polled this often: its progress on the page stays
  // within a second of the API's (a 1 s poll lagged up to 1.1 s on the demo).
  const RUNNING_POLL_MS = 500;
  const SLIDER_MAX = 100; // slider positions; the weight is 10^(position / 25), see weightAt

  const controls = {
    edits: new Map(), // pod → the weight being edited, until set (or Escape)
    busy: new Map(), // pod → the action whose request runs
    overrides: new Map(), // pod → its desired state (the API's `desired`), when it has one
    serviceBusy: false, // a policy change or a rollout request is running
    policyEdit: null, // the policy chosen in the select, until applied
    policyOverride: null, // the service's policy override (the API's), when it has one
    operation: null, // the newest operation seen, polled each second while it runs
    cancelling: false, // a cancel request runs
    pollTimer: null,
    overridesTimer: null,
    stopped: false, // the session expired: no more requests
  };

  function csrfToken() {
    const found = document.cookie.split("; ").find((c) => c.startsWith("csrftoken="));
    return found ? decodeURIComponent(found.slice("csrftoken=".length)) : "";
  }

  // Resolves to {status, data}; a network failure is status 0 with a `detail` too.
  async function call(method, url, body) {
    const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (method !== "GET") init.headers["X-CSRFToken"] = csrfToken();
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    if (controls.stopped) return { status: 401, data: { detail: "session expired: log in again" } };
    try {
      const response = await fetch(url, init);
      const data = await response.json().catch(() => ({}));
      // The session ended (expired, or logged out in another tab): stop asking.
      if (response.status === 401) view.expired();
      return { status: response.status, data };
    } catch (err) {
      return { status: 0, data: { detail: "the dashboard did not answer (" + err.message + ")" } };
    }
  }

  function podUrl(pod, action) {
    return page.api + "pods/" + encodeURIComponent(pod) + "/" + action;
  }

  // The slider is log-ish: position 25 is weight 10, 50 is 100, 75 is 1000, 100 is 10000;
  // the number beside it takes any weight.
  function weightAt(position) {
    if (position <= 0) return page.min_weight;
    const raw = Math.pow(10, position / 25);
    const unit = Math.pow(10, Math.max(0, Math.floor(Math.log10(raw)) - 1)); // 2 digits
    return Math.min(page.max_weight, Math.round(raw / unit) * unit);
  }
  function positionOf(weight) {
    return weight > 0 ? Math.min(SLIDER_MAX, Math.round(25 * Math.log10(weight))) : 0;
  }

  // ---- messages ---------------------------------------------------------------------

  function clock() {
    return new Date().toLocaleTimeString([], { hour12: false });
  }

  // A toast at the top of the window, where it is seen whatever was clicked; an outcome
  // that needs no action fades after a while, a failure stays until the next message.
  function say(result, text) {
    const el = document.getElementById("action-status");
    el.className = "toast result-" + result;
    el.textContent = clock() + " " + text;
    clearTimeout(controls.toastTimer);
    if (result === "ok") controls.toastTimer = setTimeout(() => el.classList.add("faded"), 8000);
  }

  // How an act ended, shortly: "ok", "saved, pending on b1 (replica is down)", or why not.
  function outcome(what, response) {
    const data = response.data || {};
    const replicas = data.replicas || [];
    if (data.result === "ok") return say("ok", what + ": ok");
    if (data.result === "pending") {
      const names = replicas.filter((r) => r.pending).map((r) => r.replica);
      const why = data.detail ? " — " + data.detail : "";
      return say("pending", what + ": saved, pending on replica " + names.join(", ") + why);
    }
    if (data.result === "failed") {
      const errors = replicas.filter((r) => !r.applied && !r.pending)
        .map((r) => r.replica + ": " + r.error);
      return say("failed", what + ": failed — " + (errors.join("; ") || data.detail || "?"));
    }
    say("failed", what + ": " + (data.detail || "HTTP " + response.status));
  }

  // ---- per pod: weight, drain / undrain, restart, clear -----------------------------

  function button(act, text, className, title) {
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.act = act;
    b.textContent = text;
    if (className) b.className = className;
    if (title) b.title = title;
    return b;
  }

  function newControls(pod) {
    const box = document.createElement("div");
    box.className = "controls";
    const range = document.createElement("input");
    Object.assign(range, { type: "range", min: 0, max: SLIDER_MAX, step: 1 });
    range.dataset.role = "weight-range";
    range.setAttribute("aria-label", "weight of " + pod + " (slider)");
    const number = document.createElement("input");
    Object.assign(number, { type: "number", min: page.min_weight, max: page.max_weight, step: 1 });
    number.dataset.role = "weight-number";
    number.setAttribute("aria-label", "weight of " + pod);
    const set = button("weight", "set", "", "apply this weight (Escape in the number: undo)");
    const drain = button("drain", "drain", "secondary");
    const restart = button("restart", "restart", "danger", "drain, restart, wait until ready");
    const clear = button("clear", "clear", "secondary",
                         "clear the override: back to the weight it had before, undrained");
    box.append(range, number, set, drain, restart, clear);
    return { box, range, number, set, drain, restart, clear };
  }

  function updateControls(c, p) {
    const pod = p.pod;
    c.box.hidden = p.state == null; // the balancers do not route to it: nothing to act on
    const edit = controls.edits.get(pod);
    if (edit === undefined && p.weight != null && document.activeElement !== c.number) {
      c.number.value = String(p.weight);
      c.range.value = String(positionOf(p.weight));
    }
    const busy = controls.busy.has(pod);
    const edited = edit !== undefined && edit !== p.weight;
    c.number.classList.toggle("edited", edited);
    c.set.disabled = busy || !edited;
    const desired = controls.overrides.get(pod);
    const drained = DRAINING.has(p.state) || !!(desired && desired.drained);
    c.drain.dataset.act = drained ? "undrain" : "drain";
    c.drain.textContent = drained ? "undrain" : "drain";
    c.drain.disabled = busy;
    c.restart.disabled = busy || operationRunning();
    c.clear.hidden = !desired;
    c.clear.disabled = busy;
    for (const input of [c.range, c.number]) input.disabled = busy;
  }

  function refreshControls() {
    view.refreshRows();
    const rollout = document.getElementById("rollout");
    if (rollout) rollout.disabled = controls.serviceBusy || operationRunning();
  }

  function onInput(event) {
    const role = event.target.dataset.role;
    const row = event.target.closest("tr");
    if (!role || !row) return;
    const c = view.controlsOf(row.dataset.pod);
    if (role === "weight-range") {
      const weight = weightAt(Number(c.range.value));
      c.number.value = String(weight);
      controls.edits.set(row.dataset.pod, weight);
    } else {
      const weight = Number(c.number.value);
      controls.edits.set(row.dataset.pod, weight);
      if (Number.isFinite(weight)) c.range.value = String(positionOf(weight));
    }
    refreshControls();
  }

  function onKey(event) {
    if (event.target.dataset.role !== "weight-number") return;
    const row = event.target.closest("tr");
    if (event.key === "Enter") {
      view.controlsOf(row.dataset.pod).set.click();
    } else if (event.key === "Escape") {
      controls.edits.delete(row.dataset.pod);
      event.target.blur();
      refreshControls();
    }
  }

  function onClick(event) {
    const target = event.target.closest("button[data-act]");
    const row = target && target.closest("tr");
    if (!row || target.disabled) return;
    const pod = row.dataset.pod;
    const act = POD_ACTIONS[target.dataset.act];
    if (act) act(pod);
  }

  async function podAction(pod, what, method, url, body) {
    controls.busy.set(pod, what);
    refreshControls();
    say("pending", what + "…");
    const response = await call(method, url, body);
    controls.busy.delete(pod);
    refreshControls();
    return response;
  }

  const POD_ACTIONS = {
    async weight(pod) {
      const weight = controls.edits.get(pod);
      const what = "weight of " + pod + " to " + weight;
      if (!Number.isInteger(weight) || weight < page.min_weight || weight > page.max_weight) {
        return say("failed", what + ": use a whole number from " + page.min_weight +
                   " to " + page.max_weight);
      }
      const response = await podAction(pod, what, "POST", podUrl(pod, "weight"), { weight });
      if (response.status === 200 || response.status === 503) controls.edits.delete(pod);
      outcome(what, response);
      await afterAct();
    },
    async drain(pod) {
      // Every pod's share after it shows beside the control, and in the question (explain.js).
      const preview = view.preview ? await view.preview(pod, "drain") : "";
      const asked = confirm("Drain " + pod + "?\nBallast sends it no new calls; the calls in flight finish." + preview);
      if (view.preview) view.preview(pod, null);
      if (!asked) return;
      outcome("drain " + pod, await podAction(pod, "drain " + pod, "POST", podUrl(pod, "drain"), {}));
      await afterAct();
    },
    async undrain(pod) {
      outcome("undrain " + pod, await podAction(pod, "undrain " + pod, "POST", podUrl(pod, "undrain")));
      await afterAct();
    },
    async clear(pod) {
      const what = "clear the override of " + pod;
      outcome(what, await podAction(pod, what, "DELETE", podUrl(pod, "override")));
      await afterAct();
    },
    async restart(pod) {
      if (!confirm("Restart " + pod + "?\nIt is drained first, then replaced by a new pod.")) return;
      const response = await podAction(pod, "restart " + pod, "POST", podUrl(pod, "restart"));
      started("restart " + pod, response);
    },
  };

  async function afterAct() {
    refreshControls();
    await loadOverrides();
  }

  // ---- the service: policy and rollout restart --------------------------------------

  function renderPolicy(policy) {
    const label = document.getElementById("policy-label");
    if (label) label.textContent = "policy: " + (policy || dash);
    const select = document.getElementById("policy");
    if (!select) return;
    if (controls.policyEdit === null && document.activeElement !== select) {
      select.value = policy || "";
    }
    const edited = controls.policyEdit !== null && controls.policyEdit !== policy;
    select.classList.toggle("edited", edited);
    select.disabled = controls.serviceBusy;
    document.getElementById("policy-apply").disabled = controls.serviceBusy || !edited;
    const clear = document.getElementById("policy-clear");
    clear.hidden = !controls.policyOverride;
    clear.disabled = controls.serviceBusy;
    const override = controls.policyOverride;
    if (override) clear.title = "clear the policy override (" + override.policy + ")";
  }

  async function clearPolicy() {
    const what = "clear the policy override of " + page.service;
    const response = await serviceAction(what, "DELETE", page.api + "policy");
    outcome(what, response);
    await loadOverrides();
  }

  async function serviceAction(what, method, url, body) {
    controls.serviceBusy = true;
    refreshControls();
    if (view.frame()) renderPolicy(view.frame().policy);
    say("pending", what + "…");
    const response = await call(method, url, body);
    controls.serviceBusy = false;
    refreshControls();
    return response;
  }

  async function applyPolicy() {
    const policy = controls.policyEdit;
    const current = view.frame() ? view.frame().policy : null;
    if (!policy || !confirm("Switch " + page.service + " from " + (current || dash) + " to " +
                            policy + "?\nEvery balancer replica picks by it at once.")) return;
    const what = "policy of " + page.service + " to " + policy;
    const response = await serviceAction(what, "PUT", page.api + "policy", { policy });
    if (response.status === 200 || response.status === 503) controls.policyEdit = null;
    outcome(what, response);
    await loadOverrides();
  }

  async function rolloutRestart() {
    if (!confirm("Restart every pod of " + page.service + ", one at a time?\nEach is drained " +
                 "first and its replacement is ready before the next one goes.")) return;
    const what = "rollout restart of " + page.service;
    started(what, await serviceAction(what, "POST", page.api + "rollout-restart"));
  }

  // ---- operations: restarts and rollouts, step by step ------------------------------

  function operationRunning() {
    const op = controls.operation;
    return !!op && isRunning(op);
  }
  function isRunning(op) {
    return op.running != null ? op.running : !["done", "failed", "cancelled"].includes(op.step);
  }

  function started(what, response) {
    if (response.status !== 202) return outcome(what, response);
    say("ok", what + ": started");
    controls.operation = response.data;
    renderOperation();
    pollOperations(RUNNING_POLL_MS);
  }

  // "restart inventory-a: draining → drained → restarting…", then "… → done, new pod X";
  // one that stopped early: "restart inventory-a: draining → cancelled (why)".
  function renderOperation() {
    const op = controls.operation;
    const el = document.getElementById("operation");
    if (!op) return el.replaceChildren();
    const kind = op.kind === "rollout_restart" ? "rollout restart" : op.kind;
    const failed = op.step === "failed" || op.step === "cancelled";
    // An operation that stopped early names the step it stopped at in its detail.
    const stoppedAt = failed ? /during step (\w+)/.exec(op.detail || "") : null;
    const reached = !failed ? STEPS.indexOf(op.step) : stoppedAt ? STEPS.indexOf(stoppedAt[1]) : -1;
    const path = STEPS.slice(0, reached + 1).map((s) => s.replace("_", " "));
    const current = document.createElement("span");
    current.className = "step step-" + op.step + (failed ? " result-failed" : op.step === "done" ? " result-ok" : "");
    current.textContent = failed ? op.step : path.pop() + (isRunning(op) ? "…" : "");
    const before = kind + " " + op.target + ": " + path.join(" → ") + (path.length ? " → " : "");
    let after = "";
    if (op.new_pod) after += ", new pod " + op.new_pod;
    if (op.detail) after += " (" + op.detail + ")";
    el.dataset.step = op.step;
    el.replaceChildren(before, current, after);
    renderCancel();
  }

  // The cancel button shows while an operation runs (operators only: the page has it
  // only for them); the operation stops at its next check and undoes its drain.
  function renderCancel() {
    const cancel = document.getElementById("operation-cancel");
    if (!cancel) return;
    cancel.hidden = !operationRunning();
    cancel.disabled = !!controls.cancelling;
  }

  async function cancelOperation() {
    const op = controls.operation;
    if (!op || !isRunning(op)) return;
    const kind = op.kind === "rollout_restart" ? "rollout restart" : op.kind;
    const what = "cancel the " + kind + " of " + op.target;
    if (!confirm(what.charAt(0).toUpperCase() + what.slice(1) + "?\nIt stops at its next " +
                 "step; a pod drained but not restarted yet gets its traffic back.")) return;
    controls.cancelling = true;
    renderCancel();
    say("pending", what + "…");
    const response = await call("POST", page.operations_api + op.id + "/cancel");
    controls.cancelling = false;
    if (response.status === 202) {
      controls.operation = response.data;
      say("ok", what + ": " + (isRunning(response.data) ? "asked to stop" : response.data.step));
    } else {
      say("failed", what + ": " + (response.data.detail || "HTTP " + response.status));
    }
    renderOperation();
    pollOperations(RUNNING_POLL_MS);
  }

  // Every RUNNING_POLL_MS while an operation runs (its own URL), else every 5 s for one started
  // elsewhere (the running ones of this service).
  function pollOperations(delayMs) {
    clearTimeout(controls.pollTimer);
    controls.pollTimer = setTimeout(pollOnce, delayMs);
  }

  async function pollOnce() {
    if (controls.stopped) return;
    let next = 5000;
    const op = controls.operation;
    if (op && isRunning(op)) {
      const response = await call("GET", page.operations_api + op.id + "/");
      if (response.status === 200) controls.operation = response.data;
      next = RUNNING_POLL_MS;
    } else {
      const query = "?service=" + encodeURIComponent(page.service) + "&running=true";
      const response = await call("GET", page.operations_api + query);
      const found = response.status === 200 ? response.data.results || response.data : [];
      if (found.length) controls.operation = found[0];
    }
    const finished = op && isRunning(op) && !operationRunning();
    renderOperation();
    refreshControls();
    if (finished) await loadOverrides();
    if (!controls.stopped) pollOperations(operationRunning() ? RUNNING_POLL_MS : next);
  }

  // ---- overrides: who asked for what ------------------------------------------------

  function overrideNote(desired) {
    const parts = [];
    if (desired.weight != null) parts.push("weight " + desired.weight);
    if (desired.drained) parts.push("drained");
    const by = desired.updated_by && (desired.updated_by.username || desired.updated_by);
    if (by) parts.push("by " + by);
    if (desired.updated_at) parts.push("at " + new Date(desired.updated_at).toLocaleString());
    if (desired.expires_at) parts.push("until " + new Date(desired.expires_at).toLocaleString());
    return "override: " + (parts.join(", ") || "set");
  }

  async function loadOverrides() {
    if (controls.stopped) return;
    const [pods, service] = await Promise.all([call("GET", page.api + "pods/"),
                                               call("GET", page.api)]);
    if (pods.status === 200) {
      const list = Array.isArray(pods.data) ? pods.data : pods.data.results || [];
      controls.overrides = new Map(list.filter((p) => p.desired).map((p) => [p.pod, p.desired]));
    }
    if (service.status === 200) controls.policyOverride = service.data.policy_override;
    refreshControls();
    const frame = view.frame();
    if (frame) renderPolicy(frame.policy);
  }

  function startControls() {
    pollOperations(0);
    loadOverrides();
    controls.overridesTimer = setInterval(loadOverrides, 5000);
    if (!page.can_act) return;
    const body = document.querySelector("#pods tbody");
    body.addEventListener("input", onInput);
    body.addEventListener("keydown", onKey);
    body.addEventListener("click", onClick);
    const select = document.getElementById("policy");
    select.addEventListener("change", () => {
      controls.policyEdit = select.value;
      if (view.frame()) renderPolicy(view.frame().policy);
    });
    document.getElementById("policy-apply").addEventListener("click", applyPolicy);
    document.getElementById("policy-clear").addEventListener("click", clearPolicy);
    document.getElementById("rollout").addEventListener("click", rolloutRestart);
    document.getElementById("operation-cancel").addEventListener("click", cancelOperation);
  }

  // Every poll ends: the session expired (`view.expired()` says so on the page).
  function stop() {
    controls.stopped = true;
    clearTimeout(controls.pollTimer);
    clearInterval(controls.overridesTimer);
  }

  return {
    stop,
    newControls,
    updateControls,
    renderPolicy,
    overrideOf: (pod) => controls.overrides.get(pod),
    overrideNote,
    forget: (pod) => controls.edits.delete(pod),
    start: startControls,
  };
};
