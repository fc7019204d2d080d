"""What a bench workload gets: the run's sizes (:class:`BenchSettings`) and its
:class:`WorkloadContext`. Workload modules import these from here, never from
:mod:`telethon_guard.bench.runner` (which imports the workloads: that would be a circle).
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from telethon_guard.bench.results import Row


@dataclass
class BenchSettings:
    """Sizes of the workloads. ``duration`` is seconds of measuring per client and workload."""

    quick: bool = False
    duration: float = 10.0
    tasks: int = 32
    storm_clients: int = 50
    storm_calls: int = 1000
    only: list[str] = field(default_factory=list)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> BenchSettings:
        quick = bool(args.quick)
        return cls(
            quick=quick,
            duration=args.duration if args.duration is not None else (2.5 if quick else 10.0),
            tasks=args.tasks if args.tasks is not None else 32,
            storm_clients=args.storm_clients if args.storm_clients is not None else 50,
            storm_calls=args.storm_calls if args.storm_calls is not None else 1000,
            only=list(args.only or []),
        )


@dataclass
class WorkloadContext:
    """What a workload gets: the settings, a progress callback and a place for a partial row
    (shown, marked incomplete, if the run is interrupted; ``more_partial``: rows of other
    workloads measured in the same run, e.g. goodput's known and unknown limit)."""

    settings: BenchSettings
    progress: Callable[[str], None]
    partial: Row | None = None
    more_partial: list[Row] = field(default_factory=list)


Workload = Callable[[WorkloadContext], Awaitable[Row]]
