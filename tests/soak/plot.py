"""The soak run's picture: memory, connections, emits and the endpoint's latency over time, the
Redis outage shaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot"]


def plot(report: dict[str, Any], path: Path) -> None:
    """Write a PNG of ``report`` (what :func:`soak.analysis.analyse` returned) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = report["series"]
    t = series["t"]
    figure, axes = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
    memory, connections, emits, latency = axes

    for name, values in series["rss_mb"].items():
        style = "-" if name.startswith("n") else ":"
        label = f"node {name}" if name.startswith("n") else name
        memory.plot(t, values, style, label=label)
    memory.set_ylabel("RSS (MB)")
    memory.set_ylim(bottom=0)

    connections.plot(t, series["connected"], label="tabs connected (clients' view)")
    for name, values in series["sockets"].items():
        connections.plot(t, [v if v is not None else float("nan") for v in values],
                         label=f"sockets on {name}")  # fmt: skip
    connections.set_ylabel("connected")
    connections.set_ylim(bottom=0)

    emits.plot(series["emits_t"], series["emits_per_s"], drawstyle="steps-post")
    emits.set_ylabel("emits/s (answered 200)")
    emits.set_ylim(bottom=0)

    for name, points in series["latency"].items():
        latency.scatter([p[0] for p in points], [max(p[1], 0.1) for p in points], s=3,
                        label=f"POST /internal/emit to {name}")  # fmt: skip
    latency.set_yscale("log")
    latency.set_ylabel("endpoint latency (ms)")
    latency.set_xlabel("seconds since the load started")

    timeline = report["timeline"]
    window = timeline["outage_window"]
    if window is not None:
        end = window[1] if window[1] is not None else t[-1]
        for ax in axes:
            ax.axvspan(window[0], end, color="tab:red", alpha=0.12, label="Redis outage")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    settings = report["settings"]
    d = report["deliveries"]
    rate = report["emits"]["posted"] / max(timeline["load_s"], 1)
    figure.suptitle(
        f"soak: {settings['clients']} tabs, {rate:.0f} emits/s, two nodes, "
        f"Redis down {settings['outage']:.0f} s — {d['expected']:,} expected deliveries, "
        f"{d['lost']} lost, {d['undeliverable_cross_node']} undeliverable during the outage",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
