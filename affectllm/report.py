"""Human-readable output of a benchmark run: ``report.md`` plus PNG plots (confusion matrix, per-wheel F bars,
modality-ablation deltas) and, for the few samples it shows, each one's cue timeline (``affectllm.timeline``).
matplotlib is optional (``affectllm[plots]``) and imported lazily with the Agg backend, so reports are written
on headless machines; without it the report says the plots were skipped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WHEEL_VARIANTS = ("W1", "W2", "W3", "W4", "W5")
# How many answered samples report.md shows in full (answer, rationale, cue timeline): enough to see what the
# model does with the evidence, few enough that a large run's report stays readable.
SAMPLES_SHOWN = 3


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def plot_confusion(confusion: dict[str, Any], path: Path, title: str) -> Path:
    """Row-normalised confusion matrix (gold rows, predicted columns) with raw counts in the cells."""
    import numpy as np

    plt = _pyplot()
    matrix = np.asarray(confusion["matrix"], dtype=float)
    rows, cols = confusion["rows"], confusion["columns"]
    norm = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.6 * len(cols) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(cols)), labels=cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), labels=rows)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(
                j,
                i,
                str(int(matrix[i, j])),
                ha="center",
                va="center",
                color="white" if norm[i, j] > 0.5 else "black",
                fontsize=8,
            )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of gold row")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def wheel_bars_figure(ew: dict[str, Any], title: str) -> Any:
    """The figure of ``plot_wheel_bars``: bars per wheel and level, dashed lines at each level's 5-wheel mean
    (the headline number), every element named in the legend."""
    import numpy as np

    plt = _pyplot()
    variants = ew.get("variants", {})
    l1 = [variants.get(f"{w}-L1", {}).get("f") or 0.0 for w in WHEEL_VARIANTS]
    l2 = [variants.get(f"{w}-L2", {}).get("f") or 0.0 for w in WHEEL_VARIANTS]
    x = np.arange(len(WHEEL_VARIANTS))
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.bar(x - 0.2, l1, width=0.4, label="level 1", color="C0")
    ax.bar(x + 0.2, l2, width=0.4, label="level 2", color="C1")
    for level, values, offset in (("l1", l1, -0.2), ("l2", l2, 0.2)):
        mean = (ew.get(level) or {}).get("f")
        if mean is not None:
            ax.axhline(
                mean,
                ls="--",
                lw=0.8,
                color="C0" if level == "l1" else "C1",
                label=f"level {level[1]} mean of the 5 wheels ({mean:.2f})",
            )
        for xi, v in zip(x, values, strict=True):
            ax.text(xi + offset, v + 0.01, f"{v:.2f}", ha="center", fontsize=7)
    ax.set_xticks(x, labels=[f"wheel {i}" for i in range(1, 6)])
    ax.set_ylim(0, 1)
    ax.set_ylabel("EW F")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    return fig


def plot_wheel_bars(ew: dict[str, Any], path: Path, title: str) -> Path:
    """EW F per wheel at levels 1 and 2 (the numbers behind the headline 5-wheel mean)."""
    fig = wheel_bars_figure(ew, title)
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path


def plot_ablation(ablation: dict[str, Any], path: Path, title: str) -> Path | None:
    """How much the primary metric drops when each modality's cues are removed (positive = modality helped)."""
    plt = _pyplot()
    items = [(m, v["delta"]) for m, v in ablation.get("modalities", {}).items() if v.get("delta") is not None]
    if not items:
        return None
    names = [m for m, _ in items]
    deltas = [d for _, d in items]
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(items) + 1.6))
    colors = ["C2" if d >= 0 else "C3" for d in deltas]
    ax.barh(names, deltas, color=colors)
    ax.axvline(0, color="black", lw=0.8)
    for i, d in enumerate(deltas):
        ax.text(d, i, f" {d:+.3f}", va="center", ha="left" if d >= 0 else "right", fontsize=8)
    ax.set_xlabel(f"{ablation.get('metric')} {ablation.get('key')}: full − without modality")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def make_plots(metrics: dict[str, Any], out: Path) -> tuple[list[Path], str | None]:
    """All plots that the run's metrics support; returns (files, reason plots were skipped or None)."""
    try:
        _pyplot()
    except ImportError:
        return [], "matplotlib is not installed (pip install 'affectllm[plots]')"
    task = metrics.get("task", "run")
    files: list[Path] = []
    scores = metrics.get("metrics", {})
    for name, result in scores.items():
        confusion = result.get("confusion_matrix") if isinstance(result, dict) else None
        if confusion and confusion.get("matrix"):
            files.append(
                plot_confusion(confusion, out / f"confusion_{name}.png", f"{task}: confusion ({name})")
            )
    ew = scores.get("ew")
    if isinstance(ew, dict) and ew.get("variants"):
        files.append(plot_wheel_bars(ew, out / "ew_wheels.png", f"{task}: EW F per wheel"))
    if metrics.get("ablation"):
        path = plot_ablation(metrics["ablation"], out / "ablation.png", f"{task}: modality ablation")
        if path is not None:
            files.append(path)
    return files, None


