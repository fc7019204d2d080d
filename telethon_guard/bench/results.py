"""Results of the bench workloads: one :class:`Row` per workload, printed as one table.

Every figure compares plain Telethon and telethon-guard measured in the same run; the JSON
report carries the headline keys the issue names (``overhead_ratio``, ``goodput_known_ratio``,
``goodput_unknown_ratio``, ``flood_waits_known``, ``storm_lag_p99_ms``,
``limiter_ns_per_decision``) plus every detail figure.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Number = float | int

HEADLINE_KEYS = (
    "overhead_ratio",
    "goodput_known_ratio",
    "goodput_unknown_ratio",
    "flood_waits_known",
    "storm_lag_p99_ms",
    "limiter_ns_per_decision",
)
"""Keys every JSON report carries (``null`` when that workload did not run)."""


@dataclass(frozen=True)
class Chart:
    """Two bars for the PNG: ``unit`` is the y-axis label; ``None`` values are left out."""

    unit: str
    left_label: str
    left: float | None
    right_label: str
    right: float | None


@dataclass
class Row:
    """One workload's outcome.

    ``plain`` and ``guarded`` are short human-readable cells; ``result`` is the comparison
    (a ratio, a share of the limit); ``target`` the issue's target as text; ``met`` whether it
    was met (``None``: not judged, e.g. interrupted). ``figures`` are the machine-readable
    numbers written to JSON (flat, units in the key names); ``note`` explains a miss.
    """

    workload: str
    label: str
    plain: str = "-"
    guarded: str = "-"
    result: str = "-"
    target: str = "-"
    met: bool | None = None
    figures: dict[str, Number | None] = field(default_factory=dict)
    note: str = ""
    complete: bool = True
    chart: Chart | None = None


@dataclass
class Report:
    """All rows of one run plus the machine it ran on; rows are appended as they finish."""

    rows: list[Row] = field(default_factory=list)
    mode: str = "full"
    interrupted: bool = False
    machine: dict[str, str] = field(default_factory=dict)

    def add(self, row: Row) -> None:
        self.rows.append(row)

    def figures(self) -> dict[str, Number | None]:
        out: dict[str, Number | None] = {}
        for row in self.rows:
            out.update(row.figures)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            **dict.fromkeys(HEADLINE_KEYS),
            **{k: _json_number(v) for k, v in self.figures().items()},
            "mode": self.mode,
            "interrupted": self.interrupted,
            "machine": self.machine,
            "rows": [
                {
                    "workload": r.workload,
                    "label": r.label,
                    "plain": r.plain,
                    "guarded": r.guarded,
                    "result": r.result,
                    "target": r.target,
                    "met": r.met,
                    "complete": r.complete,
                    "note": r.note,
                }
                for r in self.rows
            ],
        }


def _json_number(v: Number | None) -> Number | None:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def write_json(report: Report, path: Path) -> None:
    """Write ``report`` as JSON to ``path`` (UTF-8, indented). Raises ``OSError``."""
    path.write_text(json.dumps(report.to_json(), indent=2, sort_keys=False) + "\n",
                    encoding="utf-8")


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table with ``|`` separators (also valid Markdown)."""
    widths = [len(h) for h in headers]
    for r in rows:
        for i, cell in enumerate(r):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(widths[i]) for i, c in enumerate(cells)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def met_cell(met: bool | None, complete: bool = True) -> str:
    if not complete:
        return "incomplete"
    return {True: "yes", False: "NO", None: "-"}[met]


INCOMPLETE_NOTE = ("interrupted before this workload finished: the figures above are partial "
                   "and no conclusion is drawn from them")
"""The note of a row whose workload was interrupted (replaces any verdict it carried)."""

INCOMPLETE_EMPTY_NOTE = ("interrupted before this workload had figures to show (it was still "
                         "starting, or measures everything at its end)")
"""The note of an interrupted workload's row when it left no partial figures."""


def interrupted(row: Row) -> Row:
    """``row`` marked as cut short by Ctrl-C: not complete, not judged (``met`` is ``None``)
    and its note replaced by :data:`INCOMPLETE_NOTE`, since a verdict on part of a
    measurement (e.g. "ratio 0.479 is 0.501 below 0.98") would be misleading. Returns ``row``."""
    row.complete = False
    row.met = None
    row.note = INCOMPLETE_NOTE
    return row


MET_LEGEND = ("met: yes = this run reached the target; NO = it missed it in this run (the "
              "lines below say by how much and which layer); incomplete = interrupted")
"""One line under the bench table saying what its ``met`` column means."""


def render_report(report: Report) -> str:
    """The bench table, then one line per missed target explaining why."""
    headers = ["workload", "plain Telethon", "telethon-guard", "result", "target", "met"]
    body = [
        [r.label, r.plain, r.guarded, r.result, r.target, met_cell(r.met, r.complete)]
        for r in report.rows
    ]
    out = [format_table(headers, body)] if body else ["(nothing measured)"]
    if body:
        out.append(MET_LEGEND)
    notes = [f"- {r.workload}: {r.note}" for r in report.rows if r.note]
    if notes:
        out.append("\n".join(notes))
    if report.interrupted:
        out.append("interrupted: the table shows what was measured before Ctrl-C")
    return "\n\n".join(out)


def machine_info() -> dict[str, str]:
    """``nproc``, CPU model (``/proc/cpuinfo``), Python and Telethon versions."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import telethon

        tl_version = telethon.__version__
    except Exception:  # pragma: no cover - telethon is a hard dependency
        tl_version = "unknown"
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "nproc": str(nproc),
        "cpu": cpu,
        "python": sys.version.split()[0],
        "telethon": tl_version,
        "platform": platform.platform(),
    }


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values`` by nearest rank; ``nan`` when empty."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100.0 * len(s)) - 1))
    return s[k]
