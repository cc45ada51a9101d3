"""Images in the messages reach a vision-language model through its processor; text-only models ignore them."""

from __future__ import annotations

from pathlib import Path

import pytest

from affectllm.backends import GenerationConfig, get_backend
from affectllm.prompting import build_messages
from affectllm.schema import Clip, Cue, Media

CLIP = Clip("v", [Cue("facial", "AU12 lip corner puller", 2.0, None, "C", 0.2, 1.0)], transcript="Hi!")


@pytest.fixture(scope="module")
def vlm(tiny_vlm_dir: Path):
    return get_backend("transformers", model=str(tiny_vlm_dir), device="cpu")


def _frames(tmp_path: Path) -> list:
    from PIL import Image

    path = tmp_path / "frame.png"
    Image.new("RGB", (48, 40), (200, 30, 30)).save(path)
    return [str(path), Image.new("RGB", (20, 30), (10, 200, 10))]


def test_vlm_is_detected(vlm) -> None:
    assert vlm.multimodal and vlm.supports_images and not vlm.supports_audio


def test_image_parts_reach_the_model(vlm, tmp_path: Path) -> None:
    with_images = build_messages(CLIP, media=Media(frames=tuple(_frames(tmp_path))))
    enc = vlm._encode([with_images])
    assert "pixel_values" in enc and enc["pixel_values"].shape[0] == 2
    image_token = vlm.tokenizer.convert_tokens_to_ids("<image>")
    # The processor expands each image into the vision tower's patch tokens (16 patches + CLS each).
    assert int((enc["input_ids"] == image_token).sum()) == 2 * 17
    config = GenerationConfig(max_new_tokens=6)
    out = vlm.generate([with_images, build_messages(CLIP)], config)
    assert len(out) == 2 and all(isinstance(t, str) for t in out)
    # Different pixels, different next-token distribution: the images condition the model.
    from PIL import Image

    other = build_messages(CLIP, media=Media(frames=(Image.new("RGB", (48, 40), (0, 0, 255)),) * 2))
    logits_a = vlm.model(**vlm._encode([with_images])).logits[0, -1]
    logits_b = vlm.model(**vlm._encode([other])).logits[0, -1]
    assert not logits_a.allclose(logits_b)
    assert "".join(vlm.stream(with_images, config)) == out[0]


def test_text_only_model_drops_media(tiny_lm_dir: Path, tmp_path: Path) -> None:
    lm = get_backend("transformers", model=str(tiny_lm_dir), device="cpu")
    with_images = build_messages(CLIP, media=Media(frames=tuple(_frames(tmp_path))))
    config = GenerationConfig(max_new_tokens=5)
    assert isinstance(lm.generate([with_images], config)[0], str)
    assert "2 key frames" in lm.prompt_text(with_images)  # the note stays; the pixels are dropped
