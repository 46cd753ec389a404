"""What a run leaves: a table on the terminal, a JSON file of rows, a PNG plot against N."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

__all__ = ["Column", "plot", "table", "write_json"]


@attrs.frozen
class Column:
    field: str
    title: str
    format: str = "{:,.1f}"
    log: bool = False  # a logarithmic axis, in a plot


def table(rows: Sequence[Any], columns: Sequence[Column]) -> str:
    """``rows`` (attrs instances) as an aligned text table."""
    cells = [[c.title for c in columns]]
    cells += [[_cell(getattr(row, c.field), c.format) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: Any, form: str) -> str:
    return "-" if value is None else form.format(value)  # None: does not apply to this row


def write_json(path: Path, rows: Sequence[Any]) -> None:
    path.write_text(json.dumps([attrs.asdict(row) for row in rows], indent=2) + "\n")


def plot(path: Path, rows: Sequence[Any], panels: Sequence[Column], title: str) -> None:
    """One panel per column in ``panels``, against the number of clients, one line a server (or
    a row's ``series``, when its rows have one: a server in one variant of the measurement).
    A value not measured (None) is left out, and so is a panel without any."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in panels if any(getattr(r, p.field) is not None for r in rows)]

    figure, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    servers = list(dict.fromkeys(_series(row) for row in rows))
    for ax, panel in zip(axes[0], panels, strict=True):
        for server in servers:
            mine = sorted(
                (r.clients, getattr(r, panel.field))
                for r in rows
                if _series(r) == server and getattr(r, panel.field) is not None
            )
            ax.plot([n for n, _ in mine], [v for _, v in mine], marker="o", label=server)
        ax.set_xlabel("clients (N)")
        ax.set_ylabel(panel.title)
        if panel.log:
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _series(row: Any) -> str:
    series: str = getattr(row, "series", row.server)
    return series
