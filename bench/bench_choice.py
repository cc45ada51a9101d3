"""Closed-set answers by free generation against the label picked by likelihood (``affectllm.choice``), raw and
calibrated, on the same rows, model and prompts, in one process.

Default: the embedded default (llama.cpp, Gemma 3 270M with the shipped adapter) on the first 40 MELD dev rows
with two turns of dialogue context. For each way of answering it prints weighted F1, the share of the most
frequent answer (against the gold's), the share of rationale items that cite an evidence id of the prompt, and
seconds per sample, with the ratio to free generation. Two calibrations are compared: the content-free prompt of
``content_free_messages`` (the last user turn replaced by "N/A"; what ``choose_label`` does by default) and the
template's own user turn around an "N/A" clip (``content_free_clip``).

Raw and calibrated choices come from the same scores (one scoring pass per sample); the rationale is generated
after the calibrated choice, so the "likelihood" seconds hold scoring, the cached prior and the rationale. Free
generation and likelihood alternate sample by sample, each from an empty KV cache.

    nice -n 19 python bench/bench_choice.py                      # ~40 MELD dev rows on llama.cpp
    nice -n 19 python bench/bench_choice.py --rows 10 --backend transformers
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]


def _cited_share(predictions: list[Any], clips: list[Any]) -> float | None:
    """Share of rationale items whose id is an evidence id of the clip's prompt."""
    from affectllm.textualize.render import assign_ids

    total = cited = 0
    for pred, clip in zip(predictions, clips, strict=True):
        ids = {cid.upper() for cid, _ in assign_ids(clip.cues)}
        for item in pred.rationale:
            total += 1
            cited += bool(item.cue_id and item.cue_id.upper() in ids)
    return cited / total if total else None


