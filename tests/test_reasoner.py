"""EmotionReasoner and ChatSession on a real (tiny, random-weight) causal LM through the transformers backend."""

from __future__ import annotations

import json

import pytest

from affectllm.backends.base import GenerationConfig
from affectllm.schema import Clip, Cue, Prediction
from affectllm.settings import PromptSettings

GEN = GenerationConfig(max_new_tokens=8, temperature=0.0)


def _clip(clip_id: str = "c1") -> Clip:
    return Clip(
        clip_id,
        cues=[
            Cue("acoustic", "pitch", detail="high and rising (mean 245 Hz, +1.8 SD)", start=0.0, end=2.0),
            Cue("facial", "AU12 lip corner puller", band="C", value=2.3, start=0.4, end=1.8),
            Cue("visual-scene", "caption", detail="two friends hug in a kitchen"),
        ],
        transcript="You made it!",
    )


@pytest.fixture(scope="module")
def backend(tiny_lm_dir):
    from affectllm.backends import get_backend

    be = get_backend("transformers", model=str(tiny_lm_dir), adapter="none")
    yield be
    be.close()


@pytest.fixture
def reasoner(backend):
    from affectllm.reasoner import EmotionReasoner

    return EmotionReasoner(backend, generation=GEN)


def test_messages_carry_evidence_question_and_context(reasoner):
    clip = _clip()
    clip.context = [{"speaker": "A", "text": "Hi there"}]
    msgs = reasoner.messages(clip, question="Is she relieved?")
    user = msgs[-1]["content"]
    assert msgs[0]["role"] == "system" and msgs[-1]["role"] == "user"
    assert "F1" in user and "A1" in user and "S1" in user  # cue ids the rationale can cite
    assert "Is she relieved?" in user and "Hi there" in user and "You made it!" in user


def test_modalities_and_few_shot_change_the_prompt(backend):
    from affectllm.reasoner import EmotionReasoner

    only_face = EmotionReasoner(backend, PromptSettings(modalities=["facial"])).messages(_clip())[-1][
        "content"
    ]
    assert "AU12" in only_face and "245 Hz" not in only_face
    plain = EmotionReasoner(backend).messages(_clip())
    shots = EmotionReasoner(backend, PromptSettings(few_shot=True)).messages(_clip())
    assert len(shots) > len(plain)
    assert any(m["role"] == "assistant" and "<answer>" in m["content"] for m in shots)


def test_closed_task_needs_labels(backend):
    from affectllm.errors import InputError
    from affectllm.reasoner import EmotionReasoner

    with pytest.raises(InputError):
        EmotionReasoner(backend, PromptSettings(task="closed"))
    r = EmotionReasoner(backend, PromptSettings(task="closed", labels=["happy", "sad"]), generation=GEN)
    assert "happy, sad" in r.messages(_clip())[0]["content"]


def test_default_generation_stops_after_the_answer():
    from affectllm.reasoner import default_generation

    assert "</answer>" in default_generation("ov").stop
    assert default_generation("chat").stop == []


def test_predict_returns_a_parsed_prediction(reasoner):
    pred = reasoner.predict(_clip())
    assert isinstance(pred, Prediction)
    assert isinstance(pred.raw, str) and pred.raw  # random weights: text, not necessarily the contract
    assert isinstance(pred.emotions, list)


def test_predict_batch_matches_single_predictions(reasoner):
    clips = [_clip("a"), _clip("b"), _clip("c")]
    batched = reasoner.predict_batch(clips, batch_size=2)
    assert len(batched) == 3 and all(isinstance(p, Prediction) for p in batched)
    # Greedy decoding of identical prompts: batching (with padding) must not change the answer.
    single = reasoner.predict(clips[0])
    assert batched[0].raw == single.raw
    with pytest.raises(ValueError):
        reasoner.predict_batch(clips, batch_size=0)


def test_predict_batch_isolates_a_failing_clip(tiny_lm_dir):
    """A real backend with one injected failure: only that clip's slot holds the exception."""
    from affectllm.backends.hf import TransformersBackend
    from affectllm.reasoner import EmotionReasoner

    class FailsOnMarker(TransformersBackend):
        def generate(self, batch, config):
            if any("POISON" in json.dumps(m, default=str) for conv in batch for m in conv):
                raise RuntimeError("injected failure")
            return super().generate(batch, config)

    be = FailsOnMarker(model=str(tiny_lm_dir), adapter="none")
    try:
        r = EmotionReasoner(be, generation=GEN)
        clips = [_clip("ok1"), _clip("bad"), _clip("ok2")]
        out = r.predict_batch(clips, batch_size=3, questions=[None, "POISON", None], return_exceptions=True)
        assert isinstance(out[0], Prediction) and isinstance(out[2], Prediction)
        assert isinstance(out[1], RuntimeError)
        with pytest.raises(RuntimeError):
            r.predict_batch(clips, batch_size=3, questions=[None, "POISON", None])
    finally:
        be.close()


def test_chat_session_keeps_history_and_streams(reasoner, tmp_path):
    session = reasoner.chat(_clip())
    pieces = list(session.stream_reply(None))
    first = "".join(pieces)
    assert session.turns[-1].content == first
    assert session.history[-1] == {"role": "assistant", "content": first}
    second = "".join(session.stream_reply("Why do you think so?"))
    # The follow-up is asked with the chat prompt (prose that cites ids) over the same evidence, after the
    # whole first exchange: [system, user(evidence + first question), assistant(first answer), user, assistant].
    roles = [m["role"] for m in session.history]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    assert "in square brackets" in session.history[0]["content"]
    assert "F1 [" in session.history[1]["content"] and "Which emotions" in session.history[1]["content"]
    assert session.history[2]["content"] == first
    assert session.history[-2] == {"role": "user", "content": "Why do you think so?"}
    assert session.history[-1]["content"] == second
    assert [t.role for t in session.turns] == ["user", "assistant", "user", "assistant"]
    assert session.last_prediction is not None
    with pytest.raises(ValueError):
        list(session.stream_reply("  "))

    saved_json = session.save(tmp_path / "chat.json")
    data = json.loads(saved_json.read_text())
    assert data["clip"] == "c1" and len(data["turns"]) == 4 and "F1" in data["evidence"]
    assert data["turns"][1]["prediction"]["emotions"] == session.turns[1].prediction.emotions
    md = session.save(tmp_path / "chat.md").read_text()
    assert md.startswith("# Conversation about `c1`") and "**You:** Why do you think so?" in md


def test_ask_equals_streamed_reply(reasoner):
    a = reasoner.chat(_clip()).ask("What does the voice show?")
    b = "".join(reasoner.chat(_clip()).stream_reply("What does the voice show?"))
    assert a == b


def test_load_reasoner_on_a_local_model(tiny_lm_dir):
    from affectllm.reasoner import load_reasoner

    r = load_reasoner("transformers", model=str(tiny_lm_dir), adapter="none", generation=GEN)
    try:
        assert r.backend.name == "transformers"
        assert r.settings.few_shot == 0  # a named model is not the bare embedded base model
        assert isinstance(r.predict(_clip()), Prediction)
    finally:
        r.backend.close()
    with pytest.raises(ValueError):
        load_reasoner("transformers", model=str(tiny_lm_dir), base_url="http://127.0.0.1:1/v1")
