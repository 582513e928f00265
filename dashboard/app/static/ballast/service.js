// The service page: per-pod charts and table, first painted from the backfill that
// ws/services/<service>/ sends and then extended by its live frames. Plain script, no build step.
// A frame is {type, service, t, pods: [...], totals, imbalance, pod_imbalance,
// bypass_imbalance, replicas}; see dashboard/collector/frames.py. Three views of traffic:
// `rps` is what Ballast carried to a pod, `pod_rps` what the pod says it handled from every
// client, and the difference (never below 0) what reached it bypassing Ballast: the L4 path.
//
// Light on the browser: frames that arrive are drawn at most once per animation frame,
// each chart extended in place (extendTraces) and redrawn whole (react) only when its set
// of lines changes; charts out of view wait until they are scrolled to.
(function () {
  "use strict";

  const page = JSON.parse(document.getElementById("ballast-service").textContent);
  const CLOSE_UNAUTHENTICATED = 4401;
  const CLOSE_UNKNOWN_SERVICE = 4404;
  const MIB = 1024 * 1024;
  const PALETTE = page.palette;
  // Rates are averaged over this many frames (5 s at the default interval) unless the
  // operator asks for the raw per-second figures: those swing widely during a rollout.
  const SMOOTH_FRAMES = 5;
  // No frame for this long while the socket is open: the figures are stale.
  const STALE_AFTER_MS = 5000;
  // plotly.js with nothing that leaves the page: no link to its cloud, no logo, a
  // minimal mode bar shown on hover.
  const PLOTLY_CONFIG = {
    displaylogo: false,
    showLink: false,
    showSendToCloud: false,
    responsive: true,
    displayModeBar: "hover",
    modeBarButtons: [["zoom2d", "autoScale2d", "toImage"]],
  };

  function bypass(p) {
    return p.pod_rps == null ? null : Math.max(0, p.pod_rps - (p.rps || 0));
  }
  function mibOf(v) {
    return v == null ? null : v / MIB;
  }

  // One chart per figure; `limit` draws a second, dashed line per pod; `rate` ones are
  // smoothed unless the raw view is on.
  const CHARTS = [
    { key: "rps", title: "Requests/s via Ballast", rate: true, value: (p) => p.rps },
    { key: "bypass", title: "Requests/s bypassing Ballast (L4)", rate: true, value: bypass },
    { key: "pod_rps", title: "Requests/s at pods (total)", rate: true, value: (p) => p.pod_rps },
    { key: "p99", title: "p99 latency via Ballast (ms)", value: (p) => p.p99 },
    { key: "err_s", title: "Errors/s via Ballast", rate: true, value: (p) => p.err_s },
    { key: "in_flight", title: "In flight via Ballast", value: (p) => p.in_flight },
    { key: "cpu_m", title: "CPU (millicores)", value: (p) => p.cpu_m },
    { key: "mem", title: "Memory (MiB), limit dashed", value: (p) => mibOf(p.mem),
      limit: (p) => mibOf(p.mem_limit) },
  ];

  const state = {
    frames: [], // the window the charts show, oldest first
    pending: [], // frames received, not drawn yet
    scheduled: false,
    pods: [], // every pod in the window, in order of appearance: the charts' lines
    lastSeen: new Map(), // pod → t of the newest frame it was in
    colors: new Map(), // pod → palette color, from its first frame
    hidden: new Set(), // pods hidden from the charts (legend)
    smooth: true,
    legendKey: "",
    lastT: 0,
    frame: null, // the newest frame, which the table and the controls show
    socket: null,
    retryMs: 1000,
    downSince: null, // when the socket closed; null while connected
    lastArrivalMs: 0,
    expired: false,
    events: [], // markers: {t, text, kind}
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

  // ---- colors follow the page's CSS variables (light and dark) ----------------------

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }
  function themeLayout() {
    const line = cssVar("--line");
    const axis = { gridcolor: line, linecolor: line, zerolinecolor: line, color: cssVar("--muted") };
    return {
      paper_bgcolor: cssVar("--card"),
      plot_bgcolor: cssVar("--card"),
      font: { color: cssVar("--fg"), size: 11 },
      // Time of day only: the date would need a second label line under the axis.
      xaxis: Object.assign({ type: "date", tickformat: "%H:%M:%S" }, axis),
      yaxis: Object.assign({ rangemode: "tozero" }, axis),
    };
  }
  function layoutOf(chart) {
    const layout = themeLayout();
    const smoothed = chart.rate && state.smooth ? " · " + SMOOTH_FRAMES + " s mean" : "";
    layout.title = { text: chart.title + smoothed, x: 0.01, xanchor: "left", font: { size: 13 } };
    layout.margin = { l: 48, r: 8, t: 30, b: 28 };
    layout.showlegend = false; // one legend for every chart: #legend, above them
    layout.hovermode = "x unified";
    layout.uirevision = "keep"; // a redraw keeps the operator's zoom
    const shown = markersInWindow();
    layout.shapes = shown.map((e) => ({
      type: "line", xref: "x", yref: "paper", x0: new Date(e.t), x1: new Date(e.t), y0: 0, y1: 1,
      line: { color: cssVar(e.kind === "bad" ? "--bad" : "--muted"), width: 1, dash: "dot" },
    }));
    layout.annotations = shown.map((e) => ({
      x: new Date(e.t), xref: "x", y: 1, yref: "paper", yanchor: "top", xanchor: "left",
      text: e.label, showarrow: false, font: { size: 9, color: cssVar("--muted") },
      hovertext: e.text,
    }));
    return layout;
  }

  function colorOf(pod) {
    return state.colors.get(pod) || PALETTE[0];
  }
  // The frame's color index (the collector's, the same on the overview); a pod named
  // in no frame yet gets a hash of its name.
  function colorFrom(p) {
    if (p.color != null) return PALETTE[p.color % PALETTE.length];
    let h = 0x811c9dc5;
    for (let i = 0; i < p.pod.length; i++) h = Math.imul(h ^ p.pod.charCodeAt(i), 0x01000193) >>> 0;
    return PALETTE[h % PALETTE.length];
  }

  // ---- charts -----------------------------------------------------------------------

  function chartDiv(chart) {
    return document.getElementById("chart-" + chart.key);
  }

  function byPod(frame) {
    if (!frame._byPod) frame._byPod = new Map(frame.pods.map((p) => [p.pod, p]));
    return frame._byPod;
  }

  // undefined: the pod is not in frame i (its line ends there); null: no figure.
  function rawAt(fn, i, pod) {
    const p = byPod(state.frames[i]).get(pod);
    if (!p) return undefined;
    const v = fn(p);
    return v == null ? null : v;
  }

  function valueAt(chart, fn, i, pod) {
    const v = rawAt(fn, i, pod);
    if (v === undefined) return null;
    if (!chart.rate || !state.smooth) return v;
    let sum = 0;
    let n = 0;
    for (let j = i; j >= 0 && j > i - SMOOTH_FRAMES; j--) {
      const w = rawAt(fn, j, pod);
      if (w != null) {
        sum += w;
        n += 1;
      }
    }
    return n ? sum / n : null;
  }

  function slotsOf(chart) {
    const slots = [];
    for (const pod of state.pods) {
      slots.push({ pod, fn: chart.value, limit: false });
      if (chart.limit) slots.push({ pod, fn: chart.limit, limit: true });
    }
    return slots;
  }

  function series(chart, from) {
    const slots = slotsOf(chart);
    const x = slots.map(() => []);
    const y = slots.map(() => []);
    for (let i = from; i < state.frames.length; i++) {
      const when = new Date(state.frames[i].t);
      slots.forEach((slot, k) => {
        x[k].push(when);
        y[k].push(valueAt(chart, slot.fn, i, slot.pod));
      });
    }
    return { slots, x, y };
  }

  function fullTraces(chart) {
    const { slots, x, y } = series(chart, 0);
    return slots.map((slot, k) => ({
      type: "scatter",
      mode: "lines",
      name: slot.limit ? slot.pod + " limit" : slot.pod,
      x: x[k],
      y: y[k],
      visible: !state.hidden.has(slot.pod),
      line: { color: colorOf(slot.pod), width: slot.limit ? 1 : 1.6,
              dash: slot.limit ? "dash" : "solid" },
      hovertemplate: "%{y:.3~f}",
    }));
  }

  // The chart toolbars stay out of the tab order: the page's own controls come first.
  function untab(div) {
    for (const el of div.querySelectorAll(".modebar a, .modebar button, .modebar-btn")) {
      el.tabIndex = -1;
    }
  }

  function redraw(chart) {
    const div = chartDiv(chart);
    Plotly.react(div, fullTraces(chart), layoutOf(chart), PLOTLY_CONFIG);
    if (!chart.drawn) div.on("plotly_afterplot", () => untab(div));
    untab(div);
    chart.full = false;
    chart.drawn = true;
  }

  // Draws the frames from index `from` on: extends the chart in place, or redraws it
  // whole when its lines changed; a chart out of view only notes that it is behind.
  function draw(chart, from) {
    if (!chart.visible || !window.Plotly) {
      chart.full = true;
      return;
    }
    if (chart.full || !chart.drawn) return redraw(chart);
    const { slots, x, y } = series(chart, from);
    if (!slots.length || !x[0].length) return;
    Plotly.extendTraces(chartDiv(chart), { x, y }, slots.map((_, k) => k), page.max_points);
  }

  function redrawAll() {
    if (!window.Plotly) return;
    for (const chart of CHARTS) {
      chart.full = true;
      if (state.frames.length) draw(chart, 0);
    }
  }

  // Takes the frames into the window; true when the set of lines changed.
  function take(fresh) {
    let changed = false;
    for (const frame of fresh) {
      state.frames.push(frame);
      for (const p of frame.pods) {
        if (!state.lastSeen.has(p.pod)) {
          state.pods.push(p.pod);
          state.colors.set(p.pod, colorFrom(p));
          changed = true;
        }
        state.lastSeen.set(p.pod, frame.t);
      }
    }
    const over = state.frames.length - page.max_points;
    if (over > 0) state.frames.splice(0, over);
    // A pod replaced long ago, whose line has left the window, leaves the legend too.
    const oldest = state.frames[0].t;
    const kept = state.pods.filter((pod) => state.lastSeen.get(pod) >= oldest);
    if (kept.length !== state.pods.length) {
      for (const pod of state.pods) if (!kept.includes(pod)) state.lastSeen.delete(pod);
      state.pods = kept;
      changed = true;
    }
    return changed;
  }

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
    const changed = take(fresh);
    const from = Math.max(0, state.frames.length - fresh.length);
    for (const chart of CHARTS) {
      if (changed || fresh.length >= state.frames.length) chart.full = true;
      draw(chart, from);
    }
    const latest = fresh[fresh.length - 1];
    state.frame = latest;
    renderTable(latest);
    renderBadges(latest);
    renderTotals(latest);
    renderLegend(latest);
  }

  // ---- one legend for every chart: a pod's name in its color; a click hides it -------

  function renderLegend(frame) {
    const present = byPod(frame);
    const key = state.pods.map((p) => p + (present.has(p) ? "" : "~") +
                                (state.hidden.has(p) ? "-" : "")).join("|");
    if (key === state.legendKey) return;
    state.legendKey = key;
    const items = state.pods.map((pod) => {
      const item = document.createElement("button");
      item.type = "button";
      item.className = "legend-item" + (present.has(pod) ? "" : " gone");
      item.dataset.pod = pod;
      item.setAttribute("aria-pressed", String(!state.hidden.has(pod)));
      item.title = (state.hidden.has(pod) ? "show " : "hide ") + pod + " on the charts" +
        (present.has(pod) ? "" : " (replaced: its line ends where it left)");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.backgroundColor = colorOf(pod); // CSSOM: allowed by the policy
      const name = document.createElement("span");
      name.className = "legend-name";
      name.textContent = pod;
      item.append(swatch, name);
      if (!present.has(pod)) item.append(" (gone)");
      return item;
    });
    document.getElementById("legend").replaceChildren(...items);
  }

  function onLegendClick(event) {
    const item = event.target.closest(".legend-item");
    if (!item) return;
    const pod = item.dataset.pod;
    if (state.hidden.has(pod)) state.hidden.delete(pod);
    else state.hidden.add(pod);
    redrawAll();
    if (state.frame) renderLegend(state.frame);
  }

  function onSmoothClick() {
    state.smooth = !state.smooth;
    const button = document.getElementById("smooth");
    button.setAttribute("aria-pressed", String(!state.smooth));
    button.textContent = state.smooth ? "rates: " + SMOOTH_FRAMES + " s mean" : "rates: raw";
    for (const chart of CHARTS) if (chart.rate) chart.full = true;
    for (const chart of CHARTS) if (chart.rate && state.frames.length) draw(chart, 0);
  }

  // ---- event markers: drains, weights, restarts, rollouts (audit), OOMKills (pods) ----

  const AUDIT_LABELS = {
    drain: "drain", undrain: "undrain", weight: "weight", set_weight: "weight",
    restart: "restart", rollout_restart: "rollout", policy: "policy", set_policy: "policy",
  };

  function markersInWindow() {
    if (!state.frames.length) return [];
    const oldest = state.frames[0].t;
    return state.events.filter((e) => e.t >= oldest).slice(-20);
  }

  // Restarts and OOMKills from the pods' own facts: a restart count that rose.
  function podEvents(fresh) {
    const found = [];
    for (const frame of fresh) {
      for (const p of frame.pods) {
        const before = state.restarts.get(p.pod);
        if (before != null && p.restarts != null && p.restarts > before) {
          const oom = p.last_reason === "OOMKilled";
          found.push({ t: frame.t, kind: oom ? "bad" : "info", label: oom ? "OOMKilled" : "restart",
                       text: p.pod + (oom ? " OOMKilled" : " restarted") });
        }
        if (p.restarts != null) state.restarts.set(p.pod, p.restarts);
      }
    }
    return found;
  }
  state.restarts = new Map();

  async function loadAuditEvents() {
    if (state.expired) return;
    const url = page.audit_api + "?service=" + encodeURIComponent(page.service);
    let response;
    try {
      response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    } catch (err) {
      return;
    }
    if (response.status === 401 || response.status === 403) return expired();
    if (!response.ok) return;
    const data = await response.json().catch(() => ({}));
    const list = Array.isArray(data) ? data : data.results || [];
    const audit = list
      .filter((e) => AUDIT_LABELS[e.action] && e.result !== "denied")
      .map((e) => ({ t: Date.parse(e.at), kind: e.result === "failed" ? "bad" : "info",
                     label: AUDIT_LABELS[e.action],
                     text: e.action + " " + (e.target || "") + " by " + (e.actor || "?") }));
    const pods = state.events.filter((e) => e.fromPods);
    const merged = audit.concat(pods).sort((a, b) => a.t - b.t);
    if (JSON.stringify(merged) !== JSON.stringify(state.events)) {
      state.events = merged;
      redrawAll();
    }
  }

  function notePodEvents(fresh) {
    const found = podEvents(fresh).map((e) => Object.assign(e, { fromPods: true }));
    if (!found.length) return;
    state.events = state.events.concat(found).sort((a, b) => a.t - b.t);
    for (const chart of CHARTS) chart.full = true;
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
    (p) => [num(p.err_s, 2), p.err_s > 0 ? "err" : ""],
    (p) => [p.cpu_m == null ? dash : String(p.cpu_m)],
    (p) => [mib(p.mem) + " / " + mib(p.mem_limit)],
    (p) => [p.restarts == null ? dash : String(p.restarts)],
    null, // the last termination, a badge when OOMKilled: renderReasonCell
    // `started` is unix ms; measured against the frame's time, so it moves with each frame.
    (p, f) => [p.started == null ? dash : duration((f.t - p.started) / 1000)],
  ];
  const WEIGHT_COLUMN = 2;
  const REASON_COLUMN = 13;
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
      if (entry.controls) controls.updateControls(entry.controls, p);
    }
  }

  // The weight cells and controls again, between frames (an edit, an act, an override).
  function refreshRows() {
    if (!state.frame) return;
    for (const p of state.frame.pods) {
      const entry = rows.get(p.pod);
      if (!entry) continue;
      if (entry.controls) controls.updateControls(entry.controls, p);
      renderWeightCell(entry.cells[WEIGHT_COLUMN], p);
    }
  }

  const controls = window.ballastControls(page, {
    frame: () => state.frame,
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
    } else {
      badge.className = "badge ok";
      badge.textContent = label + ": balanced, max/mean " + im.max_mean.toFixed(2) +
        ", CV " + num(im.cv, 2);
    }
    badge.title = im.busiest ? "busiest pod: " + im.busiest : "";
  }

  function renderBadges(frame) {
    const reported = frame.totals.pod_rps != null;
    renderImbalance("imbalance", "via Ballast", frame.imbalance, true);
    renderImbalance("bypass-imbalance", "bypassing Ballast", frame.bypass_imbalance || {}, reported);
    // The total the pods report: all clients, not weight-normalised (frames.py says why).
    renderImbalance("pod-imbalance", "total at pods", frame.pod_imbalance || {}, reported);
    document.getElementById("story").textContent = story(frame);
    renderReplicas(frame.replicas);
    controls.renderPolicy(frame.policy);
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

  function renderTotals(frame) {
    const t = frame.totals;
    const items = [
      ["pods ready", t.ready + "/" + t.pods],
      ["req/s via Ballast", num(t.rps, 1)],
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
    notePodEvents(fresh);
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
    clearInterval(state.watchdog);
    clearInterval(state.auditTimer);
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
      status("no new figures since " + clock(new Date(state.lastArrivalMs)), true);
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

  // Charts out of view are not drawn; one scrolled into view catches up at once.
  function observeCharts() {
    const byDiv = new Map(CHARTS.map((c) => [chartDiv(c), c]));
    for (const chart of CHARTS) chart.visible = true;
    if (!("IntersectionObserver" in window)) return;
    const observer = new IntersectionObserver((entries) => {
      for (const entry of entries) {
        const chart = byDiv.get(entry.target);
        chart.visible = entry.isIntersecting;
        if (chart.visible && chart.full && state.frames.length) draw(chart, 0);
      }
    }, { rootMargin: "200px" });
    for (const div of byDiv.keys()) observer.observe(div);
  }

  // plotly.js (4.8 MB) runs once the page is up: the table, badges and totals show from
  // the first frames while it loads, and the charts draw as soon as it has.
  function loadPlotly() {
    const script = document.createElement("script");
    script.src = page.plotly_url;
    script.addEventListener("load", redrawAll);
    script.addEventListener("error", () => status("the charts' script did not load — reload the page", true));
    document.head.appendChild(script);
  }

  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", redrawAll);
  document.getElementById("legend").addEventListener("click", onLegendClick);
  document.getElementById("smooth").addEventListener("click", onSmoothClick);
  observeCharts();
  loadPlotly();
  controls.start();
  state.watchdog = setInterval(watch, 1000);
  loadAuditEvents();
  state.auditTimer = setInterval(loadAuditEvents, 10000);
  connect();
})();
