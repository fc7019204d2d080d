"""Benchmark: the ``goodput-unknown`` workload of ``telethon-guard bench`` (same code, same table).

Run from the repository root: ``python benchmarks/goodput_unknown.py [--quick] [--json PATH] [...]``
(every option of ``telethon-guard bench`` except ``--only``). See benchmarks/README.md.
"""

from __future__ import annotations

import sys

from telethon_guard.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--only", "goodput-unknown", *sys.argv[1:]]))