def _row(
    name: str,
    gold: list[str],
    labels: list[str],
    answers: list[str | None],
    seconds: float,
    cited: float | None,
) -> dict[str, Any]:
    from affectllm.metrics.closed import closed_set_scores

    scores = closed_set_scores(references=gold, predictions=answers, labels=labels)
    top, count = Counter(a or "(none)" for a in answers).most_common(1)[0]
    return {
        "decoding": name,
        "weighted_f1": round(scores["weighted_f1"], 4),
        "accuracy": round(scores["accuracy"], 4),
        "top_answer": top,
        "top_share": round(count / len(answers), 3),
        "cited_share": None if cited is None else round(cited, 3),
        "s_per_sample": round(seconds, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "meld"))
    parser.add_argument("--split", default="dev")
    parser.add_argument("--rows", type=int, default=40)
    parser.add_argument("--context-turns", type=int, default=2)
    parser.add_argument("--backend", default=None, help="default: affectllm.models.default_backend()")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: all cores)")
    parser.add_argument("--json", default=None, help="also write the table and per-sample choices here")
    args = parser.parse_args()

    from affectllm.choice import choose_labels, content_free_clip
    from affectllm.clips import clip_from_row
    from affectllm.datasets import get_dataset, load_dataset_rows
    from affectllm.parsing import parse_answer
    from affectllm.prompting import build_messages
    from affectllm.reasoner import default_generation, load_reasoner, model_name
    from affectllm.settings import ClipSettings, PromptSettings

    labels = list(get_dataset("meld").labels or ())
    rows = load_dataset_rows("meld", args.data, args.split, limit=args.rows, context_turns=args.context_turns)
    clip_settings = ClipSettings(source="transcript", context=True)
    clips = [clip_from_row(r, clip_settings) for r in rows]
    gold = [r["label"] for r in rows]
    generation = default_generation("closed", max_new_tokens=args.max_new_tokens)
    options: dict[str, Any] = {"n_threads": args.threads} if args.threads else {}
    reasoner = load_reasoner(
        backend=args.backend,
        settings=PromptSettings(task="closed", labels=tuple(labels)),
        generation=generation,
        **options,
    )
    backend = reasoner.backend
    conversations = [reasoner.messages(c) for c in clips]
    print(
        f"model: {backend.name} {model_name(backend)}; {len(rows)} {args.split} rows; few-shot "
        f"{reasoner.settings.few_shot}; context turns {args.context_turns}",
        flush=True,
    )

    # The prior of the template's own user turn around an "N/A" clip: scored once, applied to the raw scores.
    started = time.perf_counter()
    template_free = build_messages(content_free_clip(), reasoner.settings)
    (template_prior,) = choose_labels(
        backend, [template_free], labels, generation, calibrate=False, explain=False
    )
    prior_s = time.perf_counter() - started

    # Both ways, sample by sample, so a busy machine slows both alike. Each starts from an empty llama.cpp KV
    # cache: otherwise the second would find the first's prompt already evaluated.
    def fresh_cache() -> None:
        if hasattr(getattr(backend, "llm", None), "reset"):
            backend.llm.reset()

    free_preds, choices, like_preds = [], [], []
    free_total = like_total = 0.0
    first_s = None
    for i, (messages, clip) in enumerate(zip(conversations, clips, strict=True)):
        fresh_cache()
        t0 = time.perf_counter()
        text = backend.generate([messages], generation)[0]
        free_total += time.perf_counter() - t0
        free_preds.append(parse_answer(text, clip=clip, labels=labels))
        fresh_cache()
        t0 = time.perf_counter()
        (choice,) = choose_labels(backend, [messages], labels, generation, calibrate=True)
        like_total += time.perf_counter() - t0
        first_s = first_s if first_s is not None else time.perf_counter() - t0  # with the one-off prior
        choices.append(choice)
        like_preds.append(parse_answer(choice.answer_text, clip=clip, labels=labels))
        print(
            f"{i + 1}/{len(rows)} gold {gold[i]:9} free {(free_preds[-1].emotions or ['-'])[0]:9} "
            f"raw {max(labels, key=choice.scores.__getitem__):9} calibrated {choice.label:9}",
            flush=True,
        )
    free_s, like_s = free_total / len(rows), like_total / len(rows)
    print(f"free generation: {free_s:.2f} s/sample", flush=True)
    print(
        f"likelihood (calibrated, with rationale): {like_s:.2f} s/sample (first sample {first_s:.2f} s)",
        flush=True,
    )

    raw = [max(labels, key=c.scores.__getitem__) for c in choices]
    calibrated = [c.label for c in choices]
    in_template = [
        max(labels, key=lambda lab, c=c: c.scores[lab] - template_prior.scores[lab]) for c in choices
    ]
    free_answers = [p.emotions[0] if p.emotions else None for p in free_preds]
    table = [
        _row("free generation", gold, labels, free_answers, free_s, _cited_share(free_preds, clips)),
        _row("likelihood, raw", gold, labels, raw, like_s, None),
        _row(
            "likelihood, calibrated (N/A turn)",
            gold,
            labels,
            calibrated,
            like_s,
            _cited_share(like_preds, clips),
        ),
        _row("likelihood, calibrated (N/A clip)", gold, labels, in_template, like_s, None),
    ]
    gold_top, gold_count = Counter(gold).most_common(1)[0]
    agree = sum(p.emotions == [c.label] for p, c in zip(like_preds, choices, strict=True))
    print(
        f"\ngold: most frequent {gold_top!r} {gold_count / len(gold):.3f}; parsed labels agree with the choice: "
        f"{agree}/{len(choices)}; template prior scored in {prior_s:.2f} s"
    )
    header = (
        f"{'decoding':36} {'wF1':>6} {'acc':>6} {'top answer':>12} {'share':>6} {'cited':>6} {'s/sample':>9}"
    )
    print(header + f" {'x free':>7}")
    for r in table:
        cited = "-" if r["cited_share"] is None else f"{r['cited_share']:.3f}"
        print(
            f"{r['decoding']:36} {r['weighted_f1']:6.3f} {r['accuracy']:6.3f} {r['top_answer']:>12} "
            f"{r['top_share']:6.3f} {cited:>6} {r['s_per_sample']:9.2f} {r['s_per_sample'] / free_s:7.2f}"
        )
    if args.json:
        per_sample = [
            {"id": row["id"], "gold": g, "free": f, **c.to_dict()}
            for row, g, f, c in zip(rows, gold, free_answers, choices, strict=True)
        ]
        Path(args.json).write_text(json.dumps({"table": table, "samples": per_sample}, indent=1) + "\n")
    backend.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
