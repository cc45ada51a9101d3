"""GRPO over emotion sets drawn from the candidate likelihoods that ranked decoding reads.

Ranked decoding (``affectllm.choice``) names every candidate word whose probability as the answer is close to
the best one's. GRPO on generated answers (``affectllm.training.grpo``) maximises the reward of one sampled
answer, which a policy sure of one word does best: on the embedded model it sharpened exactly the distribution
ranked decoding reads, and cost 7.3 points of EW level-1 F on OV-MERD dev (docs/training.md, stage 5c). Here
the policy *is* that distribution,

    pi(w | x) = softmax over the candidates of log p(w"], | prompt x + answer prefix),

scored as ranked decoding scores it (``continuation_token_logprobs``). A rollout is an emotion set formed as
ranked decoding forms one, made stochastic (``rollouts.size: ratio``): words in Plackett-Luce order (drawn
without replacement, by the Gumbel top-k trick), each next word joining with probability
sigmoid((log pi(w) - log pi(first) - log min_ratio) / softness), until one is refused or ``max_emotions`` is
reached. So how many emotions an answer names is a decision of the policy, taken on the same probability ratio
the decoder thresholds, and the reward can teach it. (``rollouts.size: uniform`` draws the size blind to the
policy instead.) A rollout's log-probability is exact and differentiable. The recipe's set rewards (``ew_f1``,
``ew_hit``, ``label_count``, ``accuracy``) score the answer each set makes, advantages are normalised within
each prompt's group as in GRPO, and an exact KL(pi || pi_ref) over the candidates to the starting adapter
(``beta``) keeps the policy near its SFT start. Each batch of rollouts is used for one gradient step,
on-policy, so the importance ratio is 1 and there is nothing to clip.

Only open-vocabulary prompts take part: a closed label set is decoded by generation (``decoding: auto``).
"""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from affectllm.errors import InputError
from affectllm.rewards import RewardSpec, reward_columns, score_completions

if TYPE_CHECKING:
    from affectllm.training.common import TrainResult
    from affectllm.training.config import GRPORecipe, RolloutArgs

log = logging.getLogger(__name__)

# GRPOConfig arguments this trainer reads; the rest of GRPOConfig's own arguments (generation, clipping, vLLM)
# describe generated rollouts and are refused, so a recipe cannot believe it set something that is ignored.
GRPO_KEYS = {"num_generations": 8, "beta": 0.0, "temperature": 1.0, "scale_rewards": "group"}


