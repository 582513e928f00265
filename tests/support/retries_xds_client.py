"""A proxyless client for the retry tests: `python -m tests.support.retries_xds_client TARGET N`.

Makes N GetItem calls one after another over `xds:///…` (GRPC_XDS_BOOTSTRAP names
Ballast's xDS server) and prints one JSON line: the codes the calls ended with.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter

import grpc
import grpc.aio

from demo.v1 import workload_pb2 as pb

GET_ITEM = "/ballast.demo.v1.Inventory/GetItem"


async def main(target: str, n: int) -> None:
    codes: Counter[str] = Counter()
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(GET_ITEM, request_serializer=pb.GetItemRequest.SerializeToString)
        for i in range(n):
            try:
                await call(pb.GetItemRequest(id=f"item-{i}"), timeout=10, wait_for_ready=True)
                codes["OK"] += 1
            except grpc.aio.AioRpcError as err:
                codes[err.code().name] += 1
    print(json.dumps({"codes": codes}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
