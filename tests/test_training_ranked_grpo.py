"""Candidate-set GRPO (``rollouts.kind: candidates``): the set sampler and its exact log-probability, the
recipe checks, parity with ranked decoding's scores, and real steps on the tiny random LM."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
from test_training_sft import tiny_recipe

from affectllm.errors import InputError
from affectllm.training.config import load_recipe

torch = pytest.importorskip("torch")


def test_plackett_luce_logprob_is_the_product_of_sequential_draws() -> None:
    from affectllm.training.ranked_grpo import plackett_luce_logprob

    p = torch.tensor([0.5, 0.3, 0.2])
    got = plackett_luce_logprob(p.log(), [2, 0])
    # Draw "2" from all three, then "0" from what is left.
    assert float(got) == pytest.approx(math.log(0.2) + math.log(0.5 / 0.8), abs=1e-6)
    # Every ordered pair's probabilities add up to one.
    pairs = [
        float(plackett_luce_logprob(p.log(), list(o)).exp()) for o in itertools.permutations(range(3), 2)
    ]
    assert sum(pairs) == pytest.approx(1.0, abs=1e-6)


def test_gumbel_top_k_draws_follow_plackett_luce() -> None:
    from affectllm.training.ranked_grpo import plackett_luce_logprob, sample_sets

    log_pi = torch.tensor([0.6, 0.25, 0.15]).log()
    draws = sample_sets(log_pi, [2] * 20000, torch.Generator().manual_seed(0))
    assert all(len(d) == len(set(d)) == 2 for d in draws)
    for order in itertools.permutations(range(3), 2):
        seen = sum(d == list(order) for d in draws) / len(draws)
        assert seen == pytest.approx(float(plackett_luce_logprob(log_pi, list(order)).exp()), abs=0.015)


def test_ratio_rollouts_form_sets_as_ranked_decoding_does_with_exact_probabilities() -> None:
    from affectllm.training.ranked_grpo import ratio_set_logprob, sample_ratio_sets

    log_pi = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    ratio, soft = 0.3, 0.5
    # Every trajectory (the words drawn in order, how many joined) with at most three words: a refused
    # second word, a refused third word, or all three joined. Their probabilities add up to one.
    exact = 0.0
    for a, b in itertools.permutations(range(4), 2):
        exact += float(ratio_set_logprob(log_pi, [a, b], 1, ratio, soft).exp())
        for c in set(range(4)) - {a, b}:
            exact += float(ratio_set_logprob(log_pi, [a, b, c], 2, ratio, soft).exp())
            exact += float(ratio_set_logprob(log_pi, [a, b, c], 3, ratio, soft).exp())
    assert exact == pytest.approx(1.0, abs=1e-5)
    # The sampler draws them with those probabilities: check the frequency of each answer set.
    draws = sample_ratio_sets(log_pi, 20000, 3, ratio, soft, torch.Generator().manual_seed(1))
    seen: dict[tuple[int, ...], int] = {}
    for drawn, joined in draws:
        assert 1 <= joined <= 3 and len(drawn) == min(joined + 1, 3)
        seen[tuple(drawn[:joined])] = seen.get(tuple(drawn[:joined]), 0) + 1
    for answer in [(0,), (0, 1), (1, 0), (0, 1, 2)]:
        p = 0.0
        if len(answer) == 1:
            p = sum(
                float(ratio_set_logprob(log_pi, [answer[0], b], 1, ratio, soft).exp()) for b in range(1, 4)
            )
        elif len(answer) == 2:
            rest = set(range(4)) - set(answer)
            p = sum(float(ratio_set_logprob(log_pi, [*answer, c], 2, ratio, soft).exp()) for c in rest)
        else:
            p = float(ratio_set_logprob(log_pi, list(answer), 3, ratio, soft).exp())
        assert seen.get(answer, 0) / len(draws) == pytest.approx(p, abs=0.012), answer
    # A word far below min_ratio times the first one's rarely joins: the soft rule follows the hard one.
    assert seen.get((0, 3), 0) / len(draws) < 0.01


def test_group_advantages_centre_and_scale_within_the_group() -> None:
    from affectllm.training.ranked_grpo import group_advantages

    r = torch.tensor([1.0, 0.0, 0.5, 0.5])
    assert group_advantages(r, "none").tolist() == pytest.approx([0.5, -0.5, 0.0, 0.0])
    scaled = group_advantages(r, "group")
    assert float(scaled.mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(scaled.std()) == pytest.approx(1.0, abs=1e-3)
    # scale_rewards batch: the std of every reward of the step, given by the caller.
    assert group_advantages(r, "batch", torch.tensor(0.5)).tolist() == pytest.approx(
        [1.0, -1.0, 0.0, 0.0], abs=1e-3
    )
    # A group whose sets all earn the same teaches nothing.
    assert group_advantages(torch.ones(4), "group").abs().max() == 0


def _grpo(tmp_path: Path, **sections) -> dict:
    return {"rewards": {"ew_f1": {"levels": [1, 2]}}, "rollouts": {"kind": "candidates"}, **sections}


def test_candidate_rollouts_refuse_rewards_that_read_a_rationale(tmp_path) -> None:
    with pytest.raises(InputError, match=r"\['format', 'grounding'\] read a generated answer"):
        load_recipe(None, "grpo", _grpo(tmp_path, rewards={"ew_f1": 1.0, "format": 0.5, "grounding": 0.5}))
    with pytest.raises(InputError, match=r"rollouts\.kind: expected one of"):
        load_recipe(None, "grpo", {"rollouts": {"kind": "beam"}})
    with pytest.raises(InputError, match=r"rollouts\.candidates only applies"):
        load_recipe(None, "grpo", {"rollouts": {"candidates": ["happy", "sad"]}})
    with pytest.raises(InputError, match="unknown key"):
        load_recipe(None, "grpo", _grpo(tmp_path, rollouts={"kind": "candidates", "sizes": 3}))
    recipe = load_recipe(None, "grpo", _grpo(tmp_path, rewards={"ew_f1": 1.0, "label_count": {"target": 2}}))
    assert recipe.rollouts.kind == "candidates" and recipe.rollouts.max_emotions == 4


def test_generation_settings_are_refused_for_candidate_rollouts() -> None:
    from affectllm.training.ranked_grpo import split_trainer_args

    training, grpo = split_trainer_args({"learning_rate": 1e-5, "beta": 0.1, "num_generations": 4})
    assert training == {"learning_rate": 1e-5, "remove_unused_columns": False}
    assert grpo == {"num_generations": 4, "beta": 0.1, "temperature": 1.0, "scale_rewards": "group"}
    with pytest.raises(InputError, match=r"\['max_completion_length', 'use_vllm'\] configure generated"):
        split_trainer_args({"max_completion_length": 64, "use_vllm": False})
    with pytest.raises(InputError, match="at least 2"):
        split_trainer_args({"num_generations": 1})


def test_closed_set_sources_are_refused(tmp_path, tiny_lm_dir) -> None:
    from affectllm.training.grpo import run_grpo

    plain = _plain(tiny_recipe(tmp_path, tiny_lm_dir, "grpo", num_generations=2))
    plain.update(rewards={"ew_f1": 1.0}, rollouts={"kind": "candidates"})
    plain["data"]["sources"][0]["task"] = "closed"
    with pytest.raises(InputError, match="open-vocabulary prompts"):
        run_grpo(load_recipe(None, "grpo", plain), dry_run=True)


def _plain(recipe) -> dict:
    from affectllm.training.config import recipe_to_dict

    return recipe_to_dict(recipe)


def test_training_scores_candidates_as_ranked_decoding_does_prompt_parity(tiny_lm_dir) -> None:
    """The policy GRPO trains is the distribution ranked decoding reads: the same prompt text, the same
    candidate tokens, the same log-probabilities as the transformers backend's scoring."""
    from affectllm.backends import get_backend
    from affectllm.backends.hf import continuation_token_logprobs
    from affectllm.choice import ANSWER_PREFIX, label_continuation, score_continuations
    from affectllm.prompting import build_messages
    from affectllm.schema import LINGUISTIC, Clip, Cue
    from affectllm.settings import PromptSettings
    from affectllm.training.ranked_grpo import candidate_ids, prompt_ids

    words = ["happy", "sad", "angry", "surprised"]
    clip = Clip(
        "c1",
        [Cue(LINGUISTIC, "transcript", value="What? Really?", source="transcript")],
        transcript="What? Really?",
    )
    messages = build_messages(clip, PromptSettings(task="ov"))
    backend = get_backend("transformers", model=str(tiny_lm_dir), device="cpu", adapter="none")
    try:
        text = backend.prompt_text(messages) + ANSWER_PREFIX
        assert backend.tokenizer(text, add_special_tokens=False)["input_ids"] == prompt_ids(
            backend.tokenizer, messages
        )
        decoded = score_continuations(backend, [text], [label_continuation(w) for w in words])[0]
        trained = continuation_token_logprobs(
            backend.model, prompt_ids(backend.tokenizer, messages), candidate_ids(backend.tokenizer, words)
        )
        for by_decoder, by_trainer in zip(decoded, trained, strict=True):
            assert by_trainer.tolist() == pytest.approx(by_decoder, abs=1e-5)
        assert trained[0].requires_grad  # outside inference_mode the scores carry gradients to train
    finally:
        backend.close()


