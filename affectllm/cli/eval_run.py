"""``affectllm eval run --task NAME --data-dir DIR``: run one benchmark task and write a scored, plotted report.

OUT gets ``predictions.jsonl`` (resumable, one record per sample, failures recorded), ``metrics.json`` (the same
top-level keys as ``affectllm eval ov`` for open-vocabulary tasks, plus every metric of the task), ``report.md``
and PNG plots. A held-out test split runs only with ``--final`` and is marked as such in metrics.json and the
report. ``--list`` shows the available tasks.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from affectllm.cli._options import positive_int
from affectllm.cli.chat import add_model_arguments
from affectllm.errors import InputError
from affectllm.settings import CALIBRATION


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run a benchmark task (eval/*.yaml) with a model and write predictions, metrics and a report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", help="task name (see --list) or the path of a task YAML")
    parser.add_argument(
        "--tasks",
        action="append",
        metavar="LIST",
        help="comma-separated tasks, run one after another into OUTPUT/<task>/ with one summary (lm-eval style)",
    )
    parser.add_argument("--list", action="store_true", help="list the available tasks and exit")
    parser.add_argument("--data-dir", help="folder with the dataset's upstream files (see data_cards/)")
    parser.add_argument("--split", help="split to run (default: the task's, a dev split)")
    parser.add_argument(
        "--final", action="store_true", help="allow a held-out test split (final reports only)"
    )
    parser.add_argument(
        "--output-dir",
        "--output_path",
        "-o",
        dest="output_dir",
        help="output folder (default: runs/<task>-<split>)",
    )
    parser.add_argument(
        "--tasks-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="extra folder of task YAMLs (repeatable; also $AFFECTLLM_TASKS_PATH)",
    )
    parser.add_argument(
        "--limit",
        type=parse_limit,
        help="only the first N samples, or a fraction of them (0.1 = the first 10%%)",
    )
    parser.add_argument(
        "--ablate-modalities",
        action="store_true",
        help="re-run the samples with each modality's cues removed and report the deltas",
    )
    parser.add_argument(
        "--cues", help="precomputed cues: JSONL of `affectllm textualize --json` records by clip id"
    )
    parser.add_argument(
        "--batch-size",
        "--batch_size",
        dest="batch_size",
        type=positive_int,
        default=8,
        help="conversations per backend call (default 8)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="discard earlier results in the output folder"
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    parser.add_argument(
        "--calibration",
        choices=CALIBRATION,
        help="closed sets chosen by likelihood: how the label scores are calibrated (default: the task's; "
        "label_prior is fitted on the dataset's train split)",
    )
    # Backend/model options as in chat and predict; the prompt and decoding come from the task YAML, so only
    # explicit --max-tokens/--temperature override it.
    add_model_arguments(parser, prompt_options=False, decoding_defaults=False)
    parser.set_defaults(func=run)


def _list(args: argparse.Namespace) -> int:
    from affectllm.tasks import list_tasks, load_task

    for name, path in sorted(list_tasks(args.tasks_dir or None).items()):
        try:
            task = load_task(str(path))
            print(f"{name:32s} {task.dataset}/{task.split:5s} {task.description}")
        except InputError as exc:
            print(f"{name:32s} INVALID: {exc}")
    return 0


def task_prompt(task: Any, args: argparse.Namespace) -> Any:
    """The task's prompt settings with the run's --decoding and --calibration applied."""
    overrides = {k: v for k, v in (("decoding", args.decoding), ("calibration", args.calibration)) if v}
    return task.prompt.replace(**overrides)


def build_reasoner(task: Any, args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The task's reasoner (its prompt settings, decoding and parser policy) on the backend the options name."""
    from affectllm.cli.chat import chosen_backend
    from affectllm.reasoner import load_reasoner
    from affectllm.tasks import generation_config

    generation = generation_config(task, {"max_new_tokens": args.max_tokens, "temperature": args.temperature})
    reasoner = load_reasoner(
        backend=chosen_backend(args),
        model=args.model,
        adapter=args.adapter,
        base_url=args.base_url,
        api_key_env=args.api_key_env,
        task=task,
        settings=task_prompt(task, args),
        generation=generation,
        few_shot=args.few_shot,
    )
    loaded = reasoner.backend
    identity = {
        "backend": getattr(loaded, "name", args.backend),
        "model": str(getattr(loaded, "model_id", None) or getattr(loaded, "model", None) or args.model),
        "adapter": args.adapter
        or (str(getattr(loaded, "adapter", None)) if getattr(loaded, "adapter", None) else None),
        "few_shot": reasoner.settings.few_shot,
        "decoding": reasoner.decoding,
        "calibration": reasoner.settings.calibration,
        "max_new_tokens": generation.max_new_tokens,
        "temperature": generation.temperature,
    }
    return reasoner, identity


