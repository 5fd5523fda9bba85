"""PNG charts of a benchmark run, drawn from the runner's JSON document (``benchmarks.runner --plot``).

One chart per scenario that has one, ``<scenario>.png`` in the output directory:

- ``protocol_throughput``, ``audit_overhead``, ``metrics_overhead``: each round's figure beside the
  baseline measured in the same round (grouped bars; the scenario's own medians in the legend);
- ``ask_latency``: the distribution of ``ask`` round trips beside raw Ray calls (the CDF of the
  scenario's ``latency_ms_quantiles``), whole and its slowest 10%;
- ``soak``: storage over the run's time (both agents' LMDB, the checkpoint store, local table entries);
- ``failover``: each round's time from SIGKILL to serving again, for the three ways back.

A scenario absent from the document, or whose result lacks what its chart reads (a run saved before
the scenario recorded it), gets no chart: :func:`skipped` says which and why.

matplotlib (the extra ``plot``) is imported only to draw, and only through its object-oriented API
with the Agg renderer: no pyplot, so no global figure state and no display.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["CHARTS", "INSTALL", "Chart", "PlotUnavailable", "plot", "require_matplotlib", "skipped"]

INSTALL = "pip install 'garrison[plot]'"
DPI = 100
WIDTH = 9.0  # inches, every chart: 900 px wide at DPI
STRIP = 0.22  # inches at the bottom kept free of the layout, for the machine line
BASELINE = "0.55"  # grey: the same-run baseline, in every chart
OURS, OTHER = "tab:blue", "tab:orange"
MB = 1e6
PALETTE = 64  # colours per PNG: the charts' few colours and their anti-aliased edges


class PlotUnavailable(RuntimeError):
    """matplotlib cannot be imported; the message says how to install it."""


def require_matplotlib() -> None:
    """Raise :class:`PlotUnavailable` unless matplotlib and its Agg renderer import."""
    try:
        import matplotlib  # noqa: F401  (the package itself first: a cached submodule would hide its absence)
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    except ImportError as exc:
        raise PlotUnavailable(f"charts need matplotlib: {INSTALL}") from exc


@dataclass(frozen=True)
class Chart:
    """How to draw one scenario's result, and which keys of that result the drawing reads."""

    draw: Callable[[dict[str, Any]], Figure]
    needs: tuple[str, ...]


def skipped(doc: dict[str, Any]) -> dict[str, str]:
    """Scenarios with a chart that ``doc`` (the runner's JSON document) cannot give one, and why."""
    results = doc["scenarios"]
    out = {}
    for name, chart in CHARTS.items():
        if name not in results:
            out[name] = "not in the results"
        elif lacking := [key for key in chart.needs if key not in results[name]]:
            out[name] = f"its result has no {', '.join(lacking)} (saved before the scenario recorded it?)"
    return out


