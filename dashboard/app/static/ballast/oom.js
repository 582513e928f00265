// The service page's predicted time to OOM: per pod, from the frame's `oom_s` (the
// collector's memory trend, collector/memory.py), a note in the memory cell
// ("OOM in ~3 min"). Plain script, no build step; service.js calls render per row.
"use strict";

(function () {
  const HORIZON_S = 3600; // further out than this a trend says little: no note

  // "~45 s", "~3 min", "~2 h".
  function inWords(seconds) {
    if (seconds < 90) return "~" + Math.max(0, Math.round(seconds)) + " s";
    if (seconds < 90 * 60) return "~" + Math.round(seconds / 60) + " min";
    return "~" + Math.round(seconds / 3600) + " h";
  }

  // The note rides on a data attribute (drawn by service.css), so the cell's own text,
  // which service.js keeps, is never touched.
  function render(td, p) {
    const soon = p.oom_s != null && p.oom_s <= HORIZON_S;
    const note = soon ? "OOM in " + inWords(p.oom_s) : "";
    if ((td.dataset.oom || "") === note) return;
    if (note) {
      td.dataset.oom = note;
      td.title = "working set growing: at this rate it meets its limit in " + inWords(p.oom_s);
    } else {
      delete td.dataset.oom;
      td.removeAttribute("title");
    }
  }

  window.ballastOom = { render, inWords };
})();
