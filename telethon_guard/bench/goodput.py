"""Goodput workloads (placeholder until the server lands)."""

from __future__ import annotations

from telethon_guard.bench.results import Row
from telethon_guard.bench.runner import WorkloadContext


async def run_known(ctx: WorkloadContext) -> Row:
    raise NotImplementedError("goodput-known workload not wired yet")


async def run_unknown(ctx: WorkloadContext) -> Row:
    raise NotImplementedError("goodput-unknown workload not wired yet")
