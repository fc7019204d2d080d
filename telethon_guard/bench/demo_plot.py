"""``telethon-guard demo --plot PATH``: calls/s succeeded and failed over time, plain Telethon
above telethon-guard on one time axis, with the incident's phases shaded.

Each call is counted in the bin (:data:`BIN` seconds) in which it *ended* (succeeded or failed),
so the plot shows when the service got its answers; the dotted line is the rate the worker
sends at. Needs matplotlib (the ``cli`` extra); :func:`write_demo_plot` raises
:class:`~telethon_guard.bench.plot.PlotUnavailableError` without it and ``OSError`` when the file
cannot be written.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from telethon_guard.bench.plot import check_matplotlib

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class DemoRun(Protocol):
    """What the plot reads of one run (:class:`telethon_guard.bench.demo.DemoOutcome`)."""

    @property
    def name(self) -> str: ...
    @property
    def ok(self) -> int: ...
    @property
    def failed(self) -> Counter[str]: ...
    @property
    def timeline(self) -> list[tuple[float, float, bool]]: ...
    @property
    def wall(self) -> float: ...
    @property
    def complete(self) -> bool: ...


class Phases(Protocol):
    """The incident's schedule in seconds (:class:`telethon_guard.bench.demo.Timeline`)."""

    @property
    def seconds(self) -> float: ...
    @property
    def storm_at(self) -> float: ...
    @property
    def storm(self) -> float: ...
    @property
    def wave_at(self) -> float: ...
    @property
    def wave(self) -> float: ...

BIN = 0.5
"""Width of one time bin in seconds."""


