"""The PNG chart: req/s and p99 latency per scenario and server (matplotlib).

One row per scenario, req/s on the left and p99 on the right, one bar per
server (medians over the rounds, the same figures as the markdown tables),
with the slow-clients scenario drawn from its slowloris phase. matplotlib is
imported here only, so the rest of the harness runs without it.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from harness.report import Round, median_rounds
from harness.slowclients import SlowResult

COLORS = {
    "tandem": "#d62728",
    "gunicorn": "#7f7f7f",
    "nginx+gunicorn": "#1f77b4",
    "granian": "#2ca02c",
    "uwsgi": "#9467bd",
    "nginx": "#17becf",
}


def _rows(rounds: list[Round], slow: list[SlowResult], servers: list[str], scenarios: list[str]):
    """(title, [(server, req/s, p99 ms)]) per chart row."""
    rows = []
    for scn in scenarios:
        these = [r for r in rounds if r.scenario == scn]
        bars = []
        for srv in servers:
            m = median_rounds(these, srv)
            if m:
                bars.append((srv, m["rps"], m["p99"]))
        if bars:
            rows.append((scn, bars))
    bars = []
    for res in slow:
        by = {p.name: p for p in res.phases}
        p = by.get("slowloris")
        if p is not None and not res.error:
            # None: no request answered, so no latency to draw
            bars.append((res.server, p.wrk.rps if p.wrk else 0.0, p.wrk.p99_ms if p.wrk else None))
    if bars:
        rows.append(("hello under 1,000 slowloris connections", bars))
    return rows


def draw(
    rounds: list[Round],
    slow: list[SlowResult],
    servers: list[str],
    scenarios: list[str],
    path: Path,
    started: dt.datetime,
) -> str:
    """Write the chart to path; the reason if it could not be drawn, else ''."""
    rows = _rows(rounds, slow, servers, scenarios)
    if not rows:
        return "no successful measurement"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        return f"matplotlib is missing ({e}); run `bash bench/setup.sh`"

    fig, axes = plt.subplots(len(rows), 2, figsize=(13, 1.0 + 1.9 * len(rows)), squeeze=False)
    for (title, bars), (ax_rps, ax_p99) in zip(rows, axes):
        names = [b[0] for b in bars][::-1]
        colors = [COLORS.get(n, "#bcbd22") for n in names]
        for ax, values, unit in (
            (ax_rps, [b[1] for b in bars][::-1], "req/s"),
            (ax_p99, [b[2] for b in bars][::-1], "p99 ms"),
        ):
            drawn = [v or 0.0 for v in values]
            ax.barh(names, drawn, color=colors)
            top = max(drawn) if drawn and max(drawn) > 0 else 1.0
            ax.set_xlim(0, top * 1.25)
            for y, v in enumerate(values):
                if v is None or (unit == "req/s" and v == 0):
                    label = "nothing answered"
                elif unit == "req/s":
                    label = f"{v:,.0f}"
                else:
                    label = f"{v:.1f}" if v < 100 else f"{v:,.0f}"
                ax.text((v or 0.0) + top * 0.01, y, label, va="center", fontsize=8)
            ax.set_title(f"{title}: {unit}", fontsize=10, loc="left")
            ax.tick_params(axis="both", labelsize=8)
            ax.grid(axis="x", alpha=0.3)
    fig.suptitle(
        f"tandem benchmark {started:%Y-%m-%d %H:%M} UTC: req/s (higher is better) and "
        "p99 latency in ms (lower is better), medians over the rounds",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return ""
