"""The demo PNG is readable: value labels inside their panel, the legend outside every panel,
headroom above the highest rate drawn (in-process, matplotlib's Agg renderer, no server).

Before: a late burst's "172/s" label was written over the right axis and the legend sat on
the plain panel's plot area."""

from __future__ import annotations

import pytest

from telethon_guard.bench.demo import Timeline
from telethon_guard.bench.demo_plot import CLIP, HEADROOM, build_demo_figure, label_align, y_top
from tests.cli.test_demo_why import _outcome

pytest.importorskip("matplotlib")


def test_y_top_has_headroom_and_caps_bursts() -> None:
    assert y_top(40.0, 20.0) == pytest.approx(40.0 * HEADROOM)
    assert y_top(5.0, 20.0) == pytest.approx(20.0 * HEADROOM)  # the sent line stays visible
    assert y_top(500.0, 20.0) == pytest.approx(20.0 * CLIP * HEADROOM)


def test_label_align_keeps_labels_inside() -> None:
    assert label_align(9.25, 9.5, 0.76) == "right"
    assert label_align(0.25, 9.5, 0.76) == "left"
    assert label_align(4.0, 9.5, 0.76) == "center"


def test_labels_inside_their_panel_and_legend_outside_all() -> None:
    import matplotlib.pyplot as plt
    from matplotlib.text import Annotation

    tl = Timeline.for_seconds(8.0)
    plain = _outcome("plain Telethon", [(0.05 * k, 0.05 * k + 0.1, k < 20) for k in range(160)])
    # most of the guarded calls end together in the last bin: a burst far above CLIP x 20/s
    guard = _outcome("telethon-guard",
                     [(0.05 * k, 9.1 if k > 60 else 0.05 * k + 0.2, True) for k in range(160)])
    plain.wall = guard.wall = 9.4
    fig = build_demo_figure([plain, guard], tl, offered=20.0)
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        panels = [ax for ax in fig.axes if ax.get_ylabel() == "calls/s"]
        assert len(panels) == 2
        labels = [(ax, t) for ax in panels for t in ax.texts if isinstance(t, Annotation)]
        assert labels, "the burst in the last bin is labelled with its value"
        for ax, t in labels:
            box = t.get_window_extent(renderer)
            frame = ax.get_window_extent(renderer)
            assert frame.x0 <= box.x0 and box.x1 <= frame.x1, (t.get_text(), box, frame)
            assert frame.y0 <= box.y0 and box.y1 <= frame.y1, (t.get_text(), box, frame)
        (legend,) = fig.legends
        lbox = legend.get_window_extent(renderer)
        for ax in fig.axes:
            assert not lbox.overlaps(ax.get_window_extent(renderer)), ax.get_title()
        assert all(not ax.get_legend() for ax in fig.axes)
        # headroom: the highest unclipped rate (40/s) stays below the top of the panel
        assert panels[0].get_ylim()[1] >= 20.0 * CLIP
    finally:
        plt.close(fig)
