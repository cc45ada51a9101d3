#!/usr/bin/env python
"""One LoRA SFT forward+backward three ways: answer-span logits (affectllm's CPU loss), full logits, trl's
fused head — on the embedded Gemma 3 270M (or ``--model DIR``), with the same rows and the same LoRA.

    python bench/bench_sft_step.py                       # 2 rows x 300 tokens, 50 answer tokens each
    python bench/bench_sft_step.py --rows 8 --tokens 320 --answer 60 --repeats 3

Prints the median seconds of each and the ratio of each baseline to the answer-span loss, plus the largest
difference between the three losses (they compute the same quantity).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--rows", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--answer", type=int, default=50, help="answer tokens per row (the rest is prompt)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from affectllm.training.common import resolve_model_path

    if args.threads:
        torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(args.model), dtype=torch.float32)
    add_fused_lm_head(model)  # the head trl's SFTTrainer installs; plain calls keep the original forward
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, target_modules=targets, task_type="CAUSAL_LM")
    )
    torch.manual_seed(0)
    input_ids = torch.randint(10, 20000, (args.rows, args.tokens))
    labels = input_ids.clone()
    labels[:, : args.tokens - args.answer] = -100
    first = args.tokens - args.answer - 1  # the position whose logits predict the first answer token

    def answer_span() -> torch.Tensor:
        logits = model(input_ids=input_ids, logits_to_keep=args.answer + 1).logits[:, :-1].float()
        return torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), labels[:, first + 1 :].reshape(-1), ignore_index=-100
        )

    def full_logits() -> torch.Tensor:
        return model(input_ids=input_ids, labels=labels).loss

    def trl_fused() -> torch.Tensor:
        out = model(input_ids=input_ids, labels=labels, fused_lm_head=True)
        return -out.log_probs.sum() / out.label_mask.sum()

    results: dict[str, tuple[float, float]] = {}
    for name, step in (("answer-span", answer_span), ("full logits", full_logits), ("trl fused", trl_fused)):
        times, loss = [], 0.0
        for _ in range(args.repeats + 1):  # the first call warms up allocators and kernels
            model.zero_grad(set_to_none=True)
            start = time.perf_counter()
            value = step()
            value.backward()
            times.append(time.perf_counter() - start)
            loss = float(value)
        results[name] = (statistics.median(times[1:]), loss)
    base = results["answer-span"][0]
    print(
        f"{args.rows} rows x {args.tokens} tokens ({args.answer} answer), torch threads {torch.get_num_threads()}"
    )
    for name, (seconds, loss) in results.items():
        print(f"{name:12s} {seconds:7.2f} s/step  loss {loss:.5f}  x{seconds / base:.2f} of answer-span")
    losses = [loss for _, loss in results.values()]
    print(f"largest loss difference: {max(losses) - min(losses):.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
