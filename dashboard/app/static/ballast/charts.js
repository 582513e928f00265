// The service page's charts (service.js creates them with `ballastCharts(page, hooks)`):
// eight per-pod line charts, errors by status code, calls by method and the latency per
// pod; one legend for all of them, rates smoothed unless the raw view is on, and event
// markers from the audit and the pods' restarts. Plain script, no build step.
//
// Light on the browser: `show(frames)` is called at most once per animation frame; each
// chart is extended in place (extendTraces) and redrawn whole (react) only when its set
// of lines changes; charts out of view wait until they are scrolled to; plotly.js itself
// runs only once the page is up. `hooks` tells the page when the session has expired
// (`expired()`) and gives it a status line (`status(text, bad)`).
window.ballastCharts = function (page, hooks) {
  "use strict";

  const MIB = 1024 * 1024;
  const PALETTE = page.palette;
  // Rates are averaged over this many frames (5 s at the default interval) unless the
  // operator asks for the raw per-second figures: those swing widely during a rollout.
  const SMOOTH_FRAMES = 5;
  // The latency distribution adds up this many frames' buckets (a minute by default).
  const HISTOGRAM_FRAMES = 60;
  // Bar charts drawn from the newest frames are redrawn at most this often.
  const BARS_EVERY_MS = 5000;
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

  // What reached the pod without Ballast: the pod's own count minus what the proxy carried
  // and what proxyless clients, balanced by Ballast's xDS server, sent it.
  function bypass(p) {
    return p.pod_rps == null ? null : Math.max(0, p.pod_rps - (p.rps || 0) - (p.px_rps || 0));
  }
  // `px_rps` is only in a frame when above 0: a pod Ballast routes to has 0 without it.
  function proxyless(p) {
    return p.px_rps != null ? p.px_rps : p.state == null ? null : 0;
  }
  function mibOf(v) {
    return v == null ? null : v / MIB;
  }

  // One chart per figure; `limit` draws a second, dashed line per pod; `rate` ones are
  // smoothed unless the raw view is on.
  const CHARTS = [
    { key: "rps", title: "Requests/s via Ballast", rate: true, value: (p) => p.rps },
    { key: "px_rps", title: "Requests/s proxyless (xDS clients, straight to pods)", rate: true,
      value: proxyless },
    { key: "bypass", title: "Requests/s bypassing Ballast (L4)", rate: true, value: bypass },
    { key: "pod_rps", title: "Requests/s at pods (total)", rate: true, value: (p) => p.pod_rps },
    { key: "p99", title: "p99 latency via Ballast (ms)", value: (p) => p.p99 },
    { key: "err_s", title: "Errors/s via Ballast", rate: true, value: (p) => p.err_s },
    { key: "codes", title: "Errors/s via Ballast by gRPC status code", rate: true, codes: true },
    { key: "methods", title: "Requests/s at pods by method (all clients)", rate: true, methods: true },
    { key: "latency", title: "Latency per pod via Ballast (p50 · p90 · p99, ms)", latency: true },
    { key: "latency_dist", histogram: true,
      title: "Latency distribution per pod via Ballast (% of its calls, last " + HISTOGRAM_FRAMES +
             " frames)" },
    { key: "in_flight", title: "In flight via Ballast", value: (p) => p.in_flight },
    { key: "cpu_m", title: "CPU (millicores)", value: (p) => p.cpu_m },
    { key: "mem", title: "Memory (MiB), limit dashed", value: (p) => mibOf(p.mem),
      limit: (p) => mibOf(p.mem_limit) },
  ];

  const state = {
    frames: [], // the window the charts show, oldest first
    pods: [], // every pod in the window, in order of appearance: the charts' lines
    codes: [], // every error status code in the window (the errors-by-code chart's lines)
    retried: false, // a frame had retries: the errors chart has a "retried" line
    methods: [], // every method the pods reported calls of (the by-method chart's lines)
    lastSeen: new Map(), // pod → t of the newest frame it was in
    colors: new Map(), // pod → palette color, from its first frame
    hidden: new Set(), // pods hidden from the charts (legend)
    smooth: true,
    legendKey: "",
    events: [], // markers: {t, text, kind, label}
    restarts: new Map(), // pod → its restart count in the last frame
    auditTimer: null,
    stopped: false,
  };

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
    if (chart.latency || chart.histogram) {
      Object.assign(layout.xaxis, { type: "category", tickformat: "" });
      layout.barmode = "group";
      layout.hovermode = "closest";
      if (chart.histogram) histogramLayout(layout);
      return layout;
    }
    if (chart.codes || chart.methods) {
      // Status codes and methods are not pods: these charts name their lines themselves.
      layout.showlegend = true;
      // Between the title and the plot, where it covers neither.
      layout.margin.t = 48;
      layout.legend = { orientation: "h", x: 0, xanchor: "left", y: 1.01, yanchor: "bottom",
                        font: { size: 10 } };
      if (chart.codes && !state.codes.length && !state.retried) {
        layout.title.text += " — none";
        layout.xaxis.showticklabels = false; // no line, no time axis to read
        layout.annotations = [{ text: "no errors in the window", showarrow: false,
                                xref: "paper", yref: "paper", x: 0.5, y: 0.5,
                                font: { color: cssVar("--muted") } }];
        return layout;
      }
    }
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

  // A line of a chart: a pod's figure (and its limit), or, on the errors-by-code chart, a
  // status code's. `get(frame)` is undefined where the line has no point (a pod not in
  // the frame: its line ends there), null where the figure is unknown.
  function podSlot(pod, fn, limit) {
    return { key: pod, name: limit ? pod + " limit" : pod, pod, limit, color: colorOf(pod),
             get: (frame) => { const p = byPod(frame).get(pod); return p ? fn(p) : undefined; } };
  }
  // A line of the service's totals: `field` maps a key (a status code, a method) to a
  // rate; a key absent from a frame that has the field is at 0 there.
  function totalsSlot(field, key, name, color) {
    return { key, name, pod: null, limit: false, color,
             get: (frame) => (frame.totals[field] ? frame.totals[field][key] || 0 : undefined) };
  }
  // The proxy's retries/s on the errors chart (dashed): failures that did not reach the
  // caller because Ballast tried another pod. A line once a frame in the window had some.
  function retrySlots() {
    if (!state.retried) return [];
    return [{ key: "retries", name: "retried", pod: null, limit: false, dash: "dot",
              color: cssVar("--muted") || "#888",
              get: (frame) => (frame.totals ? frame.totals.retries_s || 0 : undefined) }];
  }
  // True when `frame` brings the first retries: the errors chart gains its line.
  function noteRetries(frame) {
    if (state.retried || !(frame.totals.retries_s > 0)) return false;
    state.retried = true;
    return true;
  }
  const CODE_COLORS = { UNAVAILABLE: "#e15759", DEADLINE_EXCEEDED: "#f28e2b",
                        RESOURCE_EXHAUSTED: "#b07aa1", INTERNAL: "#9c755f", UNKNOWN: "#bab0ac" };
  function codeColor(code) {
    return CODE_COLORS[code] || colorFrom({ pod: code });
  }

  function rawAt(slot, i) {
    const v = slot.get(state.frames[i]);
    return v === undefined ? undefined : v == null ? null : v;
  }

  function valueAt(chart, slot, i) {
    const v = rawAt(slot, i);
    if (v === undefined) return null;
    if (!chart.rate || !state.smooth) return v;
    let sum = 0;
    let n = 0;
    for (let j = i; j >= 0 && j > i - SMOOTH_FRAMES; j--) {
      const w = rawAt(slot, j);
      if (w != null) {
        sum += w;
        n += 1;
      }
    }
    return n ? sum / n : null;
  }

  function slotsOf(chart) {
    if (chart.codes) {
      return state.codes.map((c) => totalsSlot("err_by_code", c, c, codeColor(c)))
        .concat(retrySlots());
    }
    if (chart.methods) {
      // "ballast.demo.v1.Inventory/GetItem" → "Inventory/GetItem": the package is the same.
      const short = (m) => m.replace(/^.*\.(?=[^./]+\/)/, "");
      return state.methods.map((m) => totalsSlot("rps_by_method", m, short(m), colorFrom({ pod: m })));
    }
    const slots = [];
    for (const pod of state.pods) {
      slots.push(podSlot(pod, chart.value, false));
      if (chart.limit) slots.push(podSlot(pod, chart.limit, true));
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
        y[k].push(valueAt(chart, slot, i));
      });
    }
    return { slots, x, y };
  }

  function fullTraces(chart) {
    if (chart.latency) return latencyTraces();
    if (chart.histogram) return histogramTraces();
    const { slots, x, y } = series(chart, 0);
    return slots.map((slot, k) => ({
      type: "scatter",
      mode: "lines",
      name: slot.name,
      x: x[k],
      y: y[k],
      visible: !state.hidden.has(slot.pod),
      line: { color: slot.color, width: slot.limit ? 1 : 1.6,
              dash: slot.dash || (slot.limit ? "dash" : "solid") },
      hovertemplate: "%{y:.3~f}",
    }));
  }

  // The latency distribution per pod, from the newest frame: p50, p90 and p99 side by
  // side, each pod in its color (lighter for the lower quantiles).
  const QUANTILES = [["p50", 0.4], ["p90", 0.7], ["p99", 1]];
  function latencyTraces() {
    const frame = state.frames[state.frames.length - 1];
    const pods = frame.pods.filter((p) => p.p50 != null && !state.hidden.has(p.pod));
    return QUANTILES.map(([q, opacity]) => ({
      type: "bar",
      name: q,
      x: pods.map((p) => p.pod),
      y: pods.map((p) => p[q]),
      marker: { color: pods.map((p) => colorOf(p.pod)), opacity },
      hovertemplate: q + " %{y:.1f} ms<extra>%{x}</extra>",
    }));
  }

  // The latency distribution per pod: each pod's calls per latency bucket (the frames'
  // `lat`, counted against `lat_bounds_ms`) added up over the last HISTOGRAM_FRAMES
  // frames, as the share of the pod's calls in each bucket; bars in the pod's color,
  // grouped per bucket, from the fastest bucket to the slowest one any shown pod used.
  function latencyBuckets() {
    const recent = state.frames.slice(-HISTOGRAM_FRAMES);
    const withBounds = recent.filter((f) => f.lat_bounds_ms);
    if (!withBounds.length) return { bounds: [], sums: new Map() };
    const bounds = withBounds[withBounds.length - 1].lat_bounds_ms;
    const sums = new Map(); // pod → calls per bucket
    for (const frame of withBounds) {
      if (frame.lat_bounds_ms.length !== bounds.length) continue; // other bounds: not comparable
      for (const p of frame.pods) {
        if (!p.lat) continue;
        if (!sums.has(p.pod)) sums.set(p.pod, new Array(bounds.length + 1).fill(0));
        const acc = sums.get(p.pod);
        p.lat.forEach((n, i) => { acc[i] += n; });
      }
    }
    return { bounds, sums };
  }

  // "≤7.5" (ms), "≤2.5s", ">60s": short enough to stand side by side under the bars.
  function bucketLabel(bounds, i) {
    const short = (v) => (v >= 1000 ? v / 1000 + "s" : String(v));
    return i < bounds.length ? "≤" + short(bounds[i]) : ">" + short(bounds[bounds.length - 1]);
  }

  function histogramTraces() {
    const { bounds, sums } = latencyBuckets();
    let lo = Infinity;
    let hi = -1;
    for (const [pod, acc] of sums) {
      if (state.hidden.has(pod)) continue;
      acc.forEach((n, i) => {
        if (n > 0) {
          lo = Math.min(lo, i);
          hi = Math.max(hi, i);
        }
      });
    }
    if (hi < 0) return [];
    const labels = [];
    for (let i = lo; i <= hi; i++) labels.push(bucketLabel(bounds, i));
    return state.pods.filter((pod) => sums.has(pod)).map((pod) => {
      const counts = sums.get(pod).slice(lo, hi + 1);
      const total = sums.get(pod).reduce((a, b) => a + b, 0);
      return {
        type: "bar",
        name: pod,
        x: labels,
        y: counts.map((n) => (total ? (100 * n) / total : 0)),
        customdata: counts,
        visible: !state.hidden.has(pod),
        marker: { color: colorOf(pod) },
        hovertemplate: "%{x}: %{y:.1f} % (%{customdata} calls)<extra>" + pod + "</extra>",
      };
    });
  }

  function histogramLayout(layout) {
    layout.bargap = 0.2;
    layout.yaxis.ticksuffix = " %";
    layout.xaxis.tickfont = { size: 10 };
    layout.xaxis.title = { text: "latency, ms (each bucket's upper bound)", font: { size: 10 },
                           standoff: 4 };
    layout.margin.b = 40;
    const shown = (layout.annotations = []);
    if (histogramTraces().length) return;
    layout.xaxis.showticklabels = false;
    shown.push({ text: "no calls via Ballast in the last " + HISTOGRAM_FRAMES + " frames",
                 showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5,
                 font: { color: cssVar("--muted") } });
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
    if (chart.latency || chart.histogram) {
      // A new bar chart from the newest frames: every 5 s is enough to read it.
      if (chart.full || !chart.drawn || Date.now() - (chart.drawnMs || 0) >= BARS_EVERY_MS) {
        chart.drawnMs = Date.now();
        redraw(chart);
      }
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
      changed = noteRetries(frame) || changed;
      for (const code of Object.keys(frame.totals.err_by_code || {})) {
        if (!state.codes.includes(code)) {
          state.codes.push(code);
          changed = true;
        }
      }
      for (const method of Object.keys(frame.totals.rps_by_method || {})) {
        if (!state.methods.includes(method)) {
          state.methods.push(method);
          changed = true;
        }
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

  // Takes `fresh` frames into the window and draws them.
  function show(fresh) {
    notePodEvents(fresh);
    const changed = take(fresh);
    const from = Math.max(0, state.frames.length - fresh.length);
    for (const chart of CHARTS) {
      if (changed || fresh.length >= state.frames.length) chart.full = true;
      draw(chart, from);
    }
    renderLegend(fresh[fresh.length - 1]);
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
    if (state.frames.length) renderLegend(state.frames[state.frames.length - 1]);
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
    auto_weight: "auto weight", set_automation: "automation",
    pause_automation: "automation paused", resume_automation: "automation resumed",
    oom_guard: "OOM guard",
  };

  // The events in the window, those within MERGE_MS of each other as one marker
  // ("drain · undrain"), the newest 20.
  const MERGE_MS = 5000;
  function markersInWindow() {
    if (!state.frames.length) return [];
    const oldest = state.frames[0].t;
    const merged = [];
    for (const e of state.events.filter((e) => e.t >= oldest)) {
      const last = merged[merged.length - 1];
      if (last && e.t - last.t < MERGE_MS) {
        if (!last.label.split(" · ").includes(e.label)) last.label += " · " + e.label;
        last.text += "; " + e.text;
        if (e.kind === "bad") last.kind = "bad";
      } else {
        merged.push(Object.assign({}, e));
      }
    }
    return merged.slice(-20);
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

  async function loadAuditEvents() {
    if (state.stopped) return;
    const url = page.audit_api + "?service=" + encodeURIComponent(page.service);
    let response;
    try {
      response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    } catch (err) {
      return;
    }
    if (response.status === 401) return hooks.expired();
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

  // plotly.js (its basic bundle, 1.2 MB) runs once the page is up: the table, badges and
  // totals show from the first frames while it loads, and the charts draw as soon as it has.
  function loadPlotly() {
    const script = document.createElement("script");
    script.src = page.plotly_url;
    script.addEventListener("load", redrawAll);
    script.addEventListener("error", () => {
      hooks.status("the charts' script did not load — reload the page", true);
    });
    document.head.appendChild(script);
  }

  function start() {
    window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", redrawAll);
    document.getElementById("legend").addEventListener("click", onLegendClick);
    document.getElementById("smooth").addEventListener("click", onSmoothClick);
    observeCharts();
    loadPlotly();
    loadAuditEvents();
    state.auditTimer = setInterval(loadAuditEvents, 10000);
  }

  // The session expired: no more audit requests.
  function stop() {
    state.stopped = true;
    clearInterval(state.auditTimer);
  }

  return { start, stop, show, colorOf, byPod, bypass, proxyless };
};
