"""A vision-language backbone behind the reasoner receives the clip's key frames through chat, predict and
eval run: the reasoner samples frames from the clip's video into a typed ``Media`` and the prompt builder turns
them into image parts the backend's processor encodes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from affectllm.backends.base import has_media
from affectllm.cli.main import main

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "surprise_joy.mp4"


@pytest.fixture()
def image_spy(monkeypatch):
    """Records, for every conversation the transformers backend generates for, how many image parts it held
    and whether the processor turned them into pixel values (the real backend still runs)."""
    pytest.importorskip("av")
    from affectllm.backends.hf import TransformersBackend

    seen: list[tuple[int, bool]] = []
    generate, encode = TransformersBackend.generate, TransformersBackend._encode

    def spy_encode(self, batch, *args, **kwargs):
        enc = encode(self, batch, *args, **kwargs)
        for conversation in batch:
            images = sum(
                1
                for m in conversation
                if isinstance(m.get("content"), list)
                for part in m["content"]
                if part.get("type") == "image"
            )
            seen.append((images, "pixel_values" in enc))
        return enc

    def spy_generate(self, batch, config):
        assert all(has_media(conversation) for conversation in batch)
        return generate(self, batch, config)

    monkeypatch.setattr(TransformersBackend, "_encode", spy_encode)
    monkeypatch.setattr(TransformersBackend, "generate", spy_generate)
    return seen


def _model_args(vlm: Path) -> list[str]:
    return ["--backend", "transformers", "--model", str(vlm), "--adapter", "none", "--max-tokens", "4"]


def _clip_folder(tmp_path: Path) -> Path:
    """The example video with a transcript sidecar, so no speech recogniser has to run."""
    shutil.copy(EXAMPLE, tmp_path / "clip.mp4")
    (tmp_path / "clip.transcript.txt").write_text("No way, you did this for me?\n", encoding="utf-8")
    return tmp_path / "clip.mp4"


def test_vlm_frames_reach_the_model_through_chat(tiny_vlm_dir, tmp_path, image_spy, capsys):
    clip = _clip_folder(tmp_path)
    argv = ["chat", str(clip), "How does she feel?", "--json", "--extractors", "none", "-q"]
    assert main([*argv, *_model_args(tiny_vlm_dir)]) == 0
    assert image_spy and all(n == 4 and pixels for n, pixels in image_spy)
    assert "emotions" in json.loads(capsys.readouterr().out)


def test_vlm_frames_reach_the_model_through_predict(tiny_vlm_dir, tmp_path, image_spy):
    clip = _clip_folder(tmp_path)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "c1", "media": clip.name, "transcript": "No way!"}) + "\n")
    out = tmp_path / "pred.jsonl"
    argv = ["predict", "--data", str(manifest), "--out", str(out), "--extractors", "none", "-q"]
    assert main([*argv, *_model_args(tiny_vlm_dir)]) == 0
    assert image_spy and all(n == 4 and pixels for n, pixels in image_spy)
    record = json.loads(out.read_text().splitlines()[0])
    assert record["id"] == "c1" and "error" not in record


def test_vlm_frames_reach_the_model_through_eval_run(tiny_vlm_dir, tmp_path, image_spy):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(EXAMPLE, data / "clip.mp4")
    (data / "dev.jsonl").write_text(
        json.dumps({"id": "c1", "media": "clip.mp4", "transcript": "No way!", "label": "joy"}) + "\n"
    )
    task = tmp_path / "mine.yaml"
    task.write_text(
        "task: mine-media\nversion: 1\ndataset: {name: manifest, split: dev}\n"
        "input: {source: media, extractors: []}\nprompt: {task: closed, labels: [joy, anger]}\n"
        "metrics: [closed_set]\n"
    )
    argv = ["eval", "run", "--task", str(task), "--data-dir", str(data), "-o", str(tmp_path / "out"), "-q"]
    assert main([*argv, "--no-plots", *_model_args(tiny_vlm_dir)]) == 0
    assert image_spy and all(n == 4 and pixels for n, pixels in image_spy)
