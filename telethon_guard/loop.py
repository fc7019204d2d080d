"""Event-loop helpers, the import path the README documents (``telethon_guard.loop``).

Two modules with one job each live behind it:

* :mod:`telethon_guard.stray_futures`: done-callbacks retrieving the exceptions of Telethon's
  futures and tasks, and the chained loop exception handler (the safety net for Telethon's
  stray futures; everything else reaches the previous handler);
* :mod:`telethon_guard.loop_lag`: :class:`LoopLagMonitor`, the event-loop lag monitor.
"""

from __future__ import annotations

from .loop_lag import LoopLagMonitor
from .stray_futures import (
    STRAY_LOG_EVERY,
    GuardExceptionHandler,
    RetrievingTaskSet,
    StraySink,
    acquire_exception_handler,
    current_handler,
    install_exception_handler,
    release_exception_handler,
    retrieve_exception,
    retrieving,
    telethon_attribution,
    uninstall_exception_handler,
)

__all__ = [  # the names of both modules, re-exported
    "STRAY_LOG_EVERY", "GuardExceptionHandler", "LoopLagMonitor", "RetrievingTaskSet",
    "StraySink", "acquire_exception_handler", "current_handler", "install_exception_handler",
    "release_exception_handler", "retrieve_exception", "retrieving", "telethon_attribution",
    "uninstall_exception_handler",
]
