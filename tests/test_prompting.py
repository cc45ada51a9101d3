"""The prompt builder and the answer contract's target text."""

from __future__ import annotations

import json

import pytest

from affectllm.errors import InputError
from affectllm.parsing import parse_answer
from affectllm.prompting import (
    CONTRACT_TEXT,
    answer_json_schema,
    build_messages,
    build_prompt_text,
    format_answer,
    list_templates,
    load_examples,
    load_template,
    select_examples,
)
from affectllm.schema import Clip, Cue, Media, RationaleItem
from affectllm.textualize.render import assign_ids, render_cues

LABELS = ["neutral", "happy", "sad", "angry", "worried", "surprise"]


@pytest.fixture
def clip() -> Clip:
    return Clip(
        "c1",
        [
            Cue("acoustic", "pitch", 245.0, "Hz", "high", 0.4, 1.8),
            Cue("facial", "AU12 lip corner puller", 2.31, None, "C", 0.5, 2.0),
            Cue("facial", "AU6 cheek raiser", 1.2, None, "B", 0.6, 1.9),
            Cue("visual-scene", "caption", "two people hugging at an airport"),
        ],
        transcript="I can't believe you're here!",
    )


def test_templates_ship_and_load() -> None:
    ids = list_templates()
    assert {"ov_rationale.v1", "ov_rationale.v3", "closed_set.v3", "chat_followup.v2"} <= set(ids)
    tpl = load_template(task="ov")
    assert tpl.id == "ov_rationale.v3" and tpl.task == "ov"
    # A bare name picks the newest version; an id pins an older one (earlier runs stay reproducible).
    assert load_template("closed_set").id == "closed_set.v3"
    assert load_template("ov_rationale.v1").version == 1


def test_ov_messages_render_cues_transcript_and_contract(clip: Clip) -> None:
    messages = build_messages(clip)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert CONTRACT_TEXT in messages[0]["content"]
    user = messages[1]["content"]
    assert render_cues(clip) in user  # the exact deterministic cue block, ids included
    assert "F1 [0.5-2.0s] AU12 lip corner puller" in user
    # What was said is one citable evidence line, shown once.
    assert user.count("I can't believe you're here!") == 1
    assert "L1 [whole clip] transcript: \"I can't believe you're here!\"" in user
    assert "Evidence from clip c1" in user


def test_dialogue_context_speaker_and_question(clip: Clip) -> None:
    row = {
        "id": "c1",
        "transcript": "I can't believe you're here!",
        "speaker": "Monica",
        "context": [
            {"speaker": "Ross", "text": "Surprise!"},
            {"role": "Rachel", "content": "Oh my god."},
            "Hi.",
        ],
    }
    from affectllm.clips import clip_from_row

    user = build_messages(clip_from_row(row), question="Is she pleased?")[1]["content"]
    assert "Dialogue so far:\nRoss: Surprise!\nRachel: Oh my god.\nSpeaker: Hi." in user
    assert "Evidence from clip c1 (speaker: Monica):" in user
    # The question comes first, the clip's evidence last (nearest the answer).
    assert user.startswith("Is she pleased?") and user.endswith("\"I can't believe you're here!\"")
    assert user.index("Dialogue so far") < user.index("Evidence from clip")


def test_modalities_hide_evidence_but_keep_ids(clip: Clip) -> None:
    clip.context = [{"speaker": "Ross", "text": "Surprise!"}]
    clip.speaker = "Monica"
    user = build_messages(clip, modalities=["facial"])[1]["content"]
    # Leaving out the linguistic modality hides the words, the dialogue and the speaker; ids stay stable.
    assert "believe" not in user and "Ross" not in user and "Monica" not in user
    assert "pitch" not in user and "caption" not in user
    assert "F1 [" in user and "F2 [" in user
    user = build_messages(clip, modalities=["facial", "text"])[1]["content"]
    assert "L1 [whole clip] transcript:" in user and "Ross: Surprise!" in user


def test_unknown_prompt_options_are_refused(clip: Clip) -> None:
    with pytest.raises(TypeError, match="unknown prompt settings"):
        build_messages(clip, transcript="Other words.")