def _headline_rows(scores: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(metric, key, value) for the scalar numbers of each metric result, in a stable order."""
    keys_of = {
        "ew": ("l1.f", "l1.p", "l1.r", "l2.f", "m_avg"),
        "closed_set": ("accuracy", "weighted_f1", "macro_f1", "uar", "n"),
        "hit_rate": ("hit_rate", "m_score", "n_gold"),
        "rationale": ("overall.f", "overall.p", "overall.r", "n"),
        "grounding": ("grounding", "hallucinated_cues", "empty_rationales", "n"),
    }
    from affectllm.tasks import dig

    rows = []
    for name, result in scores.items():
        if not isinstance(result, dict):
            continue
        if "error" in result:
            rows.append((name, "error", result["error"]))
            continue
        keys = keys_of.get(name) or [
            k for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
        for key in keys:
            value = dig(result, key)
            if isinstance(value, dict):  # m_avg may itself be a {"f","p","r"} mapping
                value = value.get("f")
            if value is not None:
                rows.append((name, key, value))
    return rows


def _summary_lines(summary: dict[str, Any]) -> list[str]:
    """Beside the headline: the constant-answer floor, answer concentration and cited evidence."""
    if not summary.get("n"):
        return []
    floor = summary.get("floor") or {}
    answer = floor.get("answer")
    answer = ", ".join(answer) if isinstance(answer, list) else answer
    return [
        "| answers | |",
        "|---|---|",
        f"| best constant answer ({answer}) | {_fmt(floor.get('value'))} |",
        f"| emotions per answer | {_fmt(summary.get('labels_per_answer'))} |",
        f"| most frequent answer | `{summary.get('top_answer')}`: {_fmt(summary.get('top_answer_share'))} of answers "
        f"(gold's most frequent: {_fmt(summary.get('gold_top_share'))}) |",
        f"| rationale items citing a shown evidence id | {_fmt(summary.get('cited_share'))} "
        f"of {summary.get('rationale_items')} |",
        "",
    ]


def shown_samples(out: Path, n: int = SAMPLES_SHOWN) -> list[dict[str, Any]]:
    """The records report.md shows: the first ``n`` answered samples of ``predictions.jsonl`` (dataset order)
    that carry their clip, so the timeline draws the evidence the model saw."""
    from affectllm.batch import iter_jsonl_objects

    path = out / "predictions.jsonl"
    if not path.is_file():
        return []
    shown = []
    for _, record in iter_jsonl_objects(path):
        if "error" not in record and isinstance(record.get("clip"), dict):
            shown.append(record)
            if len(shown) == n:
                break
    return shown


def _sample_lines(out: Path, records: list[dict[str, Any]], plots: bool) -> list[str]:
    """One section per shown sample: gold, answer, cited evidence and (with plots) its cue timeline."""
    import re

    from affectllm.schema import Clip, Prediction, RationaleItem
    from affectllm.timeline import render_timeline, ungrounded_ids

    if not records:
        return []
    lines = [
        "",
        "## Samples",
        "",
        f"The first {len(records)} answered samples; highlighted on each timeline are the cues the answer cites.",
    ]
    for number, record in enumerate(records, 1):
        clip = Clip.from_dict(record["clip"])
        prediction = Prediction(
            emotions=list(record.get("emotions") or []),
            rationale=[RationaleItem(**r) for r in record.get("rationale") or []],
            answer=str(record.get("answer") or ""),
            # The parser drops an id the evidence lacks and says so here; the timeline lists it as ungrounded.
            errors=list(record.get("parse_errors") or []),
        )
        gold = record.get("gold") or {}
        gold_text = ", ".join(gold.get("labels") or []) or gold.get("label") or "—"
        lines += [
            "",
            f"### `{record['id']}`",
            "",
            f"- gold: {gold_text}",
            f"- answer: {', '.join(prediction.emotions) or '(none)'}",
        ]
        for item in prediction.rationale:
            lines.append(f"  - {'[' + item.cue_id + '] ' if item.cue_id else ''}{item.cue}")
        missing = ungrounded_ids(clip, prediction)
        if missing:
            lines.append(f"- cited but not in the evidence (ungrounded): {', '.join(missing)}")
        if plots:
            safe_id = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(record["id"]))[:80]
            name = f"timeline_{number}_{safe_id}.png"
            try:
                render_timeline(clip, prediction, path=out / name)
            except Exception as exc:  # a report after a long run must be written even if one drawing fails
                lines.append(f"- timeline not drawn: {type(exc).__name__}: {exc}")
            else:
                lines += ["", f"![timeline of {record['id']}]({name})"]
    return lines


def write_report(out: str | Path, metrics: dict[str, Any] | None = None, plots: bool = True) -> Path:
    """Write ``report.md`` (and the plots) for the run in ``out`` from its ``metrics.json``."""
    out = Path(out)
    if metrics is None:
        metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    files, skipped = make_plots(metrics, out) if plots else ([], "plots disabled")
    run = metrics.get("run", {})
    primary = metrics.get("primary", {})
    lines = [f"# {metrics.get('task')} (v{metrics.get('task_version')})", ""]
    if metrics.get("test_split"):
        lines += [
            f"> **Final evaluation on the held-out test split `{metrics.get('split')}`** (run with `--final`). "
            "Numbers from this run must not be used for model selection.",
            "",
        ]
    lines += [
        "| | |",
        "|---|---|",
        f"| dataset | `{metrics.get('dataset')}` split `{metrics.get('split')}` |",
        f"| backend / model | `{run.get('backend')}` / `{run.get('model')}` |",
        f"| adapter | `{run.get('adapter')}` |",
        f"| samples | {metrics.get('n_samples')} (errors: {metrics.get('n_errors')}, scored as empty answers) |",
        f"| input | source `{run.get('source')}`, modalities {run.get('modalities') or 'all'}, "
        f"dialogue context {'on' if run.get('context') else 'off'} |",
        f"| prompt | task `{run.get('prompt_task')}`, template `{run.get('template') or 'default'}` |",
        f"| limit | {metrics.get('limit') or 'none'} |",
        f"| time | {run.get('seconds')} s, finished {run.get('finished')} |",
        f"| affectllm | {run.get('affectllm')}, task fingerprint `{run.get('task_fingerprint')}` |",
        "",
        f"**Primary:** {primary.get('metric')} `{primary.get('key')}` = **{_fmt(primary.get('value'))}** "
        f"({'higher' if primary.get('higher_is_better', True) else 'lower'} is better)",
        "",
        *_summary_lines(metrics.get("summary") or {}),
        "## Metrics",
        "",
        "| metric | key | value |",
        "|---|---|---|",
    ]
    lines += [
        f"| {name} | {key} | {_fmt(value)} |"
        for name, key, value in _headline_rows(metrics.get("metrics", {}))
    ]
    closed = metrics.get("metrics", {}).get("closed_set")
    if isinstance(closed, dict) and closed.get("labels"):
        source = (
            "the task's label set" if closed.get("label_set") == "given" else "the classes in the gold labels"
        )
        absent = closed.get("classes_without_gold") or []
        lines += [
            "",
            f"Macro F1 and UAR average over the {len(closed['labels'])} classes of {source} "
            f"({', '.join(closed['labels'])}), as scikit-learn does with `labels=`"
            + (f"; classes with no gold sample here score 0 ({', '.join(absent)})." if absent else "."),
        ]
    ew = metrics.get("metrics", {}).get("ew")
    if isinstance(ew, dict) and ew.get("variants"):
        lines += [
            "",
            "### Emotion-wheel variants",
            "",
            "| variant | F | P | R | n |",
            "|---|---|---|---|---|",
        ]
        for variant, v in ew["variants"].items():
            lines.append(
                f"| {variant} | {_fmt(v.get('f'))} | {_fmt(v.get('p'))} | {_fmt(v.get('r'))} | {v.get('n')} |"
            )
        for warning in ew.get("warnings") or []:
            lines.append(f"\n> {warning}")
    ablation = metrics.get("ablation")
    if ablation:
        lines += [
            "",
            "## Modality ablation",
            "",
            f"Same samples re-run with one modality's cues removed; delta = full − without on "
            f"{ablation.get('metric')} `{ablation.get('key')}` (positive: the modality helped).",
            "",
            "| modality | full | without | delta | n |",
            "|---|---|---|---|---|",
        ]
        for modality, v in ablation.get("modalities", {}).items():
            if "skipped" in v:
                lines.append(f"| {modality} | — | — | skipped: {v['skipped']} | — |")
            else:
                lines.append(
                    f"| {modality} | {_fmt(v.get('full'))} | {_fmt(v.get('without'))} | "
                    f"{_fmt(v.get('delta'))} | {v.get('n')} |"
                )
    can_plot = plots and skipped is None
    lines += _sample_lines(out, shown_samples(out), can_plot)
    if metrics.get("failed_ids"):
        shown = ", ".join(metrics["failed_ids"][:20]) + (" ..." if len(metrics["failed_ids"]) > 20 else "")
        lines += ["", "## Failed samples", "", f"See the `error` records in predictions.jsonl: {shown}"]
    lines += ["", "## Plots", ""]
    if files:
        lines += [f"![{f.stem}]({f.name})" for f in files]
    else:
        lines.append(f"No plots ({skipped or 'nothing to plot for these metrics'}).")
    lines += [
        "",
        "Files: `predictions.jsonl` (one record per sample, with the raw model text), `metrics.json`.",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


__all__ = [
    "make_plots",
    "plot_ablation",
    "plot_confusion",
    "plot_wheel_bars",
    "shown_samples",
    "wheel_bars_figure",
    "write_report",
]
