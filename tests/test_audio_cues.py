"""The whole audio path: media file → ASR + prosody → cues, including silence and non-speech."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

pytest.importorskip("faster_whisper")
pytest.importorskip("parselmouth")

from affectllm.media import AudioData, load_audio
from affectllm.schema import ACOUSTIC, LINGUISTIC, Clip
from affectllm.textualize.audio import audio_cues
from affectllm.textualize.render import render_cues


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    path = tmp_path_factory.mktemp("speech") / "two_sentences.wav"
    subprocess.run(
        [
            "espeak-ng",
            "-v",
            "en-us",
            "-s",
            "150",
            "-w",
            str(path),
            "I cannot believe you did that again. Please call me back tomorrow morning.",
        ],
        check=True,
        capture_output=True,
    )
    return path


def test_end_to_end_speech(speech_wav):
    audio = load_audio(speech_wav)
    cues, transcript = audio_cues(audio, asr="faster-whisper", asr_options={"cpu_threads": 1}, sex="male")
    assert transcript is not None and "tomorrow" in transcript.text.lower()
    speech = [c for c in cues if c.modality == LINGUISTIC]
    assert speech and all(c.name == "speech" and c.start is not None and c.end > c.start for c in speech)
    assert all(0 < c.confidence <= 1 for c in speech)
    acoustic = [c for c in cues if c.modality == ACOUSTIC]
    names = {c.name for c in acoustic}
    assert {"pitch", "loudness", "speaking rate", "pauses"} <= names
    # Prosody is measured per ASR segment, with the segment's times.
    seg_times = {(s.start, s.end) for s in transcript.segments}
    assert {(c.start, c.end) for c in acoustic} <= {(round(a, 3), round(b, 3)) for a, b in seg_times}
    rate = next(c for c in acoustic if c.name == "speaking rate")
    assert rate.unit == "words/s" and 1.0 < rate.value < 5.0
    text = render_cues(Clip("c1", cues))
    assert "Speech content:" in text and "Acoustic (voice and prosody):" in text
    assert all(c.to_dict()["modality"] in (ACOUSTIC, LINGUISTIC) for c in cues)


def test_no_asr_uses_transcript_text_for_rate(speech_wav):
    audio = load_audio(speech_wav)
    text = "I cannot believe you did that again. Please call me back tomorrow morning."
    cues, transcript = audio_cues(audio, asr=None, transcript_text=text)
    assert transcript is None
    assert not [c for c in cues if c.modality == LINGUISTIC]
    rate = next(c for c in cues if c.name == "speaking rate")
    assert rate.unit == "words/s" and rate.source == "transcript + energy"
    cues, _ = audio_cues(audio, asr=None, prosody="fast")
    rate = next(c for c in cues if c.name == "speaking rate")
    assert rate.unit == "syll/s"
    loud = next(c for c in cues if c.name == "loudness")
    assert loud.unit == "dB" and loud.source == "praat"


def test_silence_is_a_cue_not_an_error():
    audio = AudioData.from_array(np.zeros(3 * 16000, np.float32), 16000, source="silent.wav")
    cues, transcript = audio_cues(audio)
    assert transcript is not None and transcript.is_empty
    assert len(cues) == 1
    assert cues[0].modality == ACOUSTIC and cues[0].value == "no speech detected"
    assert cues[0].start == 0.0 and cues[0].end == pytest.approx(3.0)


def test_voiced_non_speech_says_no_speech_recognised():
    sr = 16000
    t = np.arange(2 * sr) / sr
    hum = (0.2 * np.sin(2 * np.pi * 140 * t) + 0.1 * np.sin(2 * np.pi * 280 * t)).astype(np.float32)
    cues, transcript = audio_cues(AudioData.from_array(hum, sr), asr_options={"cpu_threads": 1})
    if transcript is not None and not transcript.is_empty:
        pytest.skip(f"ASR hallucinated words on a hum: {transcript.text!r}")
    assert any(c.name == "speech activity" and "no speech recognised" in c.detail for c in cues)
    assert any(c.name == "pitch" for c in cues)  # the hum's pitch is still evidence


def test_shared_emodb_clip_end_to_end(shared_data):
    audio = load_audio(shared_data / "audio" / "emodb" / "03a02Ta.wav")
    cues, _ = audio_cues(audio, asr=None, sex="male")
    pitch = next(c for c in cues if c.name == "pitch")
    assert pitch.band in ("very low", "low", "average") and "adult male norm" in pitch.detail