def test_max_cue_tokens_caps_the_block(clip: Clip) -> None:
    many = Clip("m", [Cue("acoustic", f"feature {i}", float(i), "dB", "high", i, i + 1.0) for i in range(60)])
    full = build_messages(many)[1]["content"]
    capped = build_messages(many, max_cue_tokens=120)[1]["content"]
    assert len(capped) < len(full) / 3
    assert "lower-priority cues omitted" in capped


def test_closed_set_needs_and_lists_labels(clip: Clip) -> None:
    with pytest.raises(ValueError, match="label set"):
        build_messages(clip, task="closed")
    messages = build_messages(clip, task="closed", labels=LABELS)
    assert "neutral, happy, sad, angry, worried, surprise" in messages[0]["content"]
    assert "exactly one label" in messages[0]["content"]


def test_few_shot_turns_use_the_contract(clip: Clip) -> None:
    messages = build_messages(clip, few_shot=True)
    roles = [m["role"] for m in messages]
    assert roles[0] == "system" and roles[-1] == "user"
    assert roles[1:-1] == ["user", "assistant"] * load_template(task="ov").few_shot_examples
    n_shots = load_template(task="ov").few_shot_examples
    examples = [example for example, _ in select_examples("ov", count=n_shots, clip=clip)]
    for (user, assistant), example in zip(
        zip(messages[1:-1:2], messages[2:-1:2], strict=True), examples, strict=False
    ):
        assert render_cues(example.clip) in user["content"]
        parsed = parse_answer(assistant["content"], clip=example.clip)
        assert parsed.format_ok, parsed.errors
        assert parsed.emotions == example.emotions
    assert len(build_messages(clip, few_shot=2)) == 2 + 4


def test_few_shot_examples_are_consistent() -> None:
    examples = load_examples()
    assert len(examples) >= 4
    for example in examples:
        ids = {cid for cid, _ in assign_ids(example.clip.cues)}
        cited = [r.cue_id for r in example.rationale]
        assert cited and set(cited) <= ids, (example.example_id, set(cited) - ids)
        assert example.closed_labels, example.example_id


def test_closed_few_shot_only_teaches_labels_of_the_set(clip: Clip) -> None:
    chosen = select_examples("closed", ["Happy", "Sad"], count=5)
    assert chosen and all(target[0] in ("Happy", "Sad") for _, target in chosen)
    messages = build_messages(clip, task="closed", labels=["Happy", "Sad"], few_shot=5)
    for m in messages[2:-1:2]:
        assert parse_answer(m["content"], labels=["Happy", "Sad"]).emotions[0] in ("Happy", "Sad")


def test_media_parts_for_multimodal_backbones(clip: Clip, tmp_path) -> None:
    from PIL import Image

    img = Image.new("RGB", (8, 8))
    media = Media(frames=(str(tmp_path / "f.png"), "https://x/y.jpg", img), audio=str(tmp_path / "a.wav"))
    content = build_messages(clip, media=media)[1]["content"]
    assert isinstance(content, list)
    kinds = [p["type"] for p in content]
    assert kinds == ["image", "image", "image", "audio", "text"]
    assert content[0] == {"type": "image", "path": str(tmp_path / "f.png")}
    assert content[1] == {"type": "image", "url": "https://x/y.jpg"}
    assert content[2]["image"] is img
    assert "3 key frames from the clip are attached" in content[-1]["text"]
    assert "audio is attached" in content[-1]["text"]


def test_chat_history(clip: Clip) -> None:
    history = [
        {"role": "user", "content": "How does she feel?"},
        {"role": "assistant", "content": "Happy [F1].\nEmotions: happy"},
    ]
    messages = build_messages(clip, task="chat", history=history, question="Why?")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert "How does she feel?" in messages[1]["content"] and render_cues(clip) in messages[1]["content"]
    assert messages[-1] == {"role": "user", "content": "Why?"}
    first = build_messages(clip, task="chat", question="Is he lying?")
    assert first[-1]["content"].endswith("Is he lying?")


