"""``python -m telethon_guard_cli``: the same as the ``telethon-guard`` command."""

import sys

from telethon_guard_cli import main

sys.exit(main())
