// The service page: per-pod charts and table, first painted from the backfill that
// ws/services/<service>/ sends and then extended by its live frames. Plain script, no build step.
// A frame is {type, service, t, pods: [...], totals, imbalance, pod_imbalance, replicas}; see
// dashboard/collector/frames.py. `rps` is what Ballast carried to a pod; `pod_rps` what the pod
// says it handled, from every client (those that bypass Ballast included).
(function () {
  "use strict";

  const page = JSON.parse(document.getElementById("ballast-service").textContent);
  const CLOSE_UNAUTHENTICATED = 4401;
  const CLOSE_UNKNOWN_SERVICE = 4404;
  const MIB = 1024 * 1024;
  const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948",
                   "#b07aa1", "#ff9da7", "#9c755f", "#8cd17d", "#86bcb6", "#d37295"];

  // One chart per figure; `limit` draws a second, dashed line per pod.
  const CHARTS = [
    { key: "rps", title: "Requests/s via Ballast" },
    { key: "pod_rps", title: "Requests/s reported by pods (all clients)" },
    { key: "p99", title: "p99 latency (ms)" },
    { key: "err_s", title: "Errors/s" },
    { key: "in_flight", title: "In flight" },
    { key: "cpu_m", title: "CPU (millicores)" },
    { key: "mem", title: "Memory (MiB), limit dashed", scale: 1 / MIB, limit: "mem_limit" },
  ];

  const state = {
    lastT: 0,
    colors: new Map(), // pod → color, the same in every chart
    traces: new Map(), // chart key → [{pod, field}] in trace order
    drawn: false,
    frame: null, // the newest frame, which the table and the controls show
    socket: null,
    retryMs: 1000,
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
    const fg = cssVar("--fg");
    const line = cssVar("--line");
    const axis = { gridcolor: line, linecolor: line, zerolinecolor: line, color: cssVar("--muted") };
    return {
      paper_bgcolor: cssVar("--card"),
      plot_bgcolor: cssVar("--card"),
      font: { color: fg, size: 11 },
      // Time of day only: the date would need a second label line under the axis.
      xaxis: Object.assign({ type: "date", tickformat: "%H:%M:%S" }, axis),
      yaxis: Object.assign({ rangemode: "tozero" }, axis),
    };
  }
  function baseLayout(chart) {
    const layout = themeLayout();
    layout.title = { text: chart.title, x: 0.01, xanchor: "left", font: { size: 13 } };
    layout.margin = { l: 48, r: 8, t: 30, b: 28 };
    layout.showlegend = false;
    layout.hovermode = "x unified";
    return layout;
  }
  function retheme() {
    if (!state.drawn) return;
    const theme = themeLayout();
    const update = { paper_bgcolor: theme.paper_bgcolor, plot_bgcolor: theme.plot_bgcolor,
                     "font.color": theme.font.color };
    for (const axis of ["xaxis", "yaxis"]) {
      for (const prop of ["gridcolor", "linecolor", "zerolinecolor", "color"]) {
        update[axis + "." + prop] = theme[axis][prop];
      }
    }
    for (const chart of CHARTS) Plotly.relayout(chartDiv(chart), update);
  }

  function colorOf(pod) {
    if (!state.colors.has(pod)) {
      state.colors.set(pod, PALETTE[state.colors.size % PALETTE.length]);
    }
    return state.colors.get(pod);
  }

  // ---- charts -----------------------------------------------------------------------

  function chartDiv(chart) {
    return document.getElementById("chart-" + chart.key);
  }

  function value(pod, field, scale) {
    const v = pod ? pod[field] : null;
    return v == null ? null : scale ? v * scale : v;
  }

  function traceFor(chart, pod, field) {
    const limit = field !== chart.key;
    return {
      type: "scatter",
      mode: "lines",
      name: limit ? pod + " limit" : pod,
      legendgroup: pod,
      x: [],
      y: [],
      line: { color: colorOf(pod), width: limit ? 1 : 1.6, dash: limit ? "dash" : "solid" },
      hovertemplate: "%{y:.3~f}",
    };
  }

  // The pods of `frames` not charted yet, in order of appearance.
  function newPods(frames) {
    const known = new Set((state.traces.get(CHARTS[0].key) || []).map((t) => t.pod));
    const fresh = [];
    for (const frame of frames) {
      for (const p of frame.pods) {
        if (!known.has(p.pod)) {
          known.add(p.pod);
          fresh.push(p.pod);
        }
      }
    }
    return fresh;
  }

  // Each frame gives every trace one point: null where the pod is absent (a gap).
  function points(chart, frames) {
    const slots = state.traces.get(chart.key);
    const x = slots.map(() => []);
    const y = slots.map(() => []);
    for (const frame of frames) {
      const when = new Date(frame.t);
      const byPod = new Map(frame.pods.map((p) => [p.pod, p]));
      slots.forEach((slot, i) => {
        x[i].push(when);
        y[i].push(value(byPod.get(slot.pod), slot.field, chart.scale));
      });
    }
    return { x, y };
  }

  function addPods(pods) {
    for (const chart of CHARTS) {
      const slots = state.traces.get(chart.key) || [];
      const added = [];
      for (const pod of pods) {
        for (const field of chart.limit ? [chart.key, chart.limit] : [chart.key]) {
          slots.push({ pod, field });
          added.push(traceFor(chart, pod, field));
        }
      }
      state.traces.set(chart.key, slots);
      if (state.drawn && added.length) Plotly.addTraces(chartDiv(chart), added);
      if (!state.drawn) chart.pending = (chart.pending || []).concat(added);
    }
  }

  function drawFirst(frames) {
    addPods(newPods(frames));
    for (const chart of CHARTS) {
      const traces = chart.pending || [];
      const { x, y } = points(chart, frames);
      traces.forEach((trace, i) => {
        trace.x = x[i];
        trace.y = y[i];
      });
      Plotly.newPlot(chartDiv(chart), traces, baseLayout(chart), {
        displaylogo: false,
        responsive: true,
        modeBarButtonsToRemove: ["lasso2d", "select2d"],
      });
      chart.pending = null;
    }
    state.drawn = true;
  }

  // Extend, don't redraw: one call per chart, the oldest points beyond the window dropped.
  function extend(frames) {
    addPods(newPods(frames));
    for (const chart of CHARTS) {
      const slots = state.traces.get(chart.key);
      if (!slots.length) continue;
      const { x, y } = points(chart, frames);
      Plotly.extendTraces(chartDiv(chart), { x, y }, slots.map((_, i) => i), page.max_points);
    }
  }

  // ---- table, badges and totals -----------------------------------------------------

  // The table is updated in place, row by row and cell by cell: a frame never replaces
  // the slider an operator is dragging or the number they are typing.
  const COLUMNS = [
    (p) => [p.pod, "text"],
    (p) => [p.state || p.phase || dash,
            "text " + (p.state === "READY" ? "state-READY" : "state-other")],
    null, // the weight and the override marker: renderWeightCell
    (p, f) => [pct(p.state === "READY" && f.readyWeight > 0 ? weightNow(p) / f.readyWeight : null)],
    (p, f) => [pct(p.rps != null && f.totalRps > 0 ? p.rps / f.totalRps : null)],
    (p) => [num(p.rps, 1)],
    (p) => [num(p.pod_rps, 1)],
    (p) => [num(p.p50, 1) + " / " + num(p.p99, 1)],
    (p) => [num(p.err_s, 2), p.err_s > 0 ? "err" : ""],
    (p) => [p.cpu_m == null ? dash : String(p.cpu_m)],
    (p) => [mib(p.mem) + " / " + mib(p.mem_limit) + " MiB"],
    (p) => [p.restarts == null ? dash : String(p.restarts)],
    (p) => [p.last_reason || dash, "text" + (p.last_reason === "OOMKilled" ? " oom" : "")],
    // `started` is unix ms; measured against the frame's time, so it moves with each frame.
    (p, f) => [p.started == null ? dash : duration((f.t - p.started) / 1000)],
  ];
  const WEIGHT_COLUMN = 2;
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
    cells[0].style.borderLeft = "4px solid " + colorOf(pod);
    const entry = { row, cells, controls: null };
    if (page.can_act) {
      const td = row.appendChild(document.createElement("td"));
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

  function renderTable(frame) {
    const ready = frame.pods.filter((p) => p.state === "READY");
    const figures = {
      t: frame.t,
      readyWeight: ready.reduce((sum, p) => sum + weightNow(p), 0),
      totalRps: frame.pods.reduce((sum, p) => sum + (p.rps || 0), 0),
    };
    const body = document.querySelector("#pods tbody");
    const present = new Set(frame.pods.map((p) => p.pod));
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
      renderWeightCell(entry.cells[WEIGHT_COLUMN], p);
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
  });

  // An imbalance badge, worded as on the overview: "via Ballast: balanced, max/mean 1.04,
  // CV 0.03" or, flagged, "pods report: imbalanced, busiest 2.10× mean, CV 0.52".
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
  }

  function renderBadges(frame) {
    renderImbalance("imbalance", "via Ballast", frame.imbalance, true);
    // The skew the pods report: all clients, not weight-normalised (frames.py says why).
    renderImbalance("pod-imbalance", "pods report", frame.pod_imbalance || {},
                    frame.totals.pod_rps != null);
    renderReplicas(frame.replicas);
    controls.renderPolicy(frame.policy);
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
      ["req/s at pods", num(t.pod_rps, 1)],
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
    if (state.drawn) extend(fresh);
    else drawFirst(fresh);
    const latest = fresh[fresh.length - 1];
    state.frame = latest;
    renderTable(latest);
    renderBadges(latest);
    renderTotals(latest);
  }

  function status(text, bad) {
    const el = document.getElementById("status");
    el.className = bad ? "bad" : "muted";
    el.replaceChildren(text);
    return el;
  }

  function expired() {
    const el = status("session expired — ", true);
    const link = document.createElement("a");
    link.href = page.login_url;
    link.textContent = "log in again";
    el.append(link);
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    // The server sends the frames after `since` first (the last 15 minutes on the first
    // connection, the gap on a reconnection), then each live frame.
    const url = scheme + location.host + page.ws_path + "?since=" + state.lastT;
    const socket = new WebSocket(url);
    state.socket = socket;
    socket.onopen = () => {
      state.retryMs = 1000;
      status("live");
    };
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "service.backfill") {
        apply(message.frames);
        if (!state.drawn) status("live — waiting for the first frame…");
      } else if (message.type === "service.frame") {
        apply([message]);
      }
    };
    socket.onclose = (event) => {
      if (event.code === CLOSE_UNAUTHENTICATED) return expired();
      if (event.code === CLOSE_UNKNOWN_SERVICE) return status("this service is no longer configured", true);
      // Backoff with jitter, up to 30 s, so a restarted dashboard is not stampeded.
      const delay = state.retryMs * (0.5 + Math.random() / 2);
      state.retryMs = Math.min(state.retryMs * 2, 30000);
      status("disconnected — reconnecting in " + Math.ceil(delay / 1000) + " s", true);
      setTimeout(connect, delay);
    };
  }


  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", retheme);
  controls.start();
  connect();
})();