def test_format_answer_round_trips(clip: Clip) -> None:
    text = format_answer(
        ["joyful", "surprised"],
        [RationaleItem(cue="broad smile", cue_id="F1"), {"id": "A1", "cue": "high pitch"}],
        confidence=0.8,
        clip=clip,
    )
    assert text.startswith("<answer>{") and text.endswith("}</answer>")
    payload = json.loads(text[len("<answer>") : -len("</answer>")])
    assert payload["rationale"][0] == {
        "id": "F1",
        "cue": "broad smile",
        "modality": "facial",
        "time": "0.5-2.0s",
    }
    parsed = parse_answer(text, clip=clip)
    assert parsed.format_ok and parsed.errors == []
    assert parsed.emotions == ["joyful", "surprised"] and parsed.confidence == 0.8
    assert [r.cue_id for r in parsed.rationale] == ["F1", "A1"]
    with_think = format_answer(["calm"], [], think="Flat voice.")
    assert with_think.startswith("<think>Flat voice.</think>\n<answer>")
    assert parse_answer(with_think).answer == "Flat voice."
    chat = format_answer(["happy"], [{"id": "F1", "cue": "She smiles"}], task="chat")
    assert chat == "She smiles [F1].\nEmotions: happy"
    assert parse_answer(chat, clip=clip).emotions == ["happy"]


def test_prompt_text_fallback_and_chat_template(clip: Clip) -> None:
    messages = build_messages(clip, few_shot=1)
    text = build_prompt_text(messages)
    assert text.startswith("### Instructions\n") and text.endswith("### Assistant\n")
    assert text.count("### User") == 2 and text.count("### Assistant") == 2

    class WithTemplate:
        chat_template = "x"

        def apply_chat_template(self, msgs, tokenize, add_generation_prompt):
            return "|".join(m["role"] for m in msgs) + ("|gen" if add_generation_prompt else "")

    assert build_prompt_text(messages, WithTemplate()) == "system|user|assistant|user|gen"


def test_bad_template_is_an_input_error(tmp_path) -> None:
    bad = tmp_path / "mine.v1.yaml"
    bad.write_text("name: mine\nversion: 1\ntask: ov\nsystem: hi\n")
    with pytest.raises(InputError, match="missing user"):
        load_template(str(bad))
    bad.write_text("name: mine\nversion: 1\ntask: ov\nsystem: '{% if %}'\nuser: u\n")
    with pytest.raises(InputError, match="invalid Jinja2"):
        load_template(str(bad))
    with pytest.raises(InputError, match="no such prompt template"):
        load_template("nonexistent.v9")
    good = tmp_path / "good.v2.yaml"
    good.write_text(
        "name: good\nversion: 2\ntask: ov\nsystem: 'S {{ contract[:5] }}'\nuser: 'U {{ cues }}'\n"
    )
    messages = build_messages(Clip("x", [Cue("acoustic", "pitch", 1.0)]), template=str(good))
    assert messages[0]["content"] == "S one l" and messages[1]["content"].startswith("U Acoustic")
    assert "A1 [whole clip] pitch: 1.00" in messages[1]["content"]


def test_json_schema_matches_contract(clip: Clip) -> None:
    schema = answer_json_schema(LABELS)
    assert schema["properties"]["emotions"]["items"]["enum"] == LABELS
    payload = json.loads(format_answer(["sad"], [{"id": "A1", "cue": "low"}], clip=clip)[8:-9])
    assert set(payload) <= set(schema["properties"]) and set(schema["required"]) <= set(payload)


def test_examples_follow_the_evidence_most_similar_last() -> None:
    """With a clip, few-shot examples are chosen by resemblance to its evidence and the closest comes last,
    so a base model's nearest demonstration matches the clip (and changes when the evidence changes)."""
    angry = Clip("angry", [Cue("facial", "AU4+AU7 brow lowerer and lid tightener", None, None, "strong (D)"),
                           Cue("acoustic", "loudness", None, None, "very loud, shouting")],
                 transcript="This is the third time, nobody ever calls me back!")  # fmt: skip
    sad = Clip("sad", [Cue("facial", "AU1+AU15 inner brow raise and lip corner depressor", None, None, "D"),
                       Cue("acoustic", "pitch", None, None, "low and flat")],
               transcript="The house just feels empty now.")  # fmt: skip
    last = {c.clip_id: select_examples("ov", count=3, clip=c)[-1][0].example_id for c in (angry, sad)}
    assert last == {"angry": "fs-complaint", "sad": "fs-loss"}
    assert len(select_examples("ov", count=2, clip=angry)) == 2
    # The prompt's last few-shot answer is the most similar example's; the clip's evidence ends the prompt.
    messages = build_messages(angry, few_shot=2)
    assert '"angry"' in messages[-2]["content"]
    assert messages[-1]["content"].rstrip().endswith('"This is the third time, nobody ever calls me back!"')