def rates(timeline: Sequence[tuple[float, float, bool]], until: float,
          bin_s: float = BIN) -> tuple[list[float], list[float], list[float]]:
    """Bin starts, succeeded calls/s and failed calls/s of ``timeline`` ((sent s, ended s, ok)
    triples) over ``[0, until)`` seconds, by the time each call ended; later ones fall in the
    last bin."""
    n = max(1, math.ceil(until / bin_s))
    ok = [0] * n
    failed = [0] * n
    for _, t, succeeded in timeline:
        i = min(n - 1, max(0, int(t // bin_s)))
        (ok if succeeded else failed)[i] += 1
    starts = [i * bin_s for i in range(n)]
    return starts, [c / bin_s for c in ok], [c / bin_s for c in failed]


def waiting(timeline: Sequence[tuple[float, float, bool]], at: Sequence[float]) -> list[int]:
    """Calls sent but not yet ended at each time in ``at`` (seconds)."""
    return [sum(1 for sent, ended, _ in timeline if sent <= t < ended) for t in at]


def _grid(until: float, step: float = 0.1) -> list[float]:
    return [i * step for i in range(int(until / step) + 1)]


CLIP = 3.0
"""A rate above ``CLIP`` x the offered rate is cut off at the top of its panel and its value
written inside the panel (a burst of late answers would otherwise squash everything else)."""

HEADROOM = 1.15
"""The y-axis ends this factor above the highest rate drawn, so no line runs along the top."""


def y_top(peak: float, offered: float) -> float:
    """Upper y-limit (calls/s) of every rate panel: the highest rate drawn (``peak``, capped
    at :data:`CLIP` x ``offered``, never below ``offered``) times :data:`HEADROOM`."""
    return max(offered, min(peak, offered * CLIP)) * HEADROOM


def label_align(x: float, right: float, margin: float) -> str:
    """Horizontal alignment of a value label centred on ``x`` so it stays inside
    ``[0, right]``: ``"right"`` within ``margin`` of the right edge, ``"left"`` near 0."""
    if x > right - margin:
        return "right"
    if x < margin:
        return "left"
    return "center"


def build_demo_figure(outcomes: Sequence[DemoRun], tl: Phases, offered: float) -> Figure:
    """The demo's figure (one panel per run, a shared legend below them, outside every
    panel); :func:`write_demo_plot` saves it. Needs matplotlib (caller checks)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wall = max([tl.seconds + 1.0, *(o.wall for o in outcomes)])
    bins = max(1, math.ceil(wall / BIN))
    until = bins * BIN  # the end of the last bin, so the last bin is drawn in full
    rows = max(1, len(outcomes))
    fig, axes = plt.subplots(rows, 1, figsize=(9.0, 1.0 + 2.9 * rows), sharex=True,
                             squeeze=False, layout="constrained")
    binned = [rates(o.timeline, wall) for o in outcomes]
    peak = max([0.0, *(v for _, ok, failed in binned for v in (*ok, *failed))])
    top = y_top(peak, offered)
    clip = offered * CLIP
    most_waiting = max([1, *(max(waiting(o.timeline, _grid(until)), default=0)
                             for o in outcomes)])
    handles: list[Any] = []
    for ax, o, (starts, ok, failed) in zip((a[0] for a in axes), outcomes, binned,
                                           strict=False):
        ax.axvspan(tl.storm_at, tl.storm_at + tl.storm, color="#f4a261", alpha=0.25,
                   label="-429 storm")
        ax.axvspan(tl.wave_at, tl.wave_at + tl.wave, color="#8ecae6", alpha=0.35,
                   label="FLOOD_WAIT wave")
        ax.axvline(tl.seconds, color="#555555", linestyle="--", linewidth=1,
                   label="worker stops sending")
        ax.axhline(offered, color="#555555", linestyle=":", linewidth=1,
                   label=f"sent ({offered:g} calls/s)")
        edges = [*starts, until]  # "post" steps need the last bin's end to draw it
        ax.step(edges, [*ok, ok[-1]], where="post", color="#2a9d8f", linewidth=1.8,
                label="succeeded /s")
        ax.step(edges, [*failed, failed[-1]], where="post", color="#d62828", linewidth=1.8,
                label="failed /s")
        for x, v, color in [*zip(starts, ok, ["#2a9d8f"] * len(ok), strict=True),
                            *zip(starts, failed, ["#d62828"] * len(failed), strict=True)]:
            if v > clip:
                centre = x + BIN / 2
                ax.annotate(f"{v:.0f}/s (cut off)", (centre, 0.97),
                            xycoords=("data", "axes fraction"), va="top",
                            ha=label_align(centre, until, 0.08 * until), fontsize=7,
                            color=color, annotation_clip=False,
                            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                                  "alpha": 0.85})
        grid = _grid(until)
        wait_ax = ax.twinx()
        wait_ax.fill_between(grid, waiting(o.timeline, grid), step="post", color="#6c757d",
                             alpha=0.18, linewidth=0, label="calls waiting (right axis)")
        wait_ax.set_ylim(0, most_waiting * HEADROOM)
        wait_ax.set_ylabel("calls waiting", fontsize=9, color="#6c757d")
        wait_ax.tick_params(labelsize=8, colors="#6c757d")
        # rates drawn over the waiting area, not under it
        ax.set_zorder(wait_ax.get_zorder() + 1)
        ax.patch.set_visible(False)
        if not handles:
            handles = [*ax.get_legend_handles_labels()[0],
                       *wait_ax.get_legend_handles_labels()[0]]
        total_failed = sum(o.failed.values())
        ax.set_title(f"{o.name}: {o.ok} succeeded, {total_failed} failed"
                     + ("" if o.complete else " (interrupted)"), fontsize=10, loc="left")
        ax.set_ylabel("calls/s", fontsize=9)
        ax.set_ylim(0, top)
        ax.set_xlim(0, until)
        ax.tick_params(labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    if not outcomes:
        axes[0][0].text(0.5, 0.5, "nothing measured", ha="center", va="center")
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=4, fontsize=7,
                   frameon=False)
    axes[-1][0].set_xlabel("seconds since the service started (calls counted when they end)",
                           fontsize=9)
    fig.suptitle("telethon-guard demo: the incident, plain Telethon vs telethon-guard",
                 fontsize=11)
    return fig


def write_demo_plot(outcomes: Sequence[DemoRun], tl: Phases, path: Path,
                    offered: float) -> None:
    """Write the demo's PNG to ``path``. ``offered`` is the worker's rate (calls/s)."""
    check_matplotlib()
    import matplotlib.pyplot as plt

    fig = build_demo_figure(outcomes, tl, offered)
    try:
        fig.savefig(path, format="png", dpi=110)
    finally:
        plt.close(fig)
