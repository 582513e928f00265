// The service page: per-pod charts and table, first painted from the backfill that
// ws/services/<service>/ sends and then extended by its live frames. Plain script, no build step.
// A frame is {type, service, t, pods: [...], totals, imbalance, pod_imbalance,
// bypass_imbalance, replicas}; see dashboard/collector/frames.py. Three views of traffic:
// `rps` is what Ballast carried to a pod, `pod_rps` what the pod says it handled from every
// client, `px_rps` what proxyless clients sent it straight (balanced by Ballast's xDS server),
// and the rest (never below 0) what reached it bypassing Ballast: the L4 path.
//
// The charts are charts.js's; frames that arrive are handed to them (and the table
// and badges rendered) at most once per animation frame.
(function () {
  "use strict";

  const page = JSON.parse(document.getElementById("ballast-service").textContent);
  const CLOSE_UNAUTHENTICATED = 4401;
  const CLOSE_UNKNOWN_SERVICE = 4404;
  const MIB = 1024 * 1024;
  // No frame for three frame intervals while the socket is open (a collector that hangs,
  // balancers paused): the figures are stale.
  const STALE_AFTER_MS = Math.max(3 * (page.interval_ms || 1000), 2000);

  const state = {
    pending: [], // frames received, not shown yet
    scheduled: false,
    lastT: 0,
    frame: null, // the newest frame, which the table and the controls show
    socket: null,
    retryMs: 1000,
    downSince: null, // when the socket closed; null while connected
    lastArrivalMs: 0,
    expired: false,
    watchdog: null,
  };

  // ---- formatting -------------------------------------------------------------------

  const dash = "—";
  function num(v, digits) {
    return v == null ? dash : Number(v).toFixed(digits);
  }
  function pct(v) {
    return v == null ? dash : (v * 100).toFixed(1) + "%";
  }
  function mib(v) {
    return v == null ? dash : (v / MIB).toFixed(0);
  }
  function clock(date) {
    return date.toLocaleTimeString([], { hour12: false });
  }
  // An age as kubectl shows it: whole units, truncated (45s, 12m, 3h, 2d).
  function duration(s) {
    if (s == null || !(s >= 0)) return dash;
    if (s < 120) return Math.floor(s) + "s";
    if (s < 7200) return Math.floor(s / 60) + "m";
    if (s < 172800) return Math.floor(s / 3600) + "h";
    return Math.floor(s / 86400) + "d";
  }

  const charts = window.ballastCharts(page, { expired: () => expired(), status });
  const { colorOf, byPod, bypass } = charts;

  function schedule() {
    if (state.scheduled) return;
    state.scheduled = true;
    requestAnimationFrame(flush);
  }

  // At most once per animation frame (not at all while the tab is hidden), whatever
  // the number of frames that came in.
  function flush() {
    state.scheduled = false;
    const fresh = state.pending;
    if (!fresh.length) return;
    state.pending = [];
    charts.show(fresh);
    const latest = fresh[fresh.length - 1];
    state.frame = latest;
    renderTable(latest);
    renderBadges(latest);
    renderTotals(latest);
  }

  // ---- table, badges and totals -----------------------------------------------------

  // The table is updated in place, row by row and cell by cell: a frame never replaces
  // the weight an operator is typing.
  const COLUMNS = [
    (p) => [p.pod, "text name"],
    (p) => [p.state || p.phase || dash,
            "text " + (p.state === "READY" ? "state-READY" : "state-other")],
    null, // the weight and the override marker: renderWeightCell
    (p, f) => [pct(p.state === "READY" && f.readyWeight > 0 ? weightNow(p) / f.readyWeight : null)],
    (p, f) => [pct(p.rps != null && f.totalRps > 0 ? p.rps / f.totalRps : null)],
    (p) => [num(p.rps, 1)],
    (p) => [num(bypass(p), 1)],
    (p) => [num(p.pod_rps, 1)],
    (p) => [num(p.p50, 1) + " / " + num(p.p99, 1)],
    (p) => errorsCell(p),
    (p) => [p.cpu_m == null ? dash : String(p.cpu_m)],
    (p) => [mib(p.mem) + " / " + mib(p.mem_limit)],
    (p) => [p.restarts == null ? dash : String(p.restarts)],
    null, // the last termination, a badge when OOMKilled: renderReasonCell
    // `started` is unix ms; measured against the frame's time, so it moves with each frame.
    (p, f) => [p.started == null ? dash : duration((f.t - p.started) / 1000)],
  ];
  // Errors/s via Ballast, and (↻ n) the pod's failures Ballast retried on another pod.
  function errorsCell(p) {
    const retried = p.retries > 0 ? " (↻ " + p.retries + ")" : "";
    return [num(p.err_s, 2) + retried, p.err_s > 0 ? "err" : ""];
  }
  const WEIGHT_COLUMN = 2;
  const REASON_COLUMN = 13;
  const MEMORY_COLUMN = 11;
  const rows = new Map(); // pod → {row, cells, controls}

  // The weight the balancers pick by now: slow start ramps a new pod's up to its weight.
  function weightNow(p) {
    return p.eff_weight != null ? p.eff_weight : p.weight || 0;
  }

  function setCell(td, text, className) {
    if (td.textContent !== text) td.textContent = text;
    const cls = className || "";
    if (td.className !== cls) td.className = cls;
  }

  function newRow(pod) {
    const row = document.createElement("tr");
    row.dataset.pod = pod;
    const cells = COLUMNS.map(() => row.appendChild(document.createElement("td")));
    const entry = { row, cells, controls: null };
    if (page.can_act) {
      const td = row.appendChild(document.createElement("td"));
      td.className = "actions";
      entry.controls = controls.newControls(pod);
      td.appendChild(entry.controls.box);
    }
    explain.newRow(entry, pod); // the "why" cell, and the preview beside the controls
    return entry;
  }

  function renderWeightCell(td, p) {
    const desired = controls.overrideOf(p.pod);
    const text = p.weight == null ? dash : String(p.weight);
    const note = desired ? controls.overrideNote(desired) : "";
    if (td.dataset.shown === text + "|" + note) return;
    td.dataset.shown = text + "|" + note;
    td.replaceChildren(text);
    if (desired) {
      const marker = document.createElement("span");
      marker.className = "override";
      marker.textContent = "override";
      marker.title = note;
      td.appendChild(marker);
    }
  }

  function renderReasonCell(td, p) {
    const reason = p.last_reason || dash;
    if (td.dataset.shown === reason) return;
    td.dataset.shown = reason;
    td.className = "text";
    if (reason !== "OOMKilled") return td.replaceChildren(reason);
    const badge = document.createElement("span");
    badge.className = "oom";
    badge.textContent = reason;
    td.replaceChildren(badge);
  }

  function renderTable(frame) {
    const ready = frame.pods.filter((p) => p.state === "READY");
    const figures = {
      t: frame.t,
      readyWeight: ready.reduce((sum, p) => sum + weightNow(p), 0),
      totalRps: frame.pods.reduce((sum, p) => sum + (p.rps || 0), 0),
    };
    const body = document.querySelector("#pods tbody");
    const present = byPod(frame);
    for (const [pod, entry] of rows) {
      if (!present.has(pod)) {
        entry.row.remove();
        rows.delete(pod);
        controls.forget(pod);
        explain.forget(pod);
      }
    }
    // Rows already shown keep their order (pods come sorted by name); new ones are slotted
    // in, so no row an operator is working in is taken out of the page and put back.
    let next = body.firstElementChild;
    for (const p of frame.pods) {
      let entry = rows.get(p.pod);
      if (!entry) rows.set(p.pod, (entry = newRow(p.pod)));
      if (entry.row === next) next = next.nextElementSibling;
      else body.insertBefore(entry.row, next);
      entry.row.className = p.pod === frame.imbalance.busiest ? "busiest" : "";
      COLUMNS.forEach((column, i) => {
        if (column) setCell(entry.cells[i], ...column(p, figures));
      });
      entry.cells[0].style.borderLeftColor = colorOf(p.pod); // CSSOM: allowed by the policy
      renderWeightCell(entry.cells[WEIGHT_COLUMN], p);
      renderReasonCell(entry.cells[REASON_COLUMN], p);
      if (window.ballastOom) window.ballastOom.render(entry.cells[MEMORY_COLUMN], p);
      if (entry.controls) controls.updateControls(entry.controls, p);
      explain.refresh(p.pod, entry.controls);
    }
  }

  // The weight cells and controls again, between frames (an edit, an act, an override).
  function refreshRows() {
    if (!state.frame) return;
    for (const p of state.frame.pods) {
      const entry = rows.get(p.pod);
      if (!entry) continue;
      if (entry.controls) controls.updateControls(entry.controls, p);
      explain.refresh(p.pod, entry.controls);
      renderWeightCell(entry.cells[WEIGHT_COLUMN], p);
    }
  }

  const explain = window.ballastExplain(page); // explain.js: "why" and previews
  const controls = window.ballastControls(page, {
    frame: () => state.frame,
    preview: explain.preview,
    controlsOf: (pod) => rows.get(pod).controls,
    refreshRows,
    expired: () => expired(),
  });

  // An imbalance badge: "via Ballast: balanced, max/mean 1.04, CV 0.03" or, flagged,
  // "bypassing Ballast: imbalanced, busiest 2.10× mean, CV 0.52".
  function renderImbalance(id, label, im, hasFigures) {
    const badge = document.getElementById(id);
    if (!hasFigures) {
      badge.className = "badge";
      badge.textContent = label + ": no figures";
    } else if (im.max_mean == null) {
      badge.className = "badge";
      badge.textContent = label + ": no traffic";
    } else if (im.flagged) {
      badge.className = "badge warn";
      badge.textContent = label + ": imbalanced, busiest " + im.max_mean.toFixed(2) +
        "× mean, CV " + num(im.cv, 2);
    } else if (im.leans_away) {
      badge.className = "badge ok";
      badge.textContent = label + ": leans away from L4 load, busiest " + im.max_mean.toFixed(2) +
        "× mean, CV " + num(im.cv, 2);
    } else {
      badge.className = "badge ok";
      badge.textContent = label + ": balanced, max/mean " + im.max_mean.toFixed(2) +
        ", CV " + num(im.cv, 2);
    }
    badge.title = im.busiest ? "busiest pod: " + im.busiest : "";
    if (im.leans_away) {
      badge.title += " — the policy is load-aware: it sends fewer calls to the pods that " +
        "clients bypassing Ballast keep busy, which evens out what the pods carry in all.";
    }
  }

  function renderBadges(frame) {
    const reported = frame.totals.pod_rps != null;
    renderImbalance("imbalance", "via Ballast", frame.imbalance, true);
    renderImbalance("bypass-imbalance", "bypassing Ballast", frame.bypass_imbalance || {}, reported);
    // The total the pods report: all clients, not weight-normalised (frames.py says why).
    renderImbalance("pod-imbalance", "total at pods", frame.pod_imbalance || {}, reported);
    document.getElementById("story").textContent = story(frame);
    renderFinding(frame.pinning);
    const note = document.getElementById("usage-note");
    note.textContent = frame.usage_note || "";
    note.hidden = !frame.usage_note;
    renderReplicas(frame.replicas);
    renderXds(frame.xds);
    controls.renderPolicy(frame.policy);
  }

  // Clients that bypass Ballast pinned to a pod, in words (collector/pinning/).
  function renderFinding(pinning) {
    const finding = document.getElementById("finding");
    const text = (pinning && pinning.finding) || "";
    if (finding.textContent !== text) finding.textContent = text;
    finding.hidden = !text;
  }

  // Which path is skewed, in words (the overview says the same, overview.py).
  function story(frame) {
    const via = frame.imbalance || {};
    const by = frame.bypass_imbalance || {};
    const parts = [];
    if (by.flagged) {
      parts.push("Clients that bypass Ballast: busiest pod " + by.max_mean.toFixed(2) +
                 "× mean (" + by.busiest + ") — these clients are pinned by L4 connections.");
    } else if (by.max_mean != null) {
      parts.push("Clients that bypass Ballast are spread evenly.");
    }
    if (via.flagged) {
      parts.push("Via Ballast: busiest pod " + via.max_mean.toFixed(2) + "× its weight's share (" +
                 via.busiest + ").");
    } else if (via.leans_away) {
      parts.push("Via Ballast: busiest pod " + via.max_mean.toFixed(2) + "× mean (" +
                 via.busiest + ") by design: " + frame.policy +
                 " sends fewer calls to the pods that clients bypassing Ballast keep busy.");
    } else if (via.max_mean != null) {
      parts.push("Via Ballast: even (max/mean " + via.max_mean.toFixed(2) + ").");
    }
    return parts.join(" ");
  }

  // "balancers 1/1 up, in sync": every replica that is up holds the operator's desired
  // state; "…, 1 pending" while one does not yet (the reconciler is applying it).
  function renderReplicas(replicas) {
    const up = replicas.filter((r) => r.up);
    const pending = up.filter((r) => r.converged === false).length;
    const judged = up.some((r) => r.converged != null);
    let text = "balancers " + up.length + "/" + replicas.length + " up";
    if (pending) text += ", " + pending + " pending";
    else if (judged) text += ", in sync";
    const badge = document.getElementById("replicas");
    badge.textContent = text;
    badge.className = "badge" + (up.length < replicas.length ? " bad" : pending ? " warn" : "");
  }

  // "xDS clients: 3, all on version 12" or "xDS clients: 2 of 3 on version 12; client X
  // NACKed …" (the collector's words, xds.label), else "xDS clients: 3, all in sync" /
  // "…, 1 pending" (not yet ACKed the endpoints being served); hidden while the service
  // has no proxyless client.
  function renderXds(xds) {
    const badge = document.getElementById("xds-clients");
    if (!xds || !xds.clients) {
      badge.hidden = true;
      return;
    }
    const pending = xds.clients - xds.in_sync;
    badge.textContent = xds.label || xdsCountsLabel(xds, pending);
    badge.className = "badge" + (pending ? " warn" : " ok");
    badge.hidden = false;
  }

  function xdsCountsLabel(xds, pending) {
    let text = "xDS clients: " + xds.clients + (pending ? ", " + pending + " pending" : ", all in sync");
    if (xds.fallback) text += " (round robin: they cannot follow the policy)";
    return text;
  }

  function renderTotals(frame) {
    const t = frame.totals;
    const items = [
      ["pods ready", t.ready + "/" + t.pods],
      ["req/s via Ballast", num(t.rps, 1)],
      ["proxyless", num(t.px_rps, 1)],
      ["bypassing", num(t.bypass_rps, 1)],
      ["total at pods", num(t.pod_rps, 1)],
      ["errors", pct(t.err_ratio)],
      ["p50", num(t.p50, 1) + " ms"],
      ["p99", num(t.p99, 1) + " ms"],
      ["in flight", String(t.in_flight)],
    ];
    const box = document.getElementById("totals");
    box.replaceChildren(...items.map(([label, v]) => {
      const span = document.createElement("span");
      const b = document.createElement("b");
      b.textContent = v;
      span.append(label + " ", b);
      return span;
    }));
  }

  // ---- frames in, from the history and the socket -----------------------------------

  function apply(frames) {
    const fresh = frames.filter((f) => f.t > state.lastT);
    if (!fresh.length) return;
    state.lastT = fresh[fresh.length - 1].t;
    state.lastArrivalMs = Date.now();
    stale(false);
    state.pending.push(...fresh);
    if (state.pending.length > page.max_points) state.pending.splice(0, state.pending.length - page.max_points);
    schedule();
  }

  function status(text, bad) {
    const el = document.getElementById("status");
    el.className = bad ? "bad" : "muted";
    el.replaceChildren(text);
    return el;
  }

  // Stale looks stale: figures and badges greyed while they are not current.
  function stale(on) {
    document.body.classList.toggle("stale", on);
  }

  function expired() {
    if (state.expired) return;
    state.expired = true;
    stale(true);
    controls.stop();
    explain.stop();
    charts.stop();
    // The page's other scripts (automation.js) stop their polls too.
    document.dispatchEvent(new CustomEvent("ballast:expired"));
    clearInterval(state.watchdog);
    if (state.socket) state.socket.onclose = null;
    if (state.socket) state.socket.close();
    const el = status("session expired — ", true);
    const link = document.createElement("a");
    link.href = page.login_url;
    link.textContent = "log in again";
    el.append(link, " to see current figures");
  }

  function disconnected(delayMs) {
    if (!state.downSince) state.downSince = new Date();
    stale(true);
    status("disconnected since " + clock(state.downSince) + " — reconnecting in " +
           Math.ceil(delayMs / 1000) + " s", true);
  }

  // Connected, but no frame for a while: the collector or the balancers are away.
  function watch() {
    if (state.downSince || state.expired || !state.lastArrivalMs) return;
    if (Date.now() - state.lastArrivalMs > STALE_AFTER_MS) {
      stale(true);
      status("no data since " + clock(new Date(state.lastArrivalMs)), true);
    } else if (document.getElementById("status").className === "bad") {
      status("live");
    }
  }

  function connect() {
    if (state.expired) return;
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    // The server sends the frames after `since` first (the last 15 minutes on the first
    // connection, the gap on a reconnection), then each live frame.
    const url = scheme + location.host + page.ws_path + "?since=" + state.lastT;
    const socket = new WebSocket(url);
    state.socket = socket;
    socket.onopen = () => {
      state.retryMs = 1000;
      state.downSince = null;
      stale(false);
      status("live");
    };
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "service.backfill") {
        apply(message.frames);
        if (!state.lastT) status("live — waiting for the first frame…");
      } else if (message.type === "service.frame") {
        apply([message]);
      }
    };
    socket.onclose = (event) => {
      if (event.code === CLOSE_UNAUTHENTICATED) return expired();
      if (event.code === CLOSE_UNKNOWN_SERVICE) {
        stale(true);
        return status("this service is no longer configured", true);
      }
      // Backoff with jitter, up to 30 s, so a restarted dashboard is not stampeded.
      const delay = state.retryMs * (0.5 + Math.random() / 2);
      state.retryMs = Math.min(state.retryMs * 2, 30000);
      disconnected(delay);
      setTimeout(connect, delay);
    };
  }

  controls.start();
  explain.start();
  charts.start();
  state.watchdog = setInterval(watch, 1000);
  connect();
})();
