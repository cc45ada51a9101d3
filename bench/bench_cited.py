"""Rationale items whose evidence id is chosen among the prompt's ids (``affectllm.choice.write_rationales``)
against the free rationale the model writes, on the same rows, model and prompts, in one process.

Both ways go through ``EmotionReasoner`` with the task's settings, as ``affectllm eval run`` builds them; the
only difference is ``cite_evidence``. The emotions are the same in both (the rationale is written after them),
so the table compares what citing costs and what it buys: seconds per sample (and the ratio to the free
rationale), rationale items per answer, the share of items that cite an id the prompt shows, and the share of
answers in the contract. The two ways alternate sample by sample, each from an empty llama.cpp KV cache, so a
busy machine slows both alike. A task calibrated by ``label_prior`` is run with ``calibration: none`` here (the
prior needs minutes of fitting and changes only the emotions, which both ways share).

    nice -n 19 python bench/bench_cited.py --task meld-closed-context --data-dir ../shared/data/meld
    nice -n 19 python bench/bench_cited.py --task emodb-speech --data-dir ../shared/data/audio/emodb --rows 6
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _summary(name: str, predictions: list[Any], shown: list[set[str]], seconds: float) -> dict[str, Any]:
    items = [(r, ids) for p, ids in zip(predictions, shown, strict=True) for r in p.rationale]
    cited = sum(bool(r.cue_id and r.cue_id.upper() in ids) for r, ids in items)
    return {
        "rationale": name,
        "s_per_sample": round(seconds / len(predictions), 3),
        "items_per_answer": round(len(items) / len(predictions), 2),
        "cited_share": round(cited / len(items), 3) if items else None,
        "format_ok": round(sum(p.format_ok for p in predictions) / len(predictions), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", default="meld-closed-context")
    parser.add_argument("--data-dir", required=True, help="the task's dataset folder")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: all cores)")
    parser.add_argument("--json", default=None, help="also write the table here")
    args = parser.parse_args()

    from affectllm.prompting import shown_evidence
    from affectllm.reasoner import load_reasoner, model_name
    from affectllm.tasks import build_clip, load_task, task_rows

    task = load_task(args.task)
    options: dict[str, Any] = {"n_threads": args.threads} if args.threads else {}
    reasoner = load_reasoner(task=task, **options)
    if reasoner.settings.calibration == "label_prior":
        reasoner.settings = reasoner.settings.replace(calibration="none")
    backend = reasoner.backend
    rows = task_rows(task, args.data_dir, args.split)[: args.rows]
    clips = [build_clip(row, task) for row in rows]
    shown = [{e.id.upper() for e in shown_evidence(c, reasoner.settings)} for c in clips]
    print(
        f"{task.name}: {backend.name} {model_name(backend)}; {len(clips)} {args.split} rows; decoding "
        f"{reasoner.decoding}; shown ids per prompt {sum(map(len, shown)) / len(shown):.1f}",
        flush=True,
    )

    def fresh_cache() -> None:
        if hasattr(getattr(backend, "llm", None), "reset"):
            backend.llm.reset()

    preds: dict[bool, list[Any]] = {False: [], True: []}
    seconds = {False: 0.0, True: 0.0}
    for i, clip in enumerate(clips):
        for cite in (False, True):
            reasoner.cite_evidence = cite
            fresh_cache()
            started = time.perf_counter()
            preds[cite].append(reasoner.predict(clip))
            seconds[cite] += time.perf_counter() - started
        free, cited = preds[False][-1], preds[True][-1]
        print(
            f"{i + 1}/{len(clips)} {free.emotions} free ids {[r.cue_id for r in free.rationale]} "
            f"cited ids {[r.cue_id for r in cited.rationale]}",
            flush=True,
        )
    same = sum(a.emotions == b.emotions for a, b in zip(preds[False], preds[True], strict=True))
    table = [
        _summary("free", preds[False], shown, seconds[False]),
        _summary("cited by likelihood", preds[True], shown, seconds[True]),
    ]
    print(f"\nsame emotions both ways: {same}/{len(clips)}")
    print(f"{'rationale':20} {'s/sample':>9} {'x free':>7} {'items':>6} {'cited':>6} {'format':>7}")
    for r in table:
        cited_share = "-" if r["cited_share"] is None else f"{r['cited_share']:.3f}"
        print(
            f"{r['rationale']:20} {r['s_per_sample']:9.2f} {r['s_per_sample'] / table[0]['s_per_sample']:7.2f} "
            f"{r['items_per_answer']:6.2f} {cited_share:>6} {r['format_ok']:7.3f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"task": task.name, "table": table}, indent=1) + "\n")
    backend.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
