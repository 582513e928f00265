"""Retries: the policy's arithmetic, the budget, and the counters (no I/O, no grpc calls).

The embedded proxy asks `Retrier.decide` after an attempt failed and before
anything of it went back to the client; the answer is `RETRY`, or why not.
What is safe to retry is decided here, in one place:

- the code is one the policy retries (`retry_on`, default UNAVAILABLE), and
  attempts are left (`max_attempts`, default 2: one retry);
- the request messages are still held (a unary request, or a stream's
  messages so far, within `buffer_bytes`, 256 KiB as gRPC's per-call buffer);
- the endpoint never saw the call (`never_reached`: refused, reset before any
  response header, no stream) — or the method is declared idempotent;
- the caller's deadline leaves room for the backoff and a try;
- the budget allows it (Linkerd's: retries at most `budget_percent` of the
  calls plus `budget_min_per_s` per second, over `budget_window_s`).

Backoff is gRPC's (A6, with A44's xDS numbers): before retry n, a delay drawn
uniformly from [0, min(initial × multiplier^(n−1), max)).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import grpc

# gRPC's largest maxAttempts (A6): more is treated as 5.
MAX_ATTEMPTS_CAP = 5
# gRPC's per-call retry buffer (grpc.per_rpc_retry_buffer_size): past it, no retry.
DEFAULT_BUFFER_BYTES = 256 * 1024
_STATUS_NAMES = frozenset(code.name for code in grpc.StatusCode)
_METHOD = re.compile(r"^/[^/]+/([^/]+|\*)$")

# What Core says when a call failed on the transport before any response header:
# the endpoint's application never answered (refused, reset, closed, no stream).
_NEVER_REACHED = re.compile(
    r"failed to connect|connection refused|connection reset|socket closed|broken pipe"
    r"|stream removed|refused_stream|refused stream|goaway|connection attempt timed out"
    r"|endpoint closing|connection closed|transport closed|no subchannel",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class RetryPolicy:
    """A cluster's (or a route's) retry policy.

    `max_attempts` 1 turns retries off. `per_try_timeout_s` None: each try may
    take what is left of the caller's deadline. `idempotent_methods`:
    `/pkg.Service/Method` or `/pkg.Service/*`; their calls are retried even
    when the endpoint saw them (it answered with a retried code).
    """

    retry_on: frozenset[str] = frozenset({"UNAVAILABLE"})
    max_attempts: int = 2
    per_try_timeout_s: float | None = None
    # gRPC A44's xDS defaults (Envoy's): 25 ms, up to 10 × that; A6's doubling.
    initial_backoff_s: float = 0.025
    max_backoff_s: float = 0.25
    backoff_multiplier: float = 2.0
    idempotent_methods: frozenset[str] = frozenset()
    buffer_bytes: int = DEFAULT_BUFFER_BYTES
    # Linkerd's budget: 20 % of calls plus 10 retries a second, over 10 s.
    budget_percent: float = 20.0
    budget_min_per_s: float = 10.0
    budget_window_s: float = 10.0

    def __post_init__(self) -> None:
        if unknown := sorted(self.retry_on - _STATUS_NAMES):
            raise ValueError(f"retry_on: unknown status code(s) {', '.join(unknown)}")
        if "OK" in self.retry_on:
            raise ValueError("retry_on: OK is a success, not something to retry")
        if not 1 <= self.max_attempts <= MAX_ATTEMPTS_CAP:
            raise ValueError(
                f"max_attempts must be between 1 (no retries) and {MAX_ATTEMPTS_CAP} (gRPC's"
                f" largest), got {self.max_attempts}"
            )
        if self.per_try_timeout_s is not None:
            _positive("per_try_timeout_s", self.per_try_timeout_s)
        _positive("initial_backoff_s", self.initial_backoff_s)
        _positive("max_backoff_s", self.max_backoff_s)
        if self.max_backoff_s < self.initial_backoff_s:
            raise ValueError("max_backoff_s must be at least initial_backoff_s")
        if not (math.isfinite(self.backoff_multiplier) and self.backoff_multiplier >= 1):
            raise ValueError(
                f"backoff_multiplier must be at least 1, got {self.backoff_multiplier}"
            )
        for method in self.idempotent_methods:
            if not _METHOD.match(method):
                raise ValueError(
                    f"idempotent_methods: {method!r} is not /package.Service/Method"
                    " or /package.Service/*"
                )
        if not 0 <= self.buffer_bytes <= 2**31 - 1:
            raise ValueError(f"buffer_bytes must be between 0 and 2^31-1, got {self.buffer_bytes}")
        if not 0 <= self.budget_percent <= 100:
            raise ValueError(f"budget_percent must be between 0 and 100, got {self.budget_percent}")
        if not (math.isfinite(self.budget_min_per_s) and self.budget_min_per_s >= 0):
            raise ValueError(f"budget_min_per_s must be 0 or more, got {self.budget_min_per_s}")
        if not 1 <= self.budget_window_s <= 60:
            raise ValueError(
                f"budget_window_s must be between 1 and 60 seconds, got {self.budget_window_s}"
            )

    @property
    def enabled(self) -> bool:
        return self.max_attempts > 1 and bool(self.retry_on)

    def idempotent(self, method: str) -> bool:
        """True when `method` (`/pkg.Service/Method`) is declared idempotent."""
        if method in self.idempotent_methods:
            return True
        service = method[: method.rfind("/") + 1]
        return f"{service}*" in self.idempotent_methods

    def backoff_s(self, retry: int, rng: random.Random) -> float:
        """The delay before retry number `retry` (1 for the first): A6's full jitter."""
        ceiling = self.initial_backoff_s * self.backoff_multiplier ** (retry - 1)
        return rng.uniform(0, min(ceiling, self.max_backoff_s))


