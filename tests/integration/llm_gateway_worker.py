"""A worker process for test_llm_redis.py: one gateway, many calls, counts printed as JSON.

Usage: python llm_gateway_worker.py GROUP_JSON KEY_PREFIX CALLS CONCURRENCY
"""

from __future__ import annotations

import asyncio
import json
import sys

from worker.llm.errors import GatewayError
from worker.llm.gateway import ModelGroupGateway
from worker.llm.model_group import ModelGroup


async def run(group_json: str, prefix: str, calls: int, concurrency: int) -> dict[str, int]:
    group = ModelGroup.model_validate_json(group_json)
    outcome = {"ok": 0, "failed": 0}
    slots = asyncio.Semaphore(concurrency)

    async def one(gateway: ModelGroupGateway) -> None:
        async with slots:
            try:
                await gateway.complete("route me")
            except GatewayError:
                outcome["failed"] += 1
            else:
                outcome["ok"] += 1

    async with ModelGroupGateway(group, key_prefix=prefix) as gateway:
        await asyncio.gather(*(one(gateway) for _ in range(calls)))
    return outcome


if __name__ == "__main__":
    group_json, prefix, calls, concurrency = sys.argv[1:5]
    print(json.dumps(asyncio.run(run(group_json, prefix, int(calls), int(concurrency)))))
