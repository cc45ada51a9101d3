"""Tiny random-weight models built offline from configs, for fast backend and training tests.

- ``build_tiny_causal_lm(dir)``: a 2-layer Gemma-3-style causal LM with a byte-level BPE tokenizer trained here
  with the ``tokenizers`` library on text written from this project's own prompts (few-shot examples rendered by
  the real prompt builder), plus Gemma's chat template, so chat templating, padding, stop tokens, LoRA and
  generation all run the same code as the real model.
- ``build_tiny_vlm(dir)``: a LLaVA-class vision-language model (tiny CLIP vision tower + tiny Llama) with its
  processor (CLIP image processor, the same tokenizer with an ``<image>`` token, a chat template that places
  image parts), for the multimodal message path.

Both are deterministic (fixed seeds) and take a few seconds on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]

# A chat template for the tiny VLM: like Gemma's, with image parts written as the processor's <image> token.
VLM_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def _corpus() -> list[str]:
    """Training text for the tokenizer: this project's prompts and answers, and some plain sentences."""
    from affectllm.prompting import build_messages, format_answer, load_examples
    from affectllm.schema import Clip

    texts: list[str] = []
    for example in load_examples():
        for task, labels in (
            ("ov", None),
            ("closed", ["neutral", "happy", "sad", "angry", "worried", "surprise"]),
        ):
            clip = Clip(example.clip.clip_id, example.clip.cues, transcript=example.clip.transcript,
                        context=example.context)  # fmt: skip
            messages = build_messages(clip, task=task, labels=labels)
            texts.extend(str(m["content"]) for m in messages)
        texts.append(format_answer(example.emotions, example.rationale, clip=example.clip, confidence=0.7))
    texts += [
        "The speaker sounds calm and speaks at an even pace.",
        "Her voice rises sharply and she frowns; she seems annoyed and impatient.",
        "He laughs, smiles broadly and says he cannot believe the good news.",
        "Emotions: happy, relieved, grateful. Emotions: sad, tired. Emotions: angry, frustrated.",
        "Which emotions does the speaker show, and which evidence supports them?",
        '{"emotions": ["nervous"], "rationale": [{"id": "A1", "cue": "pitch", "modality": "acoustic"}]}',
    ]
    return texts * 3


def _train_tokenizer(extra_special: list[str] | None = None, vocab_size: int = 1200):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = SPECIAL_TOKENS + list(extra_special or [])
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=specials[4:],
    )
    return fast


def _tiny_text_dims(tokenizer) -> dict[str, int]:
    """The decoder size both tiny models share: small enough to build and run in seconds, with a context long
    enough for a full few-shot prompt."""
    vocab = tokenizer.get_vocab()
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 4096,
        "bos_token_id": vocab["<bos>"],
        "pad_token_id": vocab["<pad>"],
    }


def tiny_model_args(tiny_lm_dir: str | Path, max_tokens: int = 8) -> list[str]:
    """Command-line model options that run the tiny LM (no adapter) for ``chat``/``predict`` tests."""
    return ["--backend", "transformers", "--model", str(tiny_lm_dir), "--adapter", "none",
            "--max-tokens", str(max_tokens)]  # fmt: skip


def build_tiny_causal_lm(directory: str | Path, seed: int = 0) -> Path:
    """A random-weight Gemma-3-style causal LM + trained tokenizer + chat template, saved to ``directory``."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from affectllm.models import GEMMA_CHAT_TEMPLATE

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer()
    tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    vocab = tokenizer.get_vocab()
    config = Gemma3TextConfig(
        **_tiny_text_dims(tokenizer),
        head_dim=32,
        sliding_window=128,
        eos_token_id=[vocab["<eos>"], vocab["<end_of_turn>"]],
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(config)
    model.generation_config.eos_token_id = [vocab["<eos>"], vocab["<end_of_turn>"]]
    model.generation_config.pad_token_id = vocab["<pad>"]
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_tiny_vlm(directory: str | Path, seed: int = 0) -> Path:
    """A random-weight LLaVA-class vision-language model with its processor, saved to ``directory``."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(extra_special=["<image>"])
    vocab = tokenizer.get_vocab()
    image_size, patch = 32, 8
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch,
        projection_dim=32,
    )
    text = LlamaConfig(**_tiny_text_dims(tokenizer), eos_token_id=vocab["<eos>"])
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=vocab["<image>"],
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.eos_token_id = [vocab["<eos>"], vocab["<end_of_turn>"]]
    model.generation_config.pad_token_id = vocab["<pad>"]
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch,
        vision_feature_select_strategy="full",
        chat_template=VLM_CHAT_TEMPLATE,
        image_token="<image>",
        num_additional_image_tokens=1,  # CLIP's CLS token, kept by the "full" strategy
    )
    tokenizer.chat_template = VLM_CHAT_TEMPLATE
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "affectllm_tiny.json").write_text(json.dumps({"kind": "tiny-llava", "seed": seed}) + "\n")
    return out