def test_candidate_grpo_steps_train_the_adapter_against_a_frozen_reference(tmp_path, tiny_lm_dir) -> None:
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from affectllm.training.grpo import run_grpo

    init = tmp_path / "sft-adapter"
    base = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, lora).save_pretrained(init)
    start = load_file(str(init / "adapter_model.safetensors"))

    plain = _plain(tiny_recipe(tmp_path, tiny_lm_dir, "grpo"))
    plain["trainer"] = {
        **plain["trainer"],
        "num_generations": 4,
        "beta": 0.1,
        "per_device_train_batch_size": 2,
        "learning_rate": 1e-2,
    }
    plain.update(
        init_adapter=str(init),
        rewards={"ew_f1": {"levels": [1, 2]}, "label_count": {"target": 2}},
        rollouts={
            "kind": "candidates",
            "candidates": ["happy", "sad", "angry", "surprised", "excited"],
            "max_emotions": 3,
        },
    )
    recipe = load_recipe(None, "grpo", plain)
    result = run_grpo(recipe)
    out = Path(recipe.output_dir)
    assert result.global_step == 2
    for name in ("reward", "kl", "entropy", "top_prob", "ranked_size"):
        assert math.isfinite(result.metrics[name]), name
    assert 0 < result.metrics["top_prob"] <= 1 and 1 <= result.metrics["ranked_size"] <= 3
    # Only the trained adapter is saved: the frozen reference is the init adapter, already on disk.
    assert not (out / "reference").exists() and not (out / "training_args.bin").exists()
    trained = load_file(str(out / "adapter_model.safetensors"))
    assert set(trained) == set(start)
    assert any(not torch.equal(trained[k], start[k]) for k in start)
    config = json.loads((out / "adapter_config.json").read_text(encoding="utf-8"))
    assert sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    assert load_recipe(out / "recipe.yaml", "grpo") == recipe


