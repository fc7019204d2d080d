"""``telethon-guard demo``: the production incident, replayed side by side (being wired)."""

from __future__ import annotations

import argparse
from pathlib import Path


def run_demo_command(args: argparse.Namespace) -> int:
    from telethon_guard.cli import check_output_path

    json_path: Path | None = args.json_path
    if json_path is not None:
        check_output_path(json_path, "--json")
    raise NotImplementedError("demo not wired yet")
