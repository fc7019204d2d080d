"""The incident demo (``telethon-guard demo``): plain Telethon and telethon-guard side by side.

Run from the repository root: ``python benchmarks/demo.py [--quick] [--seconds S] [--json PATH]``.
"""

from __future__ import annotations

import sys

from telethon_guard.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