def plot(doc: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write the chart of every scenario of ``doc`` that has one into ``out_dir`` (created if missing).

    Returns the files written, in :data:`CHARTS` order; the others are :func:`skipped`.
    """
    require_matplotlib()

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cannot = skipped(doc)
    written = []
    for name, chart in CHARTS.items():
        if name in cannot:
            continue
        fig = chart.draw(doc["scenarios"][name])
        fig.text(0.005, 0.008, _machine_line(doc), fontsize=7, color="0.35", ha="left", va="bottom")
        path = out / f"{name}.png"
        _save(fig, path)
        written.append(path)
    return written


def _save(fig: Figure, path: Path) -> None:
    """Render ``fig`` with Agg and write it as a PNG of :data:`PALETTE` colours (a third of the RGBA size)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image  # matplotlib's own dependency

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    image = Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")  # the figure is opaque white
    image.quantize(colors=PALETTE, method=Image.Quantize.MEDIANCUT).save(path, format="png", optimize=True)


# -- the charts, one function per scenario -------------------------------------------------------


def _protocol_throughput(r: dict[str, Any]) -> Figure:
    fig, (ax,) = _figure("Throughput per round: effectively-once agent to agent, beside raw Ray calls")
    ax.set_title(f"{r['messages_per_round']:,} messages a round; medians {r['effectively_once_per_s_median']:,} msg/s "
                 f"against {r['raw_ray_calls_per_s_median']:,} raw calls/s: {r['ratio_of_medians']}x", fontsize=10)
    _rounds(ax, "messages per second", _rate, [
        (f"Garrison, effectively-once (median {_rate(r['effectively_once_per_s_median'])}/s)",
         r["effectively_once_per_s"], OURS),
        (f"raw Ray actor calls, pipelined (median {_rate(r['raw_ray_calls_per_s_median'])}/s)",
         r["raw_ray_calls_per_s"], BASELINE),
    ])
    return fig


def _audit_overhead(r: dict[str, Any]) -> Figure:
    fig, (ax,) = _figure("Throughput per round: agent to agent with the audit log on, beside off")
    title = (f"{r['messages_per_round']:,} effectively-once messages a round; medians "
             f"{r['audit_on_per_s_median']:,} msg/s on against {r['audit_off_per_s_median']:,} off: "
             f"{_slower(r['slower_pct'])}")
    _on_beside_off(ax, title, "audit log", (r["audit_on_per_s"], r["audit_on_per_s_median"]),
                   (r["audit_off_per_s"], r["audit_off_per_s_median"]))
    return fig


def _on_beside_off(ax: Axes, title: str, what: str, on: tuple[list[float], float], off: tuple[list[float], float], *,
                   ylabel: str = "messages per second", stat: str = "median", unit: str = "/s",
                   fmt: Callable[[float], str] | None = None) -> None:
    """Rounds of ``what`` on beside off under ``title``: ``(per round, summary figure)`` each, the summary in the legend."""
    fmt = fmt or _rate
    ax.set_title(title, fontsize=10)
    _rounds(ax, ylabel, fmt, [(f"{what} on ({stat} {fmt(on[1])}{unit})", on[0], OURS),
                              (f"{what} off ({stat} {fmt(off[1])}{unit})", off[0], BASELINE)])


def _metrics_overhead(r: dict[str, Any]) -> Figure:
    single, pair = r["single"], r["pair"]
    fig, (top, bottom) = _figure("Per-message metrics on, beside off, per round", rows=2, height=7.5)
    _on_beside_off(top, f"one in-process agent, {single['messages_per_round']:,} asks a round: best rounds "
                        f"{single['metrics_on_us_best']} us on against {single['metrics_off_us_best']} us off, "
                        f"{_slower(single['slower_pct'])}", "metrics", (single["metrics_on_us"], single["metrics_on_us_best"]),
                   (single["metrics_off_us"], single["metrics_off_us_best"]), ylabel="thread CPU per message (us)",
                   stat="best", unit=" us", fmt=lambda v: f"{v:.1f}")
    _on_beside_off(bottom, f"agent to agent on Ray, {pair['messages_per_round']:,} messages a round: medians "
                           f"{pair['metrics_on_per_s_median']:,} msg/s on against {pair['metrics_off_per_s_median']:,} "
                           f"off, {_slower(pair['slower_pct'])}", "metrics", (pair["metrics_on_per_s"], pair["metrics_on_per_s_median"]),
                   (pair["metrics_off_per_s"], pair["metrics_off_per_s_median"]))
    return fig


def _ask_latency(r: dict[str, Any]) -> Figure:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    q = r["latency_ms_quantiles"]
    fig, (whole, tail) = _figure("ask round-trip latency, beside a raw Ray actor call (alternating, same run)",
                                 cols=2)
    curves = [(f"Garrison ask, effectively-once\np50 {r['ask_p50_ms']} ms, p99 {r['ask_p99_ms']} ms", q["ask"], OURS),
              (f"raw Ray actor call\np50 {r['raw_ray_p50_ms']} ms, p99 {r['raw_ray_p99_ms']} ms", q["raw_ray"],
               BASELINE)]
    whole_title = f"all {r['calls']:,} calls each: p50 {r['p50_ratio']}x raw, p99 {r['p99_ratio']}x raw"
    for ax, (low, guide), title in ((whole, (0, 50), whole_title), (tail, (90, 99), "the slowest 10%, magnified")):
        for label, values, colour in curves:
            # An empirical CDF: flat from each quantile's latency to the next one's.
            ax.plot(values, q["percent"], color=colour, label=label, drawstyle="steps-post")
        ax.axhline(guide, color="0.6", linewidth=0.8, linestyle=":")
        ax.set_ylim(low, 100.5)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("round-trip latency (ms, log scale)")
        ax.set_ylabel("calls at or below (%)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", color="0.92")
    # The tail panel starts at the faster side's p90: the curves below it are off its y range anyway.
    p90 = q["percent"].index(90)
    tail.set_xlim(left=0.9 * min(q["ask"][p90], q["raw_ray"][p90]))
    tail.legend(loc="lower right", fontsize=8, frameon=False)  # a CDF's tail leaves that corner empty
    return fig


def _soak(r: dict[str, Any]) -> Figure:
    rows = r["series"]
    t = [row["t"] for row in rows]
    fig, (lmdb, store, entries) = _figure(
        f"Soak: storage over {r['seconds']:,.0f} s of {r['messages']:,} effectively-once messages", rows=3,
        height=8.5, sharex=True)
    g = r["growth_last_over_first_third"]
    lmdb.set_title(f"each agent's LMDB (in the legend: growth, last third over first; aim under "
                   f"{r['aim']['growth']}x)", fontsize=10)
    for role, colour in (("receiver", OURS), ("sender", OTHER)):
        lmdb.plot(t, [row[role]["live_bytes"] / MB for row in rows], color=colour,
                  label=f"{role}: live bytes ({g[f'{role}_lmdb_live_bytes']}x)")
        lmdb.plot(t, [row[role]["used_bytes"] / MB for row in rows], color=colour, linestyle="--",
                  label=f"{role}: file high-water\nmark ({g[f'{role}_lmdb_used_bytes']}x)")
    lmdb.set_ylabel("LMDB (MB)")
    if g.get("tiers_bytes") is not None:  # runs that split the audit log (append-only) from the bounded tiers
        store.set_title(f"the checkpoint store on disk: tiers growth {g['tiers_bytes']}x; the audit log "
                        f"(append-only) {r['audit_bytes_per_message']} bytes a message", fontsize=10)
        store.plot(t, [row["tiers_bytes"] / MB for row in rows], color=OURS,
                   label="checkpoints, journal and\ntransition segments")
        store.plot(t, [row["audit_bytes"] / MB for row in rows], color=OTHER, linestyle="--", label="audit log")
    else:
        store.set_title(f"the checkpoint store on disk: growth {g['store_bytes']}x, "
                        f"max {r['max_bytes']['store_bytes'] / MB:,.1f} MB after the warm-up", fontsize=10)
    store.plot(t, [row["store_bytes"] / MB for row in rows], color=BASELINE, label="checkpoint store (du)")
    store.set_ylabel("store (MB)")
    entries.set_title("entries kept in the local tables (the rest is in the store's segments)", fontsize=10)
    for role, table, colour, style in (("receiver", "journal", OURS, "-"), ("receiver", "transitions", OURS, "--"),
                                       ("sender", "outbox", OTHER, "-"), ("sender", "journal", OTHER, ":")):
        entries.plot(t, [row[role][table] for row in rows], color=colour, linestyle=style, label=f"{role}: {table}")
    entries.set_ylabel("entries")
    entries.set_xlabel(f"time since the first message (s); {r['messages_per_s']:,} msg/s on average, paced at "
                       f"{r['target_messages_per_s']:,.0f}")
    for ax in (lmdb, store, entries):
        if r.get("steady_from_s") is not None:
            ax.axvspan(0, r["steady_from_s"], color="0.93", label="warm-up (not in the growth)")
        ax.set_ylim(bottom=0)
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    return fig


def _failover(r: dict[str, Any]) -> Figure:
    fig, (ax,) = _figure("Failover: from SIGKILL to serving again with state restored, each round")
    ax.set_title(f"medians: Ray's own actor restart {r['ray_restart_median_s']} s, supervisor cold restart "
                 f"{r['supervisor_cold_restart_median_s']} s, warm standby {r['warm_standby_median_s']} s", fontsize=10)
    _rounds(ax, "SIGKILL to serving again (s)", lambda v: f"{v:.3f}", [
        (f"warm standby (median {r['warm_standby_median_s']} s)", r["warm_standby_s"], OURS),
        (f"supervisor, cold restart (median {r['supervisor_cold_restart_median_s']} s)",
         r["supervisor_cold_restart_s"], OTHER),
        (f"Ray's own actor restart (median {r['ray_restart_median_s']} s)", r["ray_restart_s"], BASELINE),
    ])
    return fig


#: Scenario -> its chart, in the order the charts are written.
CHARTS: dict[str, Chart] = {
    "protocol_throughput": Chart(_protocol_throughput, ("effectively_once_per_s", "raw_ray_calls_per_s")),
    "ask_latency": Chart(_ask_latency, ("latency_ms_quantiles",)),
    "soak": Chart(_soak, ("series",)),
    "failover": Chart(_failover, ("ray_restart_s", "supervisor_cold_restart_s", "warm_standby_s")),
    "audit_overhead": Chart(_audit_overhead, ("audit_on_per_s", "audit_off_per_s")),
    "metrics_overhead": Chart(_metrics_overhead, ("single", "pair")),
}


# -- shared pieces ---------------------------------------------------------------------------------


def _figure(title: str, rows: int = 1, cols: int = 1, height: float = 4.8, **kw: Any) -> tuple[Figure, list[Axes]]:
    """A figure of ``rows`` x ``cols`` axes under ``title``, laid out above the machine line's strip."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH, height), dpi=DPI, layout="constrained")
    engine = fig.get_layout_engine()
    assert engine is not None
    engine.set(rect=(0, STRIP / height, 1, 1 - STRIP / height))
    fig.suptitle(title, fontsize=12, fontweight="bold")
    axes = fig.subplots(rows, cols, squeeze=False, **kw)
    return fig, [ax for row in axes for ax in row]


def _rounds(ax: Axes, unit: str, fmt: Callable[[float], str],
            series: Sequence[tuple[str, Sequence[float], str]]) -> None:
    """Grouped bars: a group per round, a bar per ``(label, values, colour)``; index i of every values is round i."""
    from matplotlib.ticker import FuncFormatter

    rounds = max(len(values) for _, values, _ in series)
    width = 0.8 / len(series)
    crowded = rounds * len(series) > 12  # the value labels no longer fit across their bars
    for i, (label, values, colour) in enumerate(series):
        offset = (i - (len(series) - 1) / 2) * width
        bars = ax.bar([x + offset for x in range(len(values))], values, width, label=label, color=colour)
        ax.bar_label(bars, [fmt(v) for v in values], fontsize=7, padding=2, rotation=90 if crowded else 0)
    ax.set_xticks(range(rounds), [str(x + 1) for x in range(rounds)])
    ax.set_xlabel("round (each round measures every bar of its group, one after the other)")
    ax.set_ylabel(unit)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,g}"))  # 140,000 rather than 1.4e5
    ax.margins(y=0.4 if crowded else 0.3)  # headroom over the tallest bar: its label, then the legend
    ax.legend(loc="upper center", ncols=len(series), fontsize=8, frameon=False)


def _rate(per_s: float) -> str:
    return f"{per_s / 1000:.1f}k" if per_s >= 1000 else f"{per_s:,.0f}"


def _slower(pct: float) -> str:
    """A scenario's ``slower_pct`` in words: a negative one (the noise won) as faster."""
    return f"{pct}% slower" if pct >= 0 else f"{-pct}% faster"


def _machine_line(doc: dict[str, Any]) -> str:
    m = doc.get("machine", {})
    try:
        when = datetime.fromisoformat(m["time"]).strftime("%Y-%m-%d %H:%M UTC")
    except (KeyError, ValueError):
        when = "time unknown"
    run = "--quick run" if doc.get("quick") else "full run"
    return (f"{m.get('cores', '?')} cores, Python {m.get('python', '?')}, Ray {m.get('ray', '?')}, "
            f"{m.get('platform', '?')}; {run}, ended {when}")
