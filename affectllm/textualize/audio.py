"""A clip's audio as cues: what was said (linguistic cues with timings) and how (acoustic prosody cues)."""

from __future__ import annotations

from typing import Any

from affectllm.media import AudioData
from affectllm.schema import LINGUISTIC, Cue
from affectllm.textualize.asr import Transcript, get_asr
from affectllm.textualize.prosody import extract_prosody, no_speech_cue


def speech_cues(transcript: Transcript) -> list[Cue]:
    """One linguistic cue per ASR segment: the words, when they were said, and how sure the ASR is."""
    source = f"asr:{transcript.engine}" if transcript.engine else "asr"
    cues = []
    for seg in transcript.segments:
        text = seg.text.strip()
        if not text:
            continue
        cues.append(
            Cue(
                LINGUISTIC,
                "speech",
                value=text,
                start=seg.start,
                end=seg.end,
                source=source,
                confidence=seg.confidence,
            )
        )
    return cues


def word_times(transcript: Transcript) -> list[dict[str, Any]]:
    """The recognised words with their times (from the segments the speech cues kept)."""
    return [
        {"start": round(w.start, 3), "end": round(w.end, 3), "text": w.text.strip()}
        for seg in transcript.segments
        for w in seg.words
        if w.text.strip()
    ]


def audio_cues(
    audio: AudioData,
    asr: str | None = "faster-whisper",
    asr_model: str | None = None,
    sex: str | None = None,
    transcript_text: str | None = None,
    transcript: Transcript | None = None,
    prosody: str = "full",
    asr_options: dict[str, Any] | None = None,
    signals: dict[str, Any] | None = None,
    **prosody_options: Any,
) -> tuple[list[Cue], Transcript | None]:
    """Acoustic and linguistic cues for one clip's audio, and the transcript they came from.

    - ``asr``: a registry name (``faster-whisper``, ``openai-whisper``) or ``None`` to skip recognition.
    - ``transcript`` (already recognised, e.g. cached) is used as is; ``transcript_text`` (a sidecar without
      timings) only feeds the speaking-rate estimate, since it carries no timings to make speech cues from.
    - ``prosody``: ``"full"`` (Praat, and openSMILE eGeMAPSv02 for loudness), ``"fast"`` (Praat only: loudness
      from intensity in dB; every other cue is the same) or ``"none"``.

    Silent or non-speech audio gives one explicit ``speech activity: no speech detected`` cue, not an error.
    ``signals``, when given, receives what the cues were measured from, for the cue timeline: the prosody
    contours, bands and pauses (:func:`~affectllm.textualize.prosody.extract_prosody`) and the ASR word times
    under ``"words"`` (``[{"start", "end", "text"}]``).
    """
    if prosody not in ("full", "fast", "none"):
        raise ValueError("prosody must be 'full', 'fast' or 'none'")
    if transcript is None and asr:
        transcript = get_asr(asr, asr_model, **(asr_options or {})).transcribe(audio)
    cues: list[Cue] = []
    if prosody != "none":
        cues.extend(
            extract_prosody(
                audio,
                transcript if transcript is not None and transcript.segments else None,
                sex=sex,
                transcript_text=transcript_text,
                use_opensmile=prosody == "full",
                signals=signals,
                **prosody_options,
            )
        )
    if transcript is not None:
        cues.extend(speech_cues(transcript))
        if signals is not None:
            signals["words"] = word_times(transcript)
    spoke = transcript is not None and not transcript.is_empty
    has_no_speech_cue = any(c.name == "speech activity" for c in cues)
    # A transcript sidecar says there is speech even when the ASR found none (e.g. a language it cannot read).
    if asr and not spoke and not has_no_speech_cue and not (transcript_text and transcript_text.strip()):
        # Voiced sound but no words (humming, music, another language the model cannot read): say so.
        cue = no_speech_cue(audio)
        cue.detail = "no speech recognised (voiced sound without recognisable words)"
        cue.source = f"asr:{transcript.engine}" if transcript is not None and transcript.engine else "asr"
        cues.append(cue)
    return cues, transcript