def split_trainer_args(args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(TrainingArguments keywords, the GRPO settings above with defaults filled); other GRPOConfig-only
    keys raise InputError."""
    import dataclasses

    import transformers

    plain = {f.name for f in dataclasses.fields(transformers.TrainingArguments)}
    grpo = dict(GRPO_KEYS)
    training: dict[str, Any] = {}
    refused = []
    for key, value in args.items():
        if key in GRPO_KEYS:
            grpo[key] = value
        elif key in plain:
            training[key] = value
        else:
            refused.append(key)
    if refused:
        raise InputError(
            None,
            f"trainer: {sorted(refused)} configure generated rollouts; candidate-set rollouts read only "
            f"{sorted(GRPO_KEYS)} besides the Trainer's own arguments",
        )
    if int(grpo["num_generations"]) < 2:
        raise InputError(None, "trainer.num_generations must be at least 2: advantages compare a group")
    if str(grpo["scale_rewards"]).lower() not in ("group", "batch", "none", "true", "false"):
        raise InputError(
            None, f"trainer.scale_rewards: expected group, batch or none, not {grpo['scale_rewards']!r}"
        )
    if float(grpo["temperature"]) <= 0:
        raise InputError(None, "trainer.temperature must be positive")
    # The rows carry messages and gold lists, not tensors: the Trainer must hand them over untouched.
    training["remove_unused_columns"] = False
    return training, grpo


def prompt_ids(tokenizer: Any, messages: Sequence[dict[str, Any]]) -> list[int]:
    """The token ids ranked decoding scores candidates after: the chat prompt, then the answer's opening."""
    from affectllm.backends.base import text_only
    from affectllm.choice import ANSWER_PREFIX
    from affectllm.prompting import build_prompt_text

    text = build_prompt_text(text_only(messages), tokenizer) + ANSWER_PREFIX
    # The chat template writes its own BOS (as the transformers backend does when it scores).
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def candidate_ids(tokenizer: Any, words: Sequence[str]) -> list[list[int]]:
    """Each candidate's scored tokens (``LABEL"],``), tokenized as ranked decoding tokenizes them."""
    from affectllm.choice import label_continuation

    ids = [list(tokenizer(label_continuation(w), add_special_tokens=False)["input_ids"]) for w in words]
    if any(not i for i in ids):
        raise InputError(None, "a candidate word has no tokens")
    return ids


def gumbel_order(log_pi: Any, generator: Any) -> list[int]:
    """Every candidate index in a random order whose first m entries are distributed as m draws from
    ``log_pi`` without replacement (Plackett-Luce), by the Gumbel top-k trick."""
    import torch

    uniform = torch.rand(log_pi.shape, generator=generator).clamp_(1e-12, 1 - 1e-12)
    return torch.argsort(log_pi.detach() - torch.log(-torch.log(uniform)), descending=True).tolist()


def sample_sets(log_pi: Any, sizes: Sequence[int], generator: Any) -> list[list[int]]:
    """Sets of ``sizes[i]`` candidate indices drawn from ``log_pi`` without replacement, in draw order."""
    return [gumbel_order(log_pi, generator)[:m] for m in sizes]


def plackett_luce_logprob(log_pi: Any, order: Sequence[int]) -> Any:
    """log P(drawing ``order`` in that order without replacement) under ``log_pi`` (differentiable)."""
    import torch

    total = log_pi.new_zeros(())
    for step, index in enumerate(order):
        # A fresh mask per draw: autograd keeps each one for the backward pass.
        remaining = torch.ones_like(log_pi, dtype=torch.bool)
        remaining[list(order[:step])] = False
        total = total + log_pi[index] - torch.logsumexp(log_pi[remaining], dim=0)
    return total


def acceptance_logits(
    log_pi: Any, first: int, others: Sequence[int], min_ratio: float, softness: float
) -> Any:
    """Logits of each word in ``others`` joining a set that starts with ``first``: positive when its
    probability is above ``min_ratio`` times the first word's, as ranked decoding's rule, softened by
    ``softness`` (in nats) so the rollouts explore both sides of the threshold."""
    import torch

    rest = log_pi[list(others)]
    return (rest - log_pi[first] - math.log(min_ratio)) / softness if len(others) else torch.zeros(0)


def sample_ratio_sets(
    log_pi: Any, n: int, max_emotions: int, min_ratio: float, softness: float, generator: Any
) -> list[tuple[list[int], int]]:
    """``n`` rollouts as ranked decoding forms a set, made stochastic: words in Plackett-Luce order, each next
    word joining with probability sigmoid(acceptance logit) until one is refused or ``max_emotions`` is
    reached. Each rollout is (the words drawn, including a refused one; how many joined)."""
    import torch

    out = []
    for _ in range(n):
        order = gumbel_order(log_pi, generator)
        joined = 1
        while joined < max_emotions:
            logit = acceptance_logits(log_pi.detach(), order[0], [order[joined]], min_ratio, softness)[0]
            if float(torch.rand((), generator=generator)) >= float(torch.sigmoid(logit)):
                break
            joined += 1
        drawn = order[: min(joined + 1, max_emotions)]
        out.append((drawn, joined))
    return out


def ratio_set_logprob(
    log_pi: Any, drawn: Sequence[int], joined: int, min_ratio: float, softness: float
) -> Any:
    """log P of one :func:`sample_ratio_sets` rollout: the Plackett-Luce draws, each accepted word's
    acceptance, and the refusal of the last drawn word when fewer than all words joined (differentiable)."""
    import torch.nn.functional as F

    total = plackett_luce_logprob(log_pi, drawn)
    logits = acceptance_logits(log_pi, drawn[0], drawn[1:], min_ratio, softness)
    accepted = logits[: joined - 1]
    total = total + F.logsigmoid(accepted).sum()
    if len(drawn) > joined:
        total = total + F.logsigmoid(-logits[joined - 1])
    return total


def group_advantages(rewards: Any, scale: str, batch_std: Any = None) -> Any:
    """GRPO's advantages: reward minus the group mean, divided by the group's std (``scale`` group), by
    ``batch_std``, the std of every reward in the batch (``scale`` batch), or left unscaled (none)."""
    centred = rewards - rewards.mean()
    if scale == "batch":
        return centred / (batch_std + 1e-4) if batch_std is not None else centred
    if scale in ("group", "true") and rewards.numel() > 1:
        return centred / (rewards.std() + 1e-4)
    return centred


def set_answer(words: Sequence[str]) -> str:
    """The contract answer a set makes (no rationale), which the recipe's rewards parse."""
    from affectllm.prompting import format_answer

    return format_answer(list(words), [])


def candidate_grpo_trainer_class():
    """A ``transformers.Trainer`` whose loss is GRPO over candidate sets (module docstring)."""
    import torch
    from transformers import Trainer

    from affectllm.backends.hf import continuation_token_logprobs
    from affectllm.choice import likely_set

    class CandidateGRPOTrainer(Trainer):
        def __init__(
            self,
            *args: Any,
            rewards: Sequence[RewardSpec],
            candidates: Sequence[str],
            rollouts: RolloutArgs,
            grpo: dict[str, Any],
            reference_adapter: bool,
            **kwargs: Any,
        ) -> None:
            super().__init__(*args, **kwargs)
            self.reward_specs = list(rewards)
            self.reward_columns = sorted(reward_columns(self.reward_specs))
            self.words = list(candidates)
            self.word_ids = candidate_ids(self.processing_class, self.words)
            self.rollouts = rollouts
            self.num_generations = int(grpo["num_generations"])
            self.beta = float(grpo["beta"])
            self.temperature = float(grpo["temperature"])
            self.scale = str(grpo["scale_rewards"]).lower()
            self.reference_adapter = reference_adapter
            self.pad_id = self.processing_class.pad_token_id or 0
            # Each process draws its own sets (the same seed everywhere would correlate their rollouts).
            self.generator = torch.Generator().manual_seed(int(self.args.seed) + self.args.process_index)
            self._reference: dict[str, Any] = {}  # row id -> the starting policy's candidate log-probs
            self._metrics: dict[str, list[float]] = defaultdict(list)

        # --------------------------------------------------------------------------------- scoring
        def _candidate_logp(self, model: Any, ids: list[int]) -> Any:
            per_token = continuation_token_logprobs(model, ids, self.word_ids, pad_id=self.pad_id)
            return torch.stack([t.sum() for t in per_token])

        def _reference_logp(self, key: str, ids: list[int]) -> Any:
            """The starting policy's candidate scores for this prompt, computed once (in eval mode: no
            dropout) and kept, since the reference never changes."""
            if key in self._reference:
                return self._reference[key]
            model = self.accelerator.unwrap_model(self.model)
            was_training = model.training
            model.eval()
            try:
                with torch.no_grad():
                    if self.reference_adapter:
                        model.set_adapter("reference")
                        try:
                            scores = self._candidate_logp(model, ids)
                        finally:
                            model.set_adapter("default")
                    else:
                        with model.disable_adapter():
                            scores = self._candidate_logp(model, ids)
            finally:
                model.train(was_training)
            self._reference[key] = scores.detach()
            return self._reference[key]

        # -------------------------------------------------------------------------------- rollouts
        def _rollouts(self, log_pi: Any) -> tuple[list[list[int]], Any]:
            """The prompt's emotion sets and their log-probabilities under the policy."""
            rollouts = self.rollouts
            if rollouts.size == "uniform":
                sizes = torch.randint(
                    1, rollouts.max_emotions + 1, (self.num_generations,), generator=self.generator
                )
                sets = sample_sets(log_pi, sizes.tolist(), self.generator)
                return sets, torch.stack([plackett_luce_logprob(log_pi, s) for s in sets])
            drawn = sample_ratio_sets(
                log_pi,
                self.num_generations,
                rollouts.max_emotions,
                rollouts.min_ratio,
                rollouts.softness,
                self.generator,
            )
            logps = [ratio_set_logprob(log_pi, d, j, rollouts.min_ratio, rollouts.softness) for d, j in drawn]
            return [d[:j] for d, j in drawn], torch.stack(logps)

        # ------------------------------------------------------------------------------------ loss
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            rows = inputs["rows"]
            per_prompt = []
            for row in rows:
                ids = prompt_ids(self.processing_class, row["prompt"])
                log_pi = torch.log_softmax(self._candidate_logp(model, ids) / self.temperature, dim=0)
                sets, set_logp = self._rollouts(log_pi)
                answers = [set_answer([self.words[i] for i in s]) for s in sets]
                columns = {k: [row.get(k)] * len(answers) for k in self.reward_columns}
                totals = score_completions(answers, self.reward_specs, **columns)["total"]
                if any(t is None for t in totals):
                    continue  # no reward applies to this row (gold outside the wheels)
                rewards = torch.tensor(totals, dtype=log_pi.dtype)
                per_prompt.append((row, ids, log_pi, set_logp, rewards))
            if not per_prompt:
                # Nothing scorable in this batch: a zero loss that still touches the graph keeps DDP in step.
                return sum(p.sum() for p in model.parameters() if p.requires_grad) * 0.0
            pooled = torch.cat([rewards for *_, rewards in per_prompt])
            batch_std = pooled.std() if pooled.numel() > 1 else None
            losses = []
            for row, ids, log_pi, set_logp, rewards in per_prompt:
                advantages = group_advantages(rewards, self.scale, batch_std)
                loss = -(advantages * set_logp).mean()
                if self.beta > 0:
                    pi = log_pi.exp()
                    ref = torch.log_softmax(
                        self._reference_logp(f"{row.get('dataset')}:{row['id']}", ids) / self.temperature,
                        dim=0,
                    )
                    kl = (pi * (log_pi - ref)).sum()
                    loss = loss + self.beta * kl
                    self._metrics["kl"].append(float(kl.detach()))
                losses.append(loss)
                self._log_policy(log_pi, rewards)
            return torch.stack(losses).mean()

        def _log_policy(self, log_pi: Any, rewards: Any) -> None:
            with torch.no_grad():
                pi = log_pi.exp()
                self._metrics["reward"].append(float(rewards.mean()))
                self._metrics["reward_std"].append(float(rewards.std()) if rewards.numel() > 1 else 0.0)
                self._metrics["entropy"].append(float(-(pi * log_pi).sum()))
                self._metrics["top_prob"].append(float(pi.max()))
                scores = {w: float(s) for w, s in zip(self.words, log_pi, strict=True)}
                ranked = likely_set(scores, self.rollouts.max_emotions, self.rollouts.min_ratio)
                self._metrics["ranked_size"].append(float(len(ranked)))

        def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
            for name, values in self._metrics.items():
                if values:
                    logs[name] = sum(values) / len(values)
            self._metrics.clear()
            super().log(logs, *args, **kwargs)

        def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
            # Only the trained adapter: the frozen reference copy is the init adapter, already on disk, and
            # Trainer's own _save would also pickle the arguments beside the weights.
            output_dir = output_dir or self.args.output_dir
            os.makedirs(output_dir, exist_ok=True)
            model = self.accelerator.unwrap_model(self.model)
            model.save_pretrained(output_dir, selected_adapters=["default"])
            if self.processing_class is not None:
                self.processing_class.save_pretrained(output_dir)

    return CandidateGRPOTrainer


def attach_reference(model: Any, init_adapter: str | Path) -> None:
    """Load the starting adapter a second time, frozen, as ``"reference"``: the KL anchors the adapter training
    started from, not the bare base model (which is what disabling the adapter would give)."""
    model.load_adapter(str(Path(init_adapter).expanduser()), adapter_name="reference", is_trainable=False)
    model.set_adapter("default")


def _rows_collator(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"rows": rows}


def check_rows(rows: Sequence[dict[str, Any]]) -> None:
    """Refuse closed-set rows: ranked decoding, and so this trainer, answers open-vocabulary prompts only."""
    closed = sorted({r["dataset"] for r in rows if r.get("task") == "closed"})
    if closed:
        raise InputError(
            None,
            f"candidate-set rollouts train open-vocabulary prompts; the sources of {closed} render a closed "
            "label set (give them an open-vocabulary eval_task, e.g. ovmerd-ov-subtitle, or task: ov)",
        )


def train_candidate_grpo(
    recipe: GRPORecipe, rows: list[dict[str, Any]], tokenizer: Any, output_dir: Path, data: dict[str, Any]
) -> TrainResult:
    """Train ``recipe`` (``rollouts.kind: candidates``) on built GRPO rows and save like every run."""
    from affectllm.choice import default_candidates
    from affectllm.training.common import (
        dataset_from_rows,
        load_lora_model,
        train_and_save,
        trainer_defaults,
    )

    training, grpo = split_trainer_args(trainer_defaults(recipe))
    words = list(dict.fromkeys(recipe.rollouts.candidates or default_candidates()))
    model, base = load_lora_model(recipe, training)
    reference_adapter = float(grpo["beta"]) > 0 and bool(recipe.init_adapter)
    if reference_adapter:
        attach_reference(model, recipe.init_adapter)
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(output_dir), **training)
    trainer = candidate_grpo_trainer_class()(
        model=model,
        args=args,
        train_dataset=dataset_from_rows(rows),
        data_collator=_rows_collator,
        processing_class=tokenizer,
        rewards=recipe.rewards,
        candidates=words,
        rollouts=recipe.rollouts,
        grpo=grpo,
        reference_adapter=reference_adapter,
    )
    log.info(
        "candidate-set GRPO: %d prompts, %d candidates, %d sets per prompt, beta %s",
        len(rows),
        len(words),
        grpo["num_generations"],
        grpo["beta"],
    )
    return train_and_save(trainer, recipe, base, output_dir, data)


__all__ = [
    "attach_reference",
    "candidate_grpo_trainer_class",
    "candidate_ids",
    "check_rows",
    "group_advantages",
    "gumbel_order",
    "plackett_luce_logprob",
    "prompt_ids",
    "ratio_set_logprob",
    "sample_ratio_sets",
    "sample_sets",
    "split_trainer_args",
    "train_candidate_grpo",
]
