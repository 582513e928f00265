"""Refused attempts to act, written to the audit log at a bounded rate per actor.

A viewer (or a leaked viewer token) that retries an act in a loop must not fill the
database: each actor gets at most `DENIALS_PER_WINDOW` "denied" rows a `WINDOW_S`;
past that, one row of the window counts the attempts not written one by one, and is
updated in place as more come. The count is kept in this process's memory: with
several dashboard processes each has its own budget (still a bounded number of rows).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from dashboard.control import actions
from dashboard.control.actions import Actor
from dashboard.control.models import AuditEvent

DENIALS_PER_WINDOW = 10
WINDOW_S = 60.0
SUPPRESSED_ACTION = "denials_suppressed"
# Past this many actors, the windows of those not heard from for a window are forgotten.
MAX_TRACKED_ACTORS = 1024


class Verdict(Enum):
    WRITE = "write"  # within the budget: a row of its own
    SUMMARIZE = "summarize"  # past the budget: counted on the window's summary row


@dataclass
class _Window:
    started_s: float
    seen: int = 0
    summary: AuditEvent | None = None


class DenialLimiter:
    """Decides, per actor, whether a denied attempt gets its own audit row.

    `clock` returns monotonic seconds (a fake in tests). Not thread-safe: callers
    hold `base.ACTING`, which they hold to write the row anyway.
    """

    def __init__(
        self,
        per_window: int = DENIALS_PER_WINDOW,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_window = per_window
        self.window_s = window_s
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def reset(self) -> None:
        """Forgets every window: each actor's budget is whole again."""
        self._windows.clear()

    def tracked(self) -> int:
        """How many actors' windows are held (bounded by `MAX_TRACKED_ACTORS`)."""
        return len(self._windows)

    def verdict(self, actor: str) -> Verdict:
        """Counts one attempt by `actor` and says how to audit it."""
        window = self._window(actor)
        window.seen += 1
        return Verdict.WRITE if window.seen <= self.per_window else Verdict.SUMMARIZE

    def audit(self, actor: Actor, action: str, service: str, target: str) -> AuditEvent:
        """Writes the denied attempt, or counts it on the window's summary row (made
        by the first attempt past the budget, updated in place by the later ones)."""
        if self.verdict(actor.name) is Verdict.WRITE:
            return actions.deny(actor, action, service, target)
        window = self._window(actor.name)
        suppressed = window.seen - self.per_window
        detail = (
            f"{suppressed} more denied attempt{'s' if suppressed > 1 else ''} by this actor"
            f" within {self.window_s:g} s, not recorded one by one (at most"
            f" {self.per_window} a window; the last: {action} on {service}/{target})"
        )
        summary = window.summary
        # The row may be gone (the log pruned, a test's database flushed): start anew.
        if summary is None or not AuditEvent.objects.filter(pk=summary.pk).update(detail=detail):
            summary = window.summary = actions.deny(actor, SUPPRESSED_ACTION, service, target)
            AuditEvent.objects.filter(pk=summary.pk).update(detail=detail)
        summary.detail = detail
        return summary

    def _window(self, actor: str) -> _Window:
        """The actor's current window; a new one when the last is over."""
        now = self._clock()
        current = self._windows.get(actor)
        if current is None or now - current.started_s >= self.window_s:
            if current is None and len(self._windows) >= MAX_TRACKED_ACTORS:
                self._forget_before(now - self.window_s)
            current = self._windows[actor] = _Window(started_s=now)
        return current

    def _forget_before(self, cutoff_s: float) -> None:
        stale = [name for name, w in self._windows.items() if w.started_s <= cutoff_s]
        for name in stale or list(self._windows):  # all still fresh: start over, bounded
            del self._windows[name]
