"""Storm workload (placeholder until the server lands)."""

from __future__ import annotations

from telethon_guard.bench.results import Row
from telethon_guard.bench.runner import WorkloadContext


async def run(ctx: WorkloadContext) -> Row:
    raise NotImplementedError("storm workload not wired yet")
