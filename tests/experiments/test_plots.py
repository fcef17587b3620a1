"""The plots: one PNG per call, of the size the figure asks for."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image

from experiments.plots import sweep_grid, window_lines


def test_window_lines_writes_a_png_of_the_figure_size(tmp_path: Path) -> None:
    path = window_lines({"a": [1.0, 2.0, 3.0], "b": [3.0, 2.0]}, "TTFT", "title", tmp_path / "lines.png")
    assert path == tmp_path / "lines.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(path).shape[:2] == (4 * 120, 8 * 120)


def test_sweep_grid_lays_out_four_panels_a_row(tmp_path: Path) -> None:
    curves = {f"knob{i}": (["lo", "hi"], [1.0, float(i)]) for i in range(5)}
    path = sweep_grid(curves, "TTFT", tmp_path / "grid.png")
    assert matplotlib.image.imread(path).shape[:2] == (2 * 3 * 110, 4 * 4 * 110)
    single = sweep_grid({"only": (["x"], [1.0])}, "TTFT", tmp_path / "one.png")
    assert matplotlib.image.imread(single).shape[:2] == (3 * 110, 4 * 110)
