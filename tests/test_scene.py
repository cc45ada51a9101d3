"""Scene captions: sidecar parsing, near-duplicate merging with MiniLM, and both captioner backends."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from affectllm.errors import InputError
from affectllm.textualize.scene import (
    Caption,
    OpenAICaptioner,
    TransformersCaptioner,
    get_captioner,
    merge_near_duplicates,
    parse_time,
    read_captions,
    scene_cues,
)

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")


@pytest.fixture(scope="module")
def embedder():
    from affectllm.embeddings import get_embedder

    try:
        emb = get_embedder()
        emb.encode(["warm up"])
    except Exception as exc:  # the embed extra is optional for users; tests need it present
        pytest.skip(f"MiniLM embedder unavailable: {exc}")
    return emb


def make_color_video(path: Path, colors=("red", "blue"), seconds: float = 1.0) -> Path:
    inputs = []
    for c in colors:
        inputs += ["-f", "lavfi", "-i", f"color=c={c}:s=64x48:r=10:d={seconds}"]
    concat = "".join(f"[{i}:v]" for i in range(len(colors))) + f"concat=n={len(colors)}:v=1:a=0[v]"
    cmd = ["ffmpeg", "-loglevel", "error", "-y", *inputs, "-filter_complex", concat, "-map", "[v]"]
    subprocess.run([*cmd, "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


# ---------------------------------------------------------------------------------------------- sidecars


def test_parse_time():
    assert parse_time("12.5") == 12.5
    assert parse_time("01:02.5") == 62.5
    assert parse_time("1:02:03,5") == 3723.5
    for bad in ("", "a:b", "1::2", "1:2:3:4"):
        with pytest.raises(ValueError):
            parse_time(bad)


def test_json_captions_objects_strings_and_wrapped(tmp_path):
    p = tmp_path / "c.captions.json"
    p.write_text(
        json.dumps(
            [
                {"start": 0, "end": 2.5, "text": "A man at a desk."},
                {"time": "00:03.0", "text": "A door opens."},
            ]
        )
    )
    caps = read_captions(p)
    assert [(c.text, c.start, c.end) for c in caps] == [
        ("A man at a desk.", 0.0, 2.5),
        ("A door opens.", 3.0, None),
    ]
    p.write_text(json.dumps({"captions": ["first  scene", "second scene"]}))
    assert [(c.text, c.start) for c in read_captions(p)] == [("first scene", None), ("second scene", None)]


def test_text_captions_with_and_without_times(tmp_path):
    p = tmp_path / "c.captions.txt"
    p.write_text("[00:00.0] A kitchen.\n\n[00:04.5-00:06] A woman enters.\n[1:00] Night street.\n")
    caps = read_captions(p)
    assert [(c.start, c.end) for c in caps] == [(0.0, 4.5), (4.5, 6.0), (60.0, None)]
    p.write_text("a plain caption\nanother one\n")
    assert [c.text for c in read_captions(p)] == ["a plain caption", "another one"]


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("a.json", "[1, 2", "not valid JSON"),
        ("b.json", '{"x": 1}', "expected a list"),
        ("c.json", '[{"start": 3, "end": 1, "text": "x"}]', "before start"),
        ("d.json", '[{"start": "soon", "text": "x"}]', "neither seconds"),
        ("e.txt", "ok\n[00:0x] broken\n", "unreadable time stamp"),
        ("f.txt", "\n\n", "no captions"),
    ],
)
def test_bad_caption_files(tmp_path, name, content, problem):
    p = tmp_path / name
    p.write_text(content)
    with pytest.raises(InputError) as info:
        read_captions(p)
    assert problem in str(info.value) and name in str(info.value)
    if name == "e.txt":
        assert info.value.line == 2


# --------------------------------------------------------------------------------------------------- merging


def test_merge_near_duplicates_with_minilm(embedder):
    caps = [
        Caption("A man sits at a desk in an office.", 0.0, 2.0),
        Caption("A man is sitting at a desk in an office.", 2.0, 4.0),
        Caption("Two children play football on a sunny beach.", 4.0, 6.0),
        Caption("A man sits at a desk in an office.", 6.0, 8.0),
    ]
    merged = merge_near_duplicates(caps, embedder=embedder)
    assert [(c.text, c.start, c.end) for c in merged] == [
        ("A man sits at a desk in an office.", 0.0, 4.0),
        ("Two children play football on a sunny beach.", 4.0, 6.0),
        ("A man sits at a desk in an office.", 6.0, 8.0),  # a return later in time is a new event
    ]
    assert len(merge_near_duplicates(caps, threshold=0.999, embedder=embedder)) == 4


def test_scene_cues_from_sidecar(tmp_path, embedder):
    p = tmp_path / "x.captions.json"
    p.write_text(
        json.dumps([{"start": 0, "end": 1, "text": "A red curtain."}, {"start": 1, "text": "A red curtain."}])
    )
    [cue] = scene_cues(captions=p, duration=3.0, embedder=embedder)
    assert (cue.modality, cue.name, cue.value, cue.start, cue.end) == (
        "visual-scene",
        "scene",
        "A red curtain.",
        0.0,
        3.0,
    )
    assert cue.source == "captions:x.captions.json"
    assert scene_cues() == []


def test_get_captioner_errors(monkeypatch):
    monkeypatch.delenv("AFFECTLLM_CAPTION_MODEL", raising=False)
    with pytest.raises(InputError, match="unknown captioner"):
        get_captioner("magic")
    with pytest.raises(InputError, match="needs a model"):
        get_captioner("openai")
    with pytest.raises(InputError, match="needs a model"):
        get_captioner("transformers")


# ------------------------------------------------------------------------------- OpenAI-compatible captioner


class _VisionHandler(BaseHTTPRequestHandler):
    """A minimal OpenAI-compatible /v1/chat/completions that 'sees' the dominant colour of the image."""

    requests: ClassVar[list[dict]] = []

    def do_POST(self):
        from PIL import Image

        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(
            {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
        )
        parts = body["messages"][0]["content"]
        url = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
        header, data = url.split(",", 1)
        assert header == "data:image/jpeg;base64"
        rgb = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")).reshape(-1, 3).mean(0)
        text = (
            "A red curtain hangs in an empty theatre."
            if rgb[0] > rgb[2]
            else "Blue ocean waves crash on rocks."
        )
        reply = {
            "id": "cmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
        }
        raw = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


@pytest.fixture
def vision_server():
    _VisionHandler.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _VisionHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@needs_ffmpeg
def test_openai_captioner_on_sampled_frames(tmp_path, vision_server, embedder):
    video = make_color_video(tmp_path / "v.mp4")
    captioner = OpenAICaptioner(model="tiny-vlm", base_url=vision_server, api_key="k-test", max_tokens=40)
    cues = scene_cues(media=video, captioner=captioner, num_frames=4, embedder=embedder)
    assert [c.value for c in cues] == [
        "A red curtain hangs in an empty theatre.",
        "Blue ocean waves crash on rocks.",
    ]
    assert cues[0].start == 0.0 and cues[0].end == pytest.approx(1.0, abs=0.1)
    assert cues[1].start == pytest.approx(1.0, abs=0.1) and cues[1].end == pytest.approx(2.0, abs=0.1)
    assert cues[0].source == "captioner:openai:tiny-vlm"
    reqs = _VisionHandler.requests
    assert len(reqs) == 4 and reqs[0]["path"] == "/v1/chat/completions"
    assert reqs[0]["auth"] == "Bearer k-test"
    assert reqs[0]["body"]["model"] == "tiny-vlm" and reqs[0]["body"]["max_tokens"] == 40


@needs_ffmpeg
def test_openai_captioner_from_environment(tmp_path, vision_server, monkeypatch, embedder):
    monkeypatch.setenv("AFFECTLLM_CAPTION_BASE_URL", vision_server)
    monkeypatch.setenv("AFFECTLLM_CAPTION_MODEL", "env-vlm")
    video = make_color_video(tmp_path / "v.mp4", colors=("red",))
    cues = scene_cues(media=video, captioner="openai", num_frames=2, embedder=embedder)
    assert len(cues) == 1 and cues[0].start == 0.0 and cues[0].end == pytest.approx(1.0, abs=0.1)
    assert _VisionHandler.requests[0]["body"]["model"] == "env-vlm"


# ------------------------------------------------------------------------------------ transformers captioner


def build_tiny_captioner(directory: Path) -> Path:
    """A random-weight ViT → GPT-2 VisionEncoderDecoder with a word-level tokenizer, built from configs."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        GPT2Config,
        PreTrainedTokenizerFast,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )

    words = [
        "[PAD]",
        "[BOS]",
        "[EOS]",
        "[UNK]",
        *["a", "man", "woman", "sits", "stands", "at", "desk", "in", "kitchen", "room", "table"],
    ]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]", unk_token="[UNK]"
    )
    # Encoder and decoder share one width, so cross-attention needs no projection.
    width, heads, image = 32, 2, 32
    encoder = ViTConfig(
        hidden_size=width, num_hidden_layers=1, num_attention_heads=heads, intermediate_size=2 * width,
        image_size=image, patch_size=image // 4,
    )  # fmt: skip
    decoder = GPT2Config(
        vocab_size=len(words), n_embd=width, n_layer=1, n_head=heads, n_positions=64, bos_token_id=1,
        eos_token_id=2, pad_token_id=0, add_cross_attention=True, is_decoder=True,
    )  # fmt: skip
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 1, 0, 2
    torch.manual_seed(0)
    model = VisionEncoderDecoderModel(config=config)
    gen = model.generation_config
    gen.decoder_start_token_id, gen.pad_token_id, gen.eos_token_id = 1, 0, 2
    gen.suppress_tokens = [0, 1, 2, 3]  # random weights: force real words so the caption is not empty
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    ViTImageProcessor(size={"height": image, "width": image}).save_pretrained(directory)
    return directory


@needs_ffmpeg
def test_transformers_captioner_tiny_vision_encoder_decoder(tmp_path):
    pytest.importorskip("transformers")
    model_dir = build_tiny_captioner(tmp_path / "tinycap")
    captioner = TransformersCaptioner(str(model_dir), max_new_tokens=4)
    video = make_color_video(tmp_path / "v.mp4")
    cues = scene_cues(media=video, captioner=captioner, num_frames=2, merge_threshold=None)
    assert len(cues) == 2
    vocab = set(["a", "man", "woman", "sits", "stands", "at", "desk", "in", "kitchen", "room", "table"])
    for cue in cues:
        words = str(cue.value).split()
        assert 1 <= len(words) <= 4 and set(words) <= vocab
        assert cue.source == f"captioner:transformers:{model_dir}"
    assert cues[0].start == 0.0 and cues[-1].end == pytest.approx(2.0, abs=0.1)


def test_transformers_captioner_bad_model_path(tmp_path):
    pytest.importorskip("transformers")
    from PIL import Image

    captioner = TransformersCaptioner(str(tmp_path / "no-such-model"))
    with pytest.raises(InputError, match="cannot load"):
        captioner.caption([Image.new("RGB", (8, 8))])
