"""Shared by the tests that run a second Python process (tests/durable, tests/redis): run a
child script with one JSON argument and read its JSON answer (the last line it prints)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any


async def run_json_child(script: Path, args: dict[str, Any], env: Mapping[str, str],
                         timeout: float) -> dict[str, Any]:
    """Run ``script`` in a new interpreter with ``json.dumps(args)`` as its one argument,
    bounded by ``timeout`` seconds (the child is killed and ``asyncio.TimeoutError`` raised
    when it runs longer); asserts exit code 0 and returns the JSON of its last stdout line."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), json.dumps(args), env=dict(env),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode()[-3000:]
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result