def parse_limit(value: str) -> float:
    """``--limit``: a number of samples (1, 2, ...) or, as lm-eval reads it, a fraction of them (0 < x < 1)."""
    try:
        limit = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not limit > 0 or limit != limit or (limit >= 1 and limit != int(limit)):
        raise argparse.ArgumentTypeError(
            f"{value!r}: a whole number of samples, or a fraction between 0 and 1"
        )
    return limit


def run(args: argparse.Namespace) -> int:
    import math

    from affectllm.report import write_report
    from affectllm.tasks import calibration_rows, dataset_folder, load_task, run_task, task_rows

    if args.list:
        return _list(args)
    names = [
        n.strip()
        for value in ([args.task] if args.task else []) + (args.tasks or [])
        for n in value.split(",")
    ]
    names = [n for n in dict.fromkeys(names) if n]
    if not names:
        raise InputError(None, "--task/--tasks is required (see `affectllm eval run --list`)")
    if not args.data_dir:
        raise InputError(None, "--data-dir is required: the folder with the dataset's upstream files")
    several = len(names) > 1
    plans = []
    # Validate every task and read every dataset first (an unknown split, a test split without --final or a wrong
    # --data-dir fails in seconds, not after a model load).
    for name in names:
        task = load_task(name, args.tasks_dir or None)
        split = args.split or task.split
        # Several tasks read several datasets: each from its folder under --data-dir (as ../shared/data is laid out).
        data_dir = dataset_folder(args.data_dir, task.dataset) if several else Path(args.data_dir)
        rows = task_rows(task, data_dir, split, final=args.final)
        if task_prompt(task, args).uses_label_prior:
            calibration_rows(task, data_dir, 1)  # no labelled train rows: an error before the model loads
        limit = None
        if args.limit is not None:
            limit = math.ceil(args.limit * len(rows)) if args.limit < 1 else int(args.limit)
            rows = rows[:limit]
        base = Path(args.output_dir) if args.output_dir else None
        out = (base / task.name if several else base) if base else Path("runs") / f"{task.name}-{split}"
        plans.append((task, split, data_dir, rows, limit, out))

    def log(message: str) -> None:
        if not args.quiet:
            logging.getLogger(__name__).info(message)

    results = []
    for task, split, data_dir, rows, limit, out in plans:
        reasoner, identity = build_reasoner(task, args)
        try:
            result = run_task(
                task,
                data_dir,
                out,
                reasoner,
                split=split,
                final=args.final,
                limit=limit,
                ablate=args.ablate_modalities,
                batch_size=args.batch_size,
                cues_path=args.cues,
                progress=not args.quiet and sys.stderr.isatty(),
                identity=identity,
                overwrite=args.overwrite,
                log=log,
                rows=rows,
            )
        finally:
            reasoner.backend.close()
        report = write_report(out, result.metrics, plots=not args.no_plots)
        print(headline(task.name, split, result))
        print(f"wrote {out / 'predictions.jsonl'}, {out / 'metrics.json'}, {report}")
        results.append((task, split, out, result))
    if several and args.output_dir:
        summary = write_summary(Path(args.output_dir), results)
        print(f"wrote {summary}")
    return 0


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "–"


def headline(name: str, split: str, result: Any) -> str:
    """One line: the primary metric, the constant-answer floor and how concentrated the answers are."""
    primary = result.metrics["primary"]
    summary = result.metrics.get("summary") or {}
    floor = (summary.get("floor") or {}).get("value")
    return (
        f"{name} [{split}] {primary['metric']} {primary['key']} = {_fmt(primary['value'])}  "
        f"(floor {_fmt(floor)}, top answer {_fmt(summary.get('top_answer_share'))} vs gold "
        f"{_fmt(summary.get('gold_top_share'))}, {_fmt(summary.get('labels_per_answer'))} emotions/answer, "
        f"cited {_fmt(summary.get('cited_share'))}; n={result.n_samples}, errors={result.n_errors})"
    )


def write_summary(out: Path, results: list[tuple[Any, str, Path, Any]]) -> Path:
    """``results.json`` and ``report.md`` over several tasks of one run (lm-eval's one table)."""
    import json

    from affectllm.outputs import atomic_write_text

    table = {}
    lines = ["# affectllm eval run", "", "| task | split | primary | value | floor | top answer | gold top | cited |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for task, split, folder, result in results:
        primary = result.metrics["primary"]
        summary = result.metrics.get("summary") or {}
        table[task.name] = {"split": split, "folder": str(folder), "primary": primary, "summary": summary}
        floor = (summary.get("floor") or {}).get("value")
        lines.append(
            f"| [{task.name}]({folder.name}/report.md) | {split} | {primary['metric']}:{primary['key']} | "
            f"{_fmt(primary['value'])} | {_fmt(floor)} | {_fmt(summary.get('top_answer_share'))} | "
            f"{_fmt(summary.get('gold_top_share'))} | {_fmt(summary.get('cited_share'))} |"
        )
    atomic_write_text(out / "results.json", json.dumps(table, indent=2, default=str) + "\n")
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    return out / "report.md"
