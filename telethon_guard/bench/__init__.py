"""The ``telethon-guard bench`` and ``demo`` workloads, run side by side with plain Telethon
and :class:`~telethon_guard.GuardedTelegramClient` against the embedded MTProto server
(:mod:`telethon_guard.testing`).

Modules: :mod:`.results` (rows, table, JSON), :mod:`.plot` (PNG), :mod:`.lag` (health-tick lag),
:mod:`.progress` (stderr progress), :mod:`.runner` (selection, interruption) and one module per
workload.
"""