def _positive(name: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive number, got {value}")


def never_reached(code: grpc.StatusCode, details: str, got_headers: bool) -> bool:
    """True when a failed attempt never reached the endpoint's application.

    UNAVAILABLE without any response header, with Core's words for a transport
    failure (refused, reset, closed, refused stream, GOAWAY). An endpoint that
    answered UNAVAILABLE itself sends its own details (or headers) and is not this.
    """
    if code is not grpc.StatusCode.UNAVAILABLE or got_headers:
        return False
    return _NEVER_REACHED.search(details) is not None


class RetryBudget:
    """Linkerd's retry budget: retries ≤ percent × calls + min_per_s × window, over the window.

    Calls and retries are counted in one-second slots of a ring as long as the
    window, so memory is fixed whatever the rate. `clock` is the balancer's.
    """

    def __init__(self, policy: RetryPolicy, clock: Callable[[], float]) -> None:
        self._ratio = policy.budget_percent / 100
        self._reserve = policy.budget_min_per_s * policy.budget_window_s
        self._slots = max(1, math.ceil(policy.budget_window_s))
        self._calls = [0] * self._slots
        self._retries = [0] * self._slots
        self._current = -1  # the whole second the newest slot counts
        self._clock = clock

    def _advance(self) -> int:
        second = int(self._clock())
        if second != self._current:
            stale = min(self._slots, second - self._current) if self._current >= 0 else self._slots
            for k in range(stale):
                i = (second - k) % self._slots
                self._calls[i] = self._retries[i] = 0
            self._current = second
        return second % self._slots

    def deposit(self) -> None:
        """One call started (not a retry)."""
        self._calls[self._advance()] += 1

    def allows(self) -> bool:
        """True when one more retry fits; reads, takes nothing."""
        self._advance()
        return sum(self._retries) + 1 <= self._ratio * sum(self._calls) + self._reserve

    def withdraw(self) -> bool:
        """Takes one retry from the budget; False (and nothing taken) when it is spent."""
        if not self.allows():
            return False
        self._retries[self._current % self._slots] += 1
        return True


class RetryCounts:
    """Cumulative retry counters of one endpoint (the one whose failure was retried)."""

    __slots__ = ("budget_exhausted", "not_safe", "retries", "succeeded")

    def __init__(self) -> None:
        self.retries = 0  # failed tries on this endpoint that were tried again elsewhere
        self.succeeded = 0  # of those, calls that then ended OK
        self.budget_exhausted = 0  # failures that would have been retried: the budget was spent
        self.not_safe = 0  # failures with a retried code not retried: not safe (see module)

    def add(self, other: RetryCounts) -> None:
        self.retries += other.retries
        self.succeeded += other.succeeded
        self.budget_exhausted += other.budget_exhausted
        self.not_safe += other.not_safe


class Verdict(Enum):
    RETRY = "retry"
    NOT_RETRIED_CODE = "code not retried"
    NO_ATTEMPTS_LEFT = "no attempts left"
    NOT_SAFE = "not safe"
    NO_TIME = "deadline too close"
    BUDGET_EXHAUSTED = "budget exhausted"


@dataclass
class ClusterRetries:
    """A cluster's retry state: its policy, its budget, its cumulative counters.

    The counters outlive endpoints (a removed pod's retries stay in the cluster's sum).
    """

    policy: RetryPolicy
    budget: RetryBudget
    counts: RetryCounts = field(default_factory=RetryCounts)

    @classmethod
    def make(cls, policy: RetryPolicy, clock: Callable[[], float]) -> ClusterRetries:
        return cls(policy, RetryBudget(policy, clock))

    def exhausted_now(self) -> bool:
        """True while the budget would refuse the next retry."""
        return self.policy.enabled and not self.budget.allows()


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed try, as the proxy saw it before relaying anything of it."""

    code: grpc.StatusCode
    details: str
    got_headers: bool  # response headers (initial metadata) arrived from the endpoint
    held: bool  # the request messages are all still held (within buffer_bytes)
    per_try_timeout: bool = False  # ended by the policy's per-try timeout, not the caller's


class Retrier:
    """Decides retries for the calls of one method of one cluster, and counts them."""

    def __init__(
        self,
        retries: ClusterRetries,
        policy: RetryPolicy,
        method: str,
        rng: random.Random,
        *,
        budget: RetryBudget | None = None,
    ) -> None:
        """`budget`: a route's own; the cluster's by default."""
        self._cluster = retries
        self._budget = budget or retries.budget
        self.policy = policy
        self._idempotent = policy.idempotent(method)
        self._rng = rng
        self.enabled = policy.enabled

    def started(self) -> None:
        """A client's call started: a deposit in the budget."""
        if self.enabled:
            self._budget.deposit()

    def decide(
        self, failure: Failure, attempt: int, time_left_s: float | None, ep: RetryCounts
    ) -> tuple[Verdict, float]:
        """RETRY and the backoff to wait, or why not; counts on `ep` and the cluster."""
        policy = self.policy
        retried_code = failure.code.name in policy.retry_on or failure.per_try_timeout
        if not self.enabled or not retried_code:
            return Verdict.NOT_RETRIED_CODE, 0.0
        if attempt >= policy.max_attempts:
            return Verdict.NO_ATTEMPTS_LEFT, 0.0
        reached = not never_reached(failure.code, failure.details, failure.got_headers)
        if not failure.held or (reached and not self._idempotent):
            self._count(ep, "not_safe")
            return Verdict.NOT_SAFE, 0.0
        delay_s = policy.backoff_s(attempt, self._rng)
        if time_left_s is not None and time_left_s <= delay_s + _MIN_TRY_S:
            return Verdict.NO_TIME, 0.0
        if not self._budget.withdraw():
            self._count(ep, "budget_exhausted")
            return Verdict.BUDGET_EXHAUSTED, 0.0
        self._count(ep, "retries")
        return Verdict.RETRY, delay_s

    def succeeded(self, eps: list[RetryCounts]) -> None:
        """The call ended OK after its tries on `eps` failed and were retried."""
        for ep in eps:
            self._count(ep, "succeeded")

    def _count(self, ep: RetryCounts, name: str) -> None:
        for counts in (ep, self._cluster.counts):
            setattr(counts, name, getattr(counts, name) + 1)

    def try_timeout_s(self, time_left_s: float | None) -> tuple[float | None, bool]:
        """The timeout of one try, and whether it is the per-try timeout (not the caller's)."""
        per_try = self.policy.per_try_timeout_s if self.enabled else None
        if per_try is None:
            return time_left_s, False
        if time_left_s is not None and time_left_s <= per_try:
            return time_left_s, False
        return per_try, True


# A retry with less than this left of the caller's deadline would only fail later.
_MIN_TRY_S = 0.005
