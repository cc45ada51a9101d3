#!/usr/bin/env python
"""Benchmark: the integer-id EW scorer against a plain per-sample string implementation, in one run.

Generates seeded synthetic gold/prediction label lists (words from the real vocabulary plus out-of-vocabulary
words, list lengths varying), scores all 12 variants with ``affectllm.metrics.ov.score_ov`` and with a
straightforward statement of the official algorithm (string sets, one mapping call per label, per variant),
asserts the numbers are identical and prints both times and the ratio.

    python bench/bench_ew.py                    # 100,000 samples x 12 variants, tables 2025
    python bench/bench_ew.py --samples 20000 --version 2026
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time

import numpy as np

from affectllm.metrics.ov import score_ov
from affectllm.resources import data_path
from affectllm.wheel import VARIANTS, _compile, load_emotion_wheels

OOV_WORDS = ["neutral", "unsure", "hmm", "n/a", "mixed feelings", "blank", "speechless-ish", "meh"] + [
    f"madeupword{i}" for i in range(40)
]


# ---------------------------------------------------------------- the plain implementation (baseline)
class PlainEW:
    """The official algorithm with plain dicts of strings, mapping every label of every sample per variant."""

    def __init__(self, version: str) -> None:
        def load(name: str) -> dict:
            return json.loads(data_path("ew", name).read_text(encoding="utf-8"))

        self.format_mapping: dict[str, list[str]] = {}
        for name, forms in load(f"format_{version}.json")["rows"]:
            for form in forms:
                self.format_mapping.setdefault(form, []).append(name)
            self.format_mapping.setdefault(name, []).append(name)
        self.raw_mapping: dict[str, list[str]] = load("synonyms.json")["synonyms"]
        self.wheel_maps: dict[str, dict[str, str]] = {}
        for k, rows in enumerate(load("wheels.json")["wheels"].values(), start=1):
            tree: dict[str, dict[str, list[str]]] = {}
            for level1, level2, level3 in rows:
                tree.setdefault(level1, {}).setdefault(level2, []).append(level3)
            by_level1, by_level2 = {}, {}
            for level1, children in tree.items():
                by_level1[level1] = level1
                by_level2[level1] = sorted(children)[0]
                for level2, leaves in children.items():
                    by_level1[level2] = level1
                    by_level2[level2] = level2
                    for level3 in leaves:
                        by_level1[level3] = level1
                        by_level2[level3] = level2
            self.wheel_maps[f"W{k}-L1"] = by_level1
            self.wheel_maps[f"W{k}-L2"] = by_level2

    def map_label(self, label: str, variant: str) -> str:
        if label not in self.format_mapping:
            return ""
        if variant == "M1":
            return sorted(self.format_mapping[label])[0]
        if variant == "M2":
            return sorted(self.raw_mapping[sorted(self.format_mapping[label])[0]])[0]
        wheel_map = self.wheel_maps[variant]
        candidates = [raw for base in self.format_mapping[label] for raw in self.raw_mapping[base]]
        for candidate in sorted(candidates):
            if candidate in wheel_map:
                return wheel_map[candidate]
        return ""

    def score(self, gold: dict[str, list[str]], pred: dict[str, list[str]]) -> dict[str, dict[str, float]]:
        out = {}
        for variant in VARIANTS:
            precision, recall = [], []
            for name, gold_labels in gold.items():
                g = {m for m in (self.map_label(x.lower().strip(), variant) for x in gold_labels) if m}
                p = {m for m in (self.map_label(x.lower().strip(), variant) for x in pred.get(name, [])) if m}
                if not g:
                    continue
                if not p:
                    precision.append(0)
                    recall.append(0)
                else:
                    precision.append(len(g & p) / len(p))
                    recall.append(len(g & p) / len(g))
            p_mean, r_mean = float(np.mean(precision)), float(np.mean(recall))
            f = 2 * p_mean * r_mean / (p_mean + r_mean) if p_mean + r_mean > 0 else 0.0
            out[variant] = {"f": f, "p": p_mean, "r": r_mean, "n": len(precision)}
        return out


# ---------------------------------------------------------------- data and run
def synthetic(n: int, version: str, seed: int) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    rng = random.Random(seed)
    vocabulary = load_emotion_wheels(version).vocabulary
    # Gold draws from a smaller pool (annotators reuse common words); predictions from the whole vocabulary.
    gold_pool = rng.sample(vocabulary, 400) + OOV_WORDS[:4]
    pred_pool = vocabulary + OOV_WORDS

    def draw(pool: list[str], low: int, high: int) -> list[str]:
        return [rng.choice(pool) for _ in range(rng.randint(low, high))]

    gold = {f"s{i:06d}": draw(gold_pool, 1, 6) for i in range(n)}
    pred = {f"s{i:06d}": draw(pred_pool, 0, 8) for i in range(n)}
    return gold, pred


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--version", default="2025", choices=("2025", "2026"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="fast-path runs; the median is reported")
    args = parser.parse_args(argv)

    gold, pred = synthetic(args.samples, args.version, args.seed)
    n_labels = sum(map(len, gold.values())) + sum(map(len, pred.values()))
    print(f"{args.samples:,} samples ({n_labels:,} labels) x {len(VARIANTS)} variants, tables {args.version}")

    start = time.perf_counter()
    _compile(args.version)  # what the first load_emotion_wheels() call in a process costs
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(max(1, args.repeat)):
        start = time.perf_counter()
        fast = score_ov(references=gold, predictions=pred, version=args.version, floor=False)["variants"]
        times.append(time.perf_counter() - start)
    fast_s = statistics.median(times)

    start = time.perf_counter()
    plain_ew = PlainEW(args.version)
    plain_setup_s = time.perf_counter() - start
    start = time.perf_counter()
    plain = plain_ew.score(gold, pred)
    plain_s = time.perf_counter() - start

    mismatches = [v for v in VARIANTS if fast[v] != plain[v]]
    if mismatches:
        for variant in mismatches:
            print(f"MISMATCH {variant}: fast {fast[variant]} plain {plain[variant]}", file=sys.stderr)
        return 1
    print(f"identical numbers on all {len(VARIANTS)} variants (f, p, r, n compared exactly)")
    print(f"  W1-L1: f={fast['W1-L1']['f']:.6f} p={fast['W1-L1']['p']:.6f} r={fast['W1-L1']['r']:.6f}")
    print(
        f"fast  (integer ids, numpy): {fast_s:8.3f} s   (median of {len(times)}; "
        f"+ {compile_s:.3f} s one-off table compile per process)"
    )
    print(f"plain (per-sample strings): {plain_s:8.3f} s   (+ {plain_setup_s:.3f} s building its dicts)")
    print(f"speed-up: {plain_s / fast_s:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
