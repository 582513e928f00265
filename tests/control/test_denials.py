"""The audit's budget of denied attempts per actor (`api.denials`), on a fake clock."""

from __future__ import annotations

import pytest

from dashboard.control.actions import Actor
from dashboard.control.api.denials import SUPPRESSED_ACTION, DenialLimiter, Verdict
from dashboard.control.models import AuditEvent

pytestmark = pytest.mark.django_db

VIEWER = Actor("viewer", source="api", token="abcd1234")


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def test_it_writes_a_row_per_denial_up_to_the_budget_then_counts_on_one() -> None:
    clock = Clock()
    limiter = DenialLimiter(per_window=3, window_s=60, clock=clock)
    for _ in range(10):
        limiter.audit(VIEWER, "set_weight", "inventory", "pod-a")
    rows = list(AuditEvent.objects.order_by("id"))
    assert [r.action for r in rows] == ["set_weight"] * 3 + [SUPPRESSED_ACTION]
    assert rows[-1].detail == (
        "7 more denied attempts by this actor within 60 s, not recorded one by one"
        " (at most 3 a window; the last: set_weight on inventory/pod-a)"
    )
    assert {r.result for r in rows} == {AuditEvent.Result.DENIED}


def test_it_gives_each_actor_a_fresh_budget_every_window() -> None:
    clock = Clock()
    limiter = DenialLimiter(per_window=2, window_s=60, clock=clock)
    verdicts = [limiter.verdict("viewer") for _ in range(4)]
    assert verdicts == [Verdict.WRITE, Verdict.WRITE, Verdict.SUMMARIZE, Verdict.SUMMARIZE]
    assert limiter.verdict("other") is Verdict.WRITE
    clock.now_s += 59.9
    assert limiter.verdict("viewer") is Verdict.SUMMARIZE
    clock.now_s += 0.1
    assert limiter.verdict("viewer") is Verdict.WRITE


def test_it_forgets_actors_it_has_not_heard_from(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("dashboard.control.api.denials.MAX_TRACKED_ACTORS", 4)
    clock = Clock()
    limiter = DenialLimiter(per_window=1, window_s=60, clock=clock)
    for i in range(4):
        limiter.verdict(f"user-{i}")
    clock.now_s += 61
    for i in range(100):
        limiter.verdict(f"new-{i}")
        assert limiter.tracked() <= 4


def test_it_starts_a_new_summary_row_when_the_last_one_is_gone() -> None:
    limiter = DenialLimiter(per_window=1, window_s=60, clock=Clock())
    for _ in range(3):
        limiter.audit(VIEWER, "drain", "inventory", "pod-a")
    AuditEvent.objects.all().delete()  # pruned, or a flushed test database
    limiter.audit(VIEWER, "drain", "inventory", "pod-a")
    [summary] = AuditEvent.objects.all()
    assert summary.action == SUPPRESSED_ACTION
    assert summary.detail.startswith("3 more denied attempts")
