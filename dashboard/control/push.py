"""Sending desired state to balancer replicas over their admin API (grpc.aio, no Django)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import grpc.aio

from balancer.admin.v1 import admin_pb2, admin_pb2_grpc
from balancer.tls import TlsError, open_channel
from dashboard.collector.runner import ReplicaTarget
from dashboard.control.desired import Command

PUSH_TIMEOUT_S = 2.0
# A replica that cannot be reached (yet): the state stays pending for it.
UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


@dataclass(frozen=True, slots=True)
class PushResult:
    """How one replica took a batch of commands: all of them, or the first failure."""

    replica: str
    applied: bool
    unreachable: bool = False
    error: str = ""


async def push(
    target: ReplicaTarget, commands: Sequence[Command], timeout_s: float = PUSH_TIMEOUT_S
) -> PushResult:
    """Sends `commands` in order; stops at the first that fails."""
    if not commands:
        return PushResult(target.id, applied=True)
    metadata = (("authorization", f"Bearer {target.token}"),)
    try:
        async with open_channel(target.address, target.tls) as channel:
            stub = admin_pb2_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]
            for command in commands:
                await _send(stub, command, metadata, timeout_s)
    except grpc.aio.AioRpcError as err:
        code = err.code()
        return PushResult(
            target.id,
            applied=False,
            unreachable=code in UNREACHABLE,
            error=f"{code.name}: {err.details()}",
        )
    except TlsError as err:  # a certificate file removed since start: say which
        return PushResult(target.id, applied=False, error=str(err))
    return PushResult(target.id, applied=True)


async def push_all(
    targets: Sequence[ReplicaTarget],
    commands: Sequence[Command],
    timeout_s: float = PUSH_TIMEOUT_S,
) -> list[PushResult]:
    """`push` to every replica at once; results in the order of `targets`."""
    return list(await asyncio.gather(*(push(t, commands, timeout_s) for t in targets)))


async def _send(
    stub: admin_pb2_grpc.AdminStub,
    command: Command,
    metadata: tuple[tuple[str, str], ...],
    timeout_s: float,
) -> None:
    cluster, endpoint = command.cluster, command.endpoint_id
    if command.kind == "weight":
        await stub.SetWeight(
            admin_pb2.SetWeightRequest(
                cluster=cluster, endpoint_id=endpoint, weight=command.weight
            ),
            metadata=metadata,
            timeout=timeout_s,
        )
    elif command.kind == "drain":
        timeout_ms = 0 if command.timeout_s is None else round(command.timeout_s * 1000)
        await stub.Drain(
            admin_pb2.DrainRequest(cluster=cluster, endpoint_id=endpoint, timeout_ms=timeout_ms),
            metadata=metadata,
            timeout=timeout_s,
        )
    elif command.kind == "undrain":
        await stub.Undrain(
            admin_pb2.UndrainRequest(cluster=cluster, endpoint_id=endpoint),
            metadata=metadata,
            timeout=timeout_s,
        )
    else:
        await stub.SetPolicy(
            admin_pb2.SetPolicyRequest(cluster=cluster, policy=command.policy),
            metadata=metadata,
            timeout=timeout_s,
        )
