"""Open-vocabulary answers by free generation (the earlier default) against likelihood decoding (the default
since stage 5c: candidate words ranked by their probability as the answer, several kept), on the same rows,
model and prompts, in one process.

Default: the embedded default (llama.cpp, Gemma 3 270M with the shipped adapter) on the first 16 OV-MERD dev
rows that have an English subtitle, with the ``ovmerd-ov-subtitle`` task's prompt. For each way it prints
seconds per answer (with the rationale), the ratio to free generation, emotions per answer and EW level-1 F on
those rows. The two alternate sample by sample, each from an empty KV cache, so a busy machine slows both alike
and neither finds the other's prompt already evaluated.

    nice -n 19 python bench/bench_ov_decoding.py               # ~2 min on 2 cores
    nice -n 19 python bench/bench_ov_decoding.py --rows 40 --json out.json
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

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--backend", default=None, help="default: affectllm.models.default_backend()")
    parser.add_argument("--json", default=None, help="also write the table and per-sample answers here")
    args = parser.parse_args()

    from affectllm.errors import InputError
    from affectllm.metrics.ov import score_ov
    from affectllm.reasoner import EmotionReasoner, load_reasoner
    from affectllm.tasks import build_clip, load_task, task_rows

    task = load_task("ovmerd-ov-subtitle")
    rows, clips = [], []
    for row in task_rows(task, args.data):
        try:
            clips.append(build_clip(row, task))
        except InputError:  # no English subtitle: the task scores it as an empty answer, nothing to time
            continue
        rows.append(row)
        if len(rows) == args.rows:
            break
    ranked = load_reasoner(
        backend=args.backend, task=task, settings=task.prompt.replace(decoding="likelihood")
    )
    backend = ranked.backend
    generated = EmotionReasoner(
        backend,
        task.prompt.replace(decoding="generate", few_shot=ranked.settings.few_shot),
        ranked.generation,
    )

    def fresh_cache() -> None:
        if hasattr(getattr(backend, "llm", None), "reset"):
            backend.llm.reset()

    ways: dict[str, dict[str, Any]] = {
        name: {"reasoner": r, "seconds": 0.0, "answers": {}}
        for name, r in (("free generation", generated), ("likelihood", ranked))
    }
    for i, (row, clip) in enumerate(zip(rows, clips, strict=True)):
        line = [f"{i + 1}/{len(rows)} gold {', '.join(row['labels'])}"]
        for name, way in ways.items():
            fresh_cache()
            started = time.perf_counter()
            prediction = way["reasoner"].predict(clip)
            way["seconds"] += time.perf_counter() - started
            way["answers"][row["id"]] = prediction.emotions
            line.append(f"{name}: {', '.join(prediction.emotions) or '-'}")
        print(" | ".join(line), flush=True)

    gold = {row["id"]: row["labels"] for row in rows}
    base_s = ways["free generation"]["seconds"] / len(rows)
    print(f"\n{len(rows)} OV-MERD dev rows; {backend.name}, few-shot {ranked.settings.few_shot}")
    print(f"{'decoding':18} {'s/answer':>9} {'x free':>7} {'emotions':>9} {'EW L1 F':>8}")
    table = []
    for name, way in ways.items():
        scores = score_ov(references=gold, predictions=way["answers"], floor=False)
        per_answer = sum(len(v) for v in way["answers"].values()) / len(rows)
        seconds = way["seconds"] / len(rows)
        table.append(
            {
                "decoding": name,
                "s_per_answer": seconds,
                "emotions_per_answer": per_answer,
                "l1_f": scores["l1"]["f"],
            }
        )
        print(f"{name:18} {seconds:9.2f} {seconds / base_s:7.2f} {per_answer:9.2f} {scores['l1']['f']:8.3f}")
    if args.json:
        answers = {name: way["answers"] for name, way in ways.items()}
        record = {
            "command": "python " + " ".join(sys.argv),
            "rows": len(rows),
            "table": table,
            "answers": answers,
        }
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
    backend.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
