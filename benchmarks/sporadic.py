"""Benchmark: the ``sporadic`` workload of ``telethon-guard bench`` (same code, same table).

Run from the repository root: ``python benchmarks/sporadic.py [--quick] [--json PATH] [...]``
(every option of ``telethon-guard bench`` except ``--only``). See benchmarks/README.md.
"""

from __future__ import annotations

import sys

from telethon_guard.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--only", "sporadic", *sys.argv[1:]]))