def test_the_kl_reference_is_the_starting_adapter_and_stays_frozen(tmp_path, tiny_lm_dir) -> None:
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

    from affectllm.rewards import parse_reward_specs
    from affectllm.training.config import RolloutArgs
    from affectllm.training.ranked_grpo import attach_reference, candidate_grpo_trainer_class, prompt_ids

    init = tmp_path / "init"
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_lm_dir), lora).save_pretrained(init)
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_lm_dir), init, is_trainable=True
    )
    attach_reference(model, init)
    with torch.no_grad():  # training has moved the policy away from where it started
        for name, param in model.named_parameters():
            if "lora_B.default" in name:
                param.add_(0.5)
    trainer = candidate_grpo_trainer_class()(
        model=model,
        args=TrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none"),
        processing_class=tokenizer,
        rewards=parse_reward_specs({"ew_f1": 1.0}),
        candidates=["happy", "sad", "angry"],
        rollouts=RolloutArgs(kind="candidates", max_emotions=2),
        grpo={"num_generations": 4, "beta": 0.1, "temperature": 1.0, "scale_rewards": "group"},
        reference_adapter=True,
    )
    ids = prompt_ids(tokenizer, [{"role": "user", "content": "What? Really?"}])
    reference = trainer._reference_logp("row-1", ids)

    fresh = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_lm_dir), init).eval()
    with torch.no_grad():
        expected = trainer._candidate_logp(fresh, ids)
        policy = trainer._candidate_logp(model.eval(), ids)
    assert reference.tolist() == pytest.approx(expected.tolist(), abs=1e-5)
    assert policy.tolist() != pytest.approx(expected.tolist(), abs=1e-3)
    # Scoring the reference switched adapters and back: only the trained adapter takes gradients.
    grads = {n: p.requires_grad for n, p in model.named_parameters() if "lora_" in n}
    assert all(v for n, v in grads.items() if ".default." in n)
    assert not any(v for n, v in grads.items() if ".reference." in n)
