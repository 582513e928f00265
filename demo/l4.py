"""An L4 "Service" that balances like kube-proxy: one pick per TCP connection.

kube-proxy (iptables mode) DNATs the first packet of a connection to a ready
pod chosen uniformly at random, and conntrack keeps every later packet of that
connection on the same pod. `L4Service` does the same in user space: on each
accepted connection it picks a ready backend at random, connects to it and
splices bytes both ways until the connection ends. Nothing looks inside the
bytes, so gRPC clients behind it stay pinned to one pod for the life of their
HTTP/2 connection, and pods that become ready late (the last ones of a
rollout) only get connections opened after that — the imbalance Ballast
exists to fix appears by itself.

Behaviours copied from kube-proxy, on purpose:

- **No retry on connect failure.** iptables mode picks once; when the pod is
  gone the connection just fails (the client sees a reset and reconnects,
  through a new pick). We close the client connection the same way, and count
  the failure on that backend.
- **Removal keeps connections.** A backend that leaves the ready set (removed,
  or `ready=False`) gets no new connections; the ones it has stay open until
  an end closes them, as conntrack entries do.
- **No ready backend, no connection.** kube-proxy rejects connections to a
  Service without endpoints; we close them at once (counted as refused).
- **TCP semantics pass through.** An end that finishes sending (FIN) is
  half-closed on the other side (write_eof), and the connection is over when
  both directions are; a reset or error on either side aborts both at once.
  A gRPC peer closes its own side when it reads EOF, so a client that closes
  its channel closes the pod's connection, and a pod that dies closes the
  client's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterable, Callable, Iterable
from dataclasses import dataclass

from balancer.discovery import Add, Remove, Reset, Update
from balancer.endpoint import Address

log = logging.getLogger(__name__)

# Bytes asked of the socket per read. Large reads mean few loop iterations per
# message: a 1 MiB gRPC message crosses in a handful of reads, not hundreds.
READ_CHUNK_BYTES = 256 * 1024
# StreamReader pauses the socket when it buffers more than twice this.
READER_LIMIT_BYTES = 1024 * 1024
# `drain()` blocks above this much unsent data (asyncio's default is 64 KiB).
WRITE_HIGH_WATER_BYTES = 1024 * 1024
DEFAULT_CONNECT_TIMEOUT_S = 3.0
# How long start() waits for the first discovery update (the Reset).
DEFAULT_FIRST_UPDATE_TIMEOUT_S = 10.0

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass(frozen=True)
class BackendSnapshot:
    """One backend's counters. Bytes are counted as they are forwarded."""

    endpoint_id: str
    target: str
    # In the ready set: new connections may be sent to it.
    ready: bool
    open_connections: int
    total_connections: int
    # Connections picked for it that could not reach it (closed on the client).
    connect_failures: int
    bytes_to_backend: int
    bytes_to_client: int


@dataclass(frozen=True)
class L4Snapshot:
    """Every known backend, by endpoint id; a removed one stays while it has connections."""

    address: str
    backends: tuple[BackendSnapshot, ...]
    # Connections closed at once because no backend was ready.
    refused_connections: int

    def by_id(self) -> dict[str, BackendSnapshot]:
        return {b.endpoint_id: b for b in self.backends}

    def open_by_backend(self) -> dict[str, int]:
        """Open connections per endpoint id, zeros included."""
        return {b.endpoint_id: b.open_connections for b in self.backends}

    @property
    def open_connections(self) -> int:
        return sum(b.open_connections for b in self.backends)

    @property
    def ready_ids(self) -> tuple[str, ...]:
        return tuple(b.endpoint_id for b in self.backends if b.ready)


class _Backend:
    """Membership and counters of one endpoint id; mutated only on the event loop."""

    def __init__(self, address: Address) -> None:
        self.address = address
        self.ready = address.ready
        self.removed = False
        self.open_connections = 0
        self.total_connections = 0
        self.connect_failures = 0
        self.bytes_to_backend = 0
        self.bytes_to_client = 0

    def snapshot(self) -> BackendSnapshot:
        return BackendSnapshot(
            endpoint_id=self.address.endpoint_id,
            target=self.address.target,
            ready=self.ready,
            open_connections=self.open_connections,
            total_connections=self.total_connections,
            connect_failures=self.connect_failures,
            bytes_to_backend=self.bytes_to_backend,
            bytes_to_client=self.bytes_to_client,
        )


