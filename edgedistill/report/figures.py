"""Report figures as inline SVG (matplotlib, headless): nothing is fetched when the report opens."""

from __future__ import annotations

import io
import re

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _color(fmt: str) -> str:
    from edgedistill.export.formats import FORMATS

    return FORMATS[fmt].color if fmt in FORMATS else "grey"


def _svg(fig) -> str:
    """The figure as an <svg> element, without the XML prolog and DOCTYPE (they name external URLs)."""
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def _figure(width=8.5, height=4.2):
    import matplotlib

    matplotlib.use("Agg")  # headless: no display, no GUI toolkit
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "none"  # text stays text: smaller, selectable
    return plt.subplots(figsize=(width, height))


def _plain(text: str) -> str:
    """A name from a file or folder ('run$1', 'a_$b^2$') drawn as written: matplotlib reads text between two
    '$' as TeX math, and an escaped '$' is a dollar sign. (Its own log-scale tick labels need math on.)"""
    return str(text).replace("$", r"\$")


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not beaten on both lower latency and higher accuracy."""
    front = []
    for i, (lat, acc) in enumerate(points):
        if not any((l2 <= lat and a2 >= acc) and (l2 < lat or a2 > acc) for j, (l2, a2) in enumerate(points) if j != i):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def accuracy_latency(results: dict) -> str | None:
    """Each benchmarked artifact's p90 latency against its accuracy, budget lines, Pareto front marked."""
    arts = [a for a in results["artifacts"] if a.get("latency_ms") and a.get("accuracy") is not None]
    if not arts:
        return None
    fig, ax = _figure()
    points = [(a["latency_ms"]["p90"], a["accuracy"] * 100) for a in arts]
    front = pareto_front(points)
    # Nearby points would pile their labels into one smear: each artifact gets a marker (its precision) and a
    # colour (its format), and the legend names them.
    precisions = sorted({a["precision"] for a in arts})
    for i, (a, (lat, acc)) in enumerate(zip(arts, points)):
        ax.scatter(lat, acc, s=70, color=_color(a["format"]), marker=MARKERS[precisions.index(
            a["precision"]) % len(MARKERS)], edgecolor="black" if i in front else "none", linewidth=1.5, zorder=3,
            label=_plain(f"{a['format']} {a['precision']}"))
    if len(front) > 1:
        ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "k--", linewidth=0.8,
                label="Pareto front")
    budgets, teacher = results["budgets"], results.get("teacher")
    if budgets.get("max_latency_p90_ms") is not None:
        ax.axvline(budgets["max_latency_p90_ms"], color="red", linestyle=":", label="p90 budget")
    floor = (teacher["accuracy"] - budgets["max_accuracy_drop"]) * 100 \
        if budgets.get("max_accuracy_drop") is not None and teacher else None
    if floor is not None and floor > 0:  # a floor at or below 0 % bounds nothing and would squash the axis
        ax.axhline(floor, color="purple", linestyle=":", label="accuracy floor")
    _log_x(ax, "p90 latency (ms, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.grid(alpha=0.3)
    return _svg(fig)


def _log_x(ax, label: str) -> None:
    """A log x axis labelled in plain numbers at 1, 2 and 5 of each decade (at each decade over a wide range), and
    no minor labels: within one decade matplotlib labels its minor ticks too (2×10⁻¹, 3×10⁻¹, ...), and they
    overlap. Called once the data is drawn."""
    import math

    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    low, high = ax.get_xlim()  # after the data is drawn: 1-2-5 ticks over a few decades, decades alone over more
    few = math.log10(high / low) <= 2.5 if low > 0 and high > low else True
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if few else (1.0,), numticks=12))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(label)


def size_bars(results: dict) -> str | None:
    arts = [a for a in results["artifacts"] if a.get("bytes")]
    if not arts:
        return None
    fig, ax = _figure(height=0.5 + 0.4 * len(arts))
    labels = [_plain(f"{a['format']} {a['precision']}") for a in arts]
    sizes = [a["bytes"] / 2**20 for a in arts]
    ax.barh(labels, sizes, color=[_color(a["format"]) for a in arts])
    limit = results["budgets"].get("max_model_mb")
    if limit is not None:
        ax.axvline(limit, color="red", linestyle=":", label=f"size budget {limit:g} MB")
        ax.legend(fontsize=8)
    _log_x(ax, "size (MB, log scale)")
    ax.invert_yaxis()
    return _svg(fig)


def training_curves(results: dict) -> str | None:
    training = {name: history for name, history in (results.get("training") or {}).items()
                if history and all("val_accuracy" in h for h in history)}  # a causal LM's loop has no validation
    if not training.get("teacher") and not training.get("distill"):
        return None
    fig, ax = _figure()
    for name, history, style in (("teacher", training.get("teacher"), "-"), ("student", training.get("distill"), "-")):
        if history:
            ax.plot([h["epoch"] for h in history], [h["val_accuracy"] * 100 for h in history], style, label=name)
    phases = ((results.get("distillation") or {}).get("phases")) or []
    shades = {"warmup": "#fde0c5", "distill": "#d9ead3", "finetune": "#cfe2f3"}
    if len(phases) > 1:
        for p in phases:
            ax.axvspan(p["epochs"][0] - 0.5, p["epochs"][1] + 0.5, color=shades.get(p["name"], "#eeeeee"), alpha=0.6,
                       label=f"phase: {p['name']}")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return _svg(fig)


def latency_distributions(samples: dict[str, list[float]]) -> str | None:
    """Box plots of the timed runs of each artifact (from the runner's samples)."""
    samples = {k: v for k, v in samples.items() if v}
    if not samples:
        return None
    fig, ax = _figure(height=0.6 + 0.45 * len(samples))
    import matplotlib

    # `orientation` arrived in matplotlib 3.10 and `vert` is deprecated from 3.11; older ones know only `vert`.
    newer = tuple(int(p) for p in matplotlib.__version__.split(".")[:2]) >= (3, 10)
    horizontal = {"orientation": "horizontal"} if newer else {"vert": False}
    ax.boxplot(list(samples.values()), showfliers=True, flierprops={"markersize": 2}, **horizontal)
    ax.set_yticks(range(1, len(samples) + 1), [_plain(name) for name in samples])
    _log_x(ax, "latency per inference (ms, log scale)")
    ax.invert_yaxis()
    return _svg(fig)


def has_external_reference(svg: str) -> bool:
    """True if the SVG would fetch something (href/src to a URL); xmlns declarations are not fetches."""
    return bool(re.search(r"(?:href|src)\s*=\s*[\"'](?:https?:)?//", svg))
