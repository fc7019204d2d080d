"""The bench PNG: one small bar chart per workload, plain Telethon beside telethon-guard."""

from __future__ import annotations

import math
from pathlib import Path

from telethon_guard.bench.command import UsageError, check_output_path
from telethon_guard.bench.results import Report


class PlotUnavailableError(RuntimeError):
    """matplotlib is not installed (it comes with the ``cli`` extra)."""


def check_matplotlib() -> None:
    """Raise :class:`PlotUnavailableError` if matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise PlotUnavailableError(
            "--plot needs matplotlib: pip install 'telethon-guard[cli]'"
        ) from e


def check_plot_output(path: Path) -> None:
    """Before running: :class:`~telethon_guard.bench.command.UsageError` unless matplotlib is
    installed and ``path`` can be written (``--plot PATH``)."""
    try:
        check_matplotlib()
    except PlotUnavailableError as e:
        raise UsageError(str(e)) from None
    check_output_path(path, "--plot")


def write_plot(report: Report, path: Path) -> None:
    """Write ``report``'s charts to ``path`` as a PNG. Raises :class:`PlotUnavailableError`
    without matplotlib and ``OSError`` if the file cannot be written."""
    check_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charts = [(r.label, r.chart) for r in report.rows if r.chart is not None]
    n = max(1, len(charts))
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.6), squeeze=False)
    for ax, (label, chart) in zip(axes[0], charts, strict=False):
        assert chart is not None
        names = [chart.left_label, chart.right_label]
        values = [chart.left, chart.right]
        heights = [v if v is not None and math.isfinite(v) else 0.0 for v in values]
        bars = ax.bar(names, heights, color=["#b0b0b0", "#2a7ab0"])
        for bar, v in zip(bars, values, strict=True):
            if v is None or not math.isfinite(v):
                text = "n/a"
            else:
                text = f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
        ax.set_title(label, fontsize=9)
        ax.set_ylabel(chart.unit, fontsize=8)
        ax.tick_params(labelsize=8)
    if not charts:
        axes[0][0].text(0.5, 0.5, "nothing measured", ha="center", va="center")
        axes[0][0].set_axis_off()
    title = "telethon-guard bench" + (" (interrupted)" if report.interrupted else "")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    try:
        fig.savefig(path, format="png", dpi=110)
    finally:
        plt.close(fig)