class L4Service:
    """A kube-proxy-like TCP forwarder. Embeddable: `await start()`, then `await stop()`.

    `backends` is either a fixed list of addresses, or an async iterable of
    discovery updates (`Reset | Add | Remove`, as `Platform.watch_endpoints`
    yields) consumed in a task until `stop()`. `apply()` takes updates directly.
    `rng` makes the per-connection choice reproducible.
    """

    def __init__(
        self,
        backends: Iterable[Address] | AsyncIterable[Update],
        *,
        rng: random.Random | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        first_update_timeout_s: float = DEFAULT_FIRST_UPDATE_TIMEOUT_S,
    ) -> None:
        self._rng = rng or random.Random()
        self._host = host
        self._port = port
        self._connect_timeout_s = connect_timeout_s
        self._first_update_timeout_s = first_update_timeout_s
        self._backends: dict[str, _Backend] = {}
        # Ready ids, sorted, so a seeded rng picks the same way whatever the update order.
        self._ready_ids: tuple[str, ...] = ()
        self._refused = 0
        self._updates: AsyncIterable[Update] | None = None
        self._first_update = asyncio.Event()
        self._watch_task: asyncio.Task[None] | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[object]] = set()
        self._stopping = False
        if isinstance(backends, AsyncIterable):
            self._updates = backends
        else:
            self.apply(Reset(tuple(backends)))

    @property
    def address(self) -> str:
        """`host:port` it listens on; valid after start()."""
        if self._server is None:
            raise RuntimeError("L4Service is not started")
        host, port = self._server.sockets[0].getsockname()[:2]
        return Address(host, port).target

    async def start(self) -> None:
        """Listens, and returns once the first discovery update is applied.

        Raises TimeoutError when discovery sends nothing within
        `first_update_timeout_s`, and re-raises the error of a discovery that fails
        before its first update.
        """
        if self._updates is not None:
            self._watch_task = asyncio.create_task(self._watch(self._updates))
            await self._wait_first_update(self._watch_task)
        self._server = await asyncio.start_server(
            self._serve, self._host, self._port, limit=READER_LIMIT_BYTES
        )

    async def stop(self) -> None:
        """Stops listening and discovery, and closes every forwarded connection."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        if self._watch_task is not None:
            self._watch_task.cancel()
            await asyncio.gather(self._watch_task, return_exceptions=True)
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def snapshot(self) -> L4Snapshot:
        """Counters of every known backend, sorted by endpoint id."""
        backends = tuple(self._backends[i].snapshot() for i in sorted(self._backends))
        address = self.address if self._server is not None else ""
        return L4Snapshot(address=address, backends=backends, refused_connections=self._refused)

    # Membership -------------------------------------------------------------

    def apply(self, update: Update) -> None:
        """Applies one discovery update to the ready set; open connections are untouched."""
        if isinstance(update, Reset):
            listed = {a.endpoint_id for a in update.addresses}
            self._remove(tuple(i for i in self._backends if i not in listed))
            self._upsert(update.addresses)
        elif isinstance(update, Add):
            self._upsert(update.addresses)
        elif isinstance(update, Remove):
            self._remove(update.endpoint_ids)
        self._ready_ids = tuple(sorted(i for i, b in self._backends.items() if b.ready))

    def _upsert(self, addresses: Iterable[Address]) -> None:
        for address in addresses:
            backend = self._backends.get(address.endpoint_id)
            if backend is None:
                self._backends[address.endpoint_id] = _Backend(address)
                continue
            # Same id, maybe a new address: new connections go there, old ones stay.
            backend.address = address
            backend.ready = address.ready
            backend.removed = False

    def _remove(self, endpoint_ids: Iterable[str]) -> None:
        for endpoint_id in endpoint_ids:
            backend = self._backends.get(endpoint_id)
            if backend is None:
                continue
            backend.ready = False
            backend.removed = True
            self._forget_if_idle(backend)

    def _forget_if_idle(self, backend: _Backend) -> None:
        """Drops a removed backend once its last connection is gone.

        Pods come and go for the life of the demo (a restarted pod is a new
        endpoint), so keeping every one would grow without bound.
        """
        endpoint_id = backend.address.endpoint_id
        idle = backend.removed and not backend.open_connections
        if idle and self._backends.get(endpoint_id) is backend:
            del self._backends[endpoint_id]

    async def _watch(self, updates: AsyncIterable[Update]) -> None:
        """Applies updates until cancelled.

        A discovery that fails before its first update raises (start() reports
        it); after that, its end or failure leaves the last ready set in place,
        as kube-proxy keeps its rules when it loses the API server.
        """
        try:
            async for update in updates:
                self.apply(update)
                self._first_update.set()
        except Exception:
            if not self._first_update.is_set():
                raise
            log.exception("L4 discovery failed; keeping %d ready backends", len(self._ready_ids))
            return
        log.info("L4 discovery ended; keeping %d ready backends", len(self._ready_ids))

    async def _wait_first_update(self, watch: asyncio.Task[None]) -> None:
        first = asyncio.create_task(self._first_update.wait())
        try:
            await asyncio.wait(
                {first, watch},
                timeout=self._first_update_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            first.cancel()
        if self._first_update.is_set():
            return
        if watch.done():
            watch.result()  # raises discovery's own error, if it had one
            raise RuntimeError("L4 discovery ended before its first update")
        watch.cancel()
        raise TimeoutError(f"no discovery update within {self._first_update_timeout_s} s")

    # Connections ------------------------------------------------------------

    def _pick(self) -> _Backend | None:
        """A ready backend chosen uniformly at random; None when none is ready."""
        if not self._ready_ids:
            return None
        return self._backends[self._rng.choice(self._ready_ids)]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        clean = False
        try:
            clean = await self._forward((reader, writer))
        except asyncio.CancelledError:
            # Only stop() cancels connections. Python 3.11's start_server calls
            # exception() on this task when it ends, which raises for a cancelled
            # task and logs a spurious error: end normally instead.
            if not self._stopping:
                raise
        finally:
            self._connections.discard(task)
            _close(writer, clean)

    async def _forward(self, client: Streams) -> bool:
        """Forwards one client connection; True when it ended cleanly (both sides EOF)."""
        backend = self._pick()
        if backend is None:
            self._refused += 1
            return False
        upstream = await self._connect(backend)
        if upstream is None:
            return False
        backend.open_connections += 1
        backend.total_connections += 1
        clean = False
        try:
            clean = await _splice(client, upstream, backend)
        finally:
            _close(upstream[1], clean)
            backend.open_connections -= 1
            self._forget_if_idle(backend)
        return clean

    async def _connect(self, backend: _Backend) -> Streams | None:
        """Opens the upstream connection; None (and a counted failure) when it fails.

        No second pick: see the module docstring.
        """
        address = backend.address
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow stop()'s
            # cancellation when the connect completes at that moment.
            async with asyncio.timeout(self._connect_timeout_s):
                reader, writer = await asyncio.open_connection(
                    address.host, address.port, limit=READER_LIMIT_BYTES
                )
        except (OSError, TimeoutError) as error:
            backend.connect_failures += 1
            log.debug("L4 connect to %s failed: %s", address.endpoint_id, error)
            return None
        writer.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER_BYTES)
        return reader, writer


async def _splice(client: Streams, upstream: Streams, backend: _Backend) -> bool:
    """Copies bytes both ways until both directions reach EOF or either fails.

    An EOF in one direction is passed on as a half-close (write_eof), as TCP
    would; the other direction keeps flowing. A reset or error on either side
    ends both. Returns True when both directions ended with EOF.
    """
    client[1].transport.set_write_buffer_limits(high=WRITE_HIGH_WATER_BYTES)

    def count_up(n: int) -> None:
        backend.bytes_to_backend += n

    def count_down(n: int) -> None:
        backend.bytes_to_client += n

    pumps = (
        asyncio.create_task(_pump(client[0], upstream[1], count_up)),
        asyncio.create_task(_pump(upstream[0], client[1], count_down)),
    )
    try:
        await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for pump in pumps:
            pump.cancel()
        # Collects the pumps' connection errors: a reset is a normal way to end.
        await asyncio.gather(*pumps, return_exceptions=True)
    return all(not p.cancelled() and p.exception() is None for p in pumps)


def _close(writer: asyncio.StreamWriter, graceful: bool) -> None:
    """Closes after sending what is buffered, or at once (a reset) when not graceful.

    A clean end must flush: the last bytes of a response may still sit in the
    buffer after the other direction ended. Anything else (a reset, a refused
    or failed connection, stop()) aborts, so the peer learns at once.
    """
    if graceful:
        writer.close()
    else:
        writer.transport.abort()


async def _pump(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    count: Callable[[int], None],
) -> None:
    """Copies reader → writer until EOF, then half-closes the writer."""
    while data := await reader.read(READ_CHUNK_BYTES):
        writer.write(data)
        count(len(data))
        await writer.drain()
    if writer.can_write_eof():
        with contextlib.suppress(OSError):
            writer.write_eof()
