"""Bounds on what the proxy holds: the budget of in-flight message bytes.

Every message the proxy has read from one side and not yet handed to the
other is held in this process (Core's buffer and a Python `bytes`). Without a
bound, a few callers with large messages take the process to gigabytes
(six 60 MiB callers: 1.2 GiB). The budget is global (one per process), so
calls that fit still pass while a burst of large ones is refused.
"""

from __future__ import annotations


class InFlightBytes:
    """A global budget of message bytes held by the proxy.

    `try_take(n)` reserves `n` bytes and returns True, or returns False (and
    counts a refusal) when that would pass `limit_bytes`; every successful
    take is matched by one `give_back(n)`. A message larger than the whole
    budget is refused even when nothing else is in flight.
    """

    __slots__ = ("in_flight_bytes", "limit_bytes", "refused")

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.in_flight_bytes = 0
        self.refused = 0

    def try_take(self, n_bytes: int) -> bool:
        if self.in_flight_bytes + n_bytes > self.limit_bytes:
            self.refused += 1
            return False
        self.in_flight_bytes += n_bytes
        return True

    def give_back(self, n_bytes: int) -> None:
        self.in_flight_bytes -= n_bytes

    def refusal(self, n_bytes: int) -> str:
        """The message a refused caller gets: what was full and which key raises it."""
        return (
            f"ballast: a message of {n_bytes} bytes does not fit Ballast's budget of in-flight"
            f" message bytes ({self.in_flight_bytes} of {self.limit_bytes} in use,"
            " balancer.max_in_flight_bytes); retry later, or raise the key if such load is expected"
        )
