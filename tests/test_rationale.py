"""Cue splitting and modality tagging, cue-level P/R/F, grounding, the threshold calibration, and
``affectllm eval rationale`` — with the real packaged MiniLM."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from affectllm.cli.main import main
from affectllm.metrics import get_metric
from affectllm.metrics.rationale import (
    CALIBRATION_CUES,
    DEFAULT_GROUNDING_THRESHOLD,
    AtomicCue,
    calibrate_grounding_threshold,
    cited_ids,
    clean_cue_text,
    evidence_lines,
    grounding,
    rationale_scores,
    split_cues,
    tag_modality,
)
from affectllm.schema import Clip, Cue, RationaleItem

pytest.importorskip("sentence_transformers")

EMER_STYLE = (
    "In the video, he found out that his friend is pregnant and he was very surprised. He spoke faster, "
    'raised his voice, and suddenly sat up from the sofa. He said "Ah. Wei Wei is pregnant." '
    "He opened his mouth wide, widened his eyes, and raised his eyebrows. Therefore, it can be inferred that "
    "his emotional state is surprise."
)

# Two cues as the calibration set words them (a loud voice, a marked AU12), plus two of the test's own.
_CALIBRATION = {(cue.name, cue.band): cue for _, cue, _ in CALIBRATION_CUES}
EVIDENCE = [
    _CALIBRATION["loudness", "high"],
    _CALIBRATION["AU12 lip corner puller", "C"],
    Cue("facial", "AU09 nose wrinkler", 1.9, "intensity 0-5", "B", 1.0, 1.6, detail="slight (B), peak 1.90"),
    Cue("linguistic", "transcript", "We won! We actually won the final!", start=0.0, end=2.0),
]


@pytest.fixture(scope="module")
def embedder():
    from affectllm.embeddings import get_embedder

    return get_embedder()


# ----------------------------------------------------------------------------------------------- splitting


def test_split_emer_prose_into_tagged_clauses() -> None:
    cues = split_cues(EMER_STYLE)
    texts = [c.text for c in cues]
    assert texts == [
        "he found out that his friend is pregnant and he was very surprised",
        "He spoke faster",
        "raised his voice",
        "suddenly sat up from the sofa",
        'He said "Ah. Wei Wei is pregnant."',  # a quotation is never cut, even at its full stop
        "He opened his mouth wide",
        "widened his eyes",
        "raised his eyebrows",
    ]  # "In the video" and the concluding sentence are not cues
    assert [c.modality for c in cues] == [
        "unknown", "acoustic", "acoustic", "visual", "textual", "visual", "visual", "visual",
    ]  # fmt: skip
    kept = split_cues(EMER_STYLE, drop_conclusions=False)
    assert "his emotional state is surprise" in kept[-1].text


def test_short_fragments_join_their_neighbour() -> None:
    cues = split_cues("He had a crying tone, sniffed, furrowed his brows, and looked down at a slant.")
    assert [c.text for c in cues] == [
        "He had a crying tone, sniffed",
        "furrowed his brows",
        "looked down at a slant",
    ]
    assert [c.modality for c in cues] == ["acoustic", "visual", "visual"]


def test_structured_lines_and_citations() -> None:
    text = (
        "A1 [whole clip] loudness: loud (+2.1 SD vs speaker)\n"
        "[F2] lip corners pulled up, cheeks raised\n"
        "- the transcript says they won\n"
        'L1 [0.0-2.0s] transcript: "We won!"'
    )
    cues = split_cues(text)
    assert [c.cue_ids for c in cues] == [("A1",), ("F2",), (), ("L1",)]
    assert [c.modality for c in cues] == ["acoustic", "visual", "textual", "textual"]
    assert cues[0].text == "loudness: loud"
    assert cues[1].text == "lip corners pulled up, cheeks raised"  # one line stays one cue
    assert cues[1].raw.startswith("[F2]")


def test_lists_items_dicts_and_json_text() -> None:
    items = [
        RationaleItem(cue="voice rises sharply", modality="acoustic", cue_id="A1"),
        {"cue": "smiling broadly", "modality": "face"},
        {"cue": "", "cue_id": "L1"},
        "frowns at the end",
    ]
    cues = split_cues(items)
    assert [(c.text, c.modality, c.cue_ids) for c in cues] == [
        ("voice rises sharply", "acoustic", ("A1",)),
        ("smiling broadly", "visual", ()),
        ("", "textual", ("L1",)),  # a bare citation is kept for grounding
        ("frowns at the end", "visual", ()),
    ]
    as_json = json.dumps([{"cue": "voice rises sharply", "modality": "acoustic"}, "frowns at the end"])
    assert [c.text for c in split_cues(as_json)] == ["voice rises sharply", "frowns at the end"]
    assert split_cues({"emotions": ["happy"], "rationale": ["smiling"]})[0].text == "smiling"
    assert split_cues(None) == [] and split_cues("") == []
    with pytest.raises(TypeError):
        split_cues(42)


def test_helpers() -> None:
    assert cited_ids("[F2, A1] the F0 rises (F2)") == ("F2", "A1")  # F0 (pitch) is no id
    assert clean_cue_text(
        "F7 [0.4-1.8s] AU12 lip corner puller: marked (C), peak 2.31 (onset 0.4s, apex 1.0s)"
    ) == ("AU12 lip corner puller: marked (C), peak 2.31")
    assert tag_modality("his voice trembles while he frowns and frowns") == "visual"  # more visual markers
    assert tag_modality("his voice trembles while he frowns") == "acoustic"  # tie: the first mentioned
    assert tag_modality("something happened") == "unknown"
    assert tag_modality("anything", ("S1",)) == "visual"


# ----------------------------------------------------------------------------------------------- P/R/F


def test_rationale_scores_identity_unrelated_and_missing(embedder) -> None:
    ref = {
        "a": "He raised his voice and shouted. He frowned deeply. He said he would never forgive her.",
        "b": "She smiled broadly and her eyes sparkled.",
        "c": "Therefore, it can be inferred that his emotional state is anger.",  # no cue: skipped
    }
    same = rationale_scores(predictions=ref, references=ref, embedder=embedder)
    assert same["overall"]["p"] == pytest.approx(1.0, abs=1e-4)
    assert same["overall"]["f_hard"] == 1.0
    assert same["n"] == 2 and same["skipped"] == ["c"]
    assert same["acoustic"]["n"] == 1 and same["textual"]["n"] == 1 and same["visual"]["n"] == 2

    other = rationale_scores(predictions={"a": ref["b"], "b": ref["a"]}, references=ref, embedder=embedder)
    assert other["overall"]["f"] < 0.5 < same["overall"]["f"]
    # "b" predicts nothing acoustic/textual: sample a's reference acoustic cues go unmatched.
    assert other["acoustic"]["r"] == 0.0

    para = rationale_scores(
        predictions={
            "a": "His voice got louder and he yelled. His brows were lowered in a frown.",
            "b": "A wide smile.",
        },
        references=ref,
        embedder=embedder,
    )
    assert other["overall"]["f"] < para["overall"]["f"] < same["overall"]["f"]
    assert (
        para["samples"]["a"]["textual"]["r"] < para["samples"]["a"]["acoustic"]["r"]
    )  # speech not mentioned

    missing = rationale_scores(predictions={"a": ref["a"]}, references=ref, embedder=embedder)
    assert missing["missing_predictions"] == ["b", "c"]
    assert missing["samples"]["b"]["overall"] == {
        "p": 0.0, "r": 0.0, "f": 0.0, "p_hard": 0.0, "r_hard": 0.0, "f_hard": 0.0,
    }  # fmt: skip


def test_rationale_registry(embedder) -> None:
    spec = get_metric("rationale")
    out = spec.fn(
        predictions={"a": "He is shouting."}, references={"a": "He shouts loudly."}, embedder=embedder
    )
    assert 0.5 < out["overall"]["f"] <= 1.0
    assert spec.primary == "f" and out["f"] == out["overall"]["f"]


# ----------------------------------------------------------------------------------------------- grounding


def test_grounding_supported_hallucinated_and_citations(embedder) -> None:
    lines = evidence_lines(EVIDENCE)
    assert lines[0].startswith("A1 [whole clip] loudness")
    ids = [line.split()[0] for line in lines]
    assert ids == ["A1", "F1", "F2", "L1"]  # facial cues ordered by start time: AU12 (0.4 s) first
    rationale = [
        "the speaker is very loud",  # supported by A1 without citing it
        "[F1] the lip corners are pulled up",  # cites the right cue
        "[F2] the lip corners are pulled up",  # cites an existing but unrelated cue
        "[F9] he wrinkles his nose",  # cites a cue that does not exist
        "[L1]",  # a bare citation is the cited evidence itself
        "a woman holds a birthday cake",  # nothing like it in the evidence
    ]
    result = grounding(predictions=rationale, references=lines, embedder=embedder)
    assert result.supported == [rationale[0], rationale[1], rationale[4]]
    assert result.hallucinated == [rationale[2], rationale[3], rationale[5]]
    assert result.score == pytest.approx(3 / 6)
    assert result.best[3] == 0.0 and result.best[4] == 1.0
    assert all(b >= DEFAULT_GROUNDING_THRESHOLD for b in (result.best[0], result.best[1]))
    # A stricter threshold can only remove support.
    strict = grounding(predictions=rationale, references=lines, threshold=0.95, embedder=embedder)
    assert set(strict.supported) <= set(result.supported) and strict.supported == ["[L1]"]


def test_grounding_edge_cases(embedder) -> None:
    assert (
        grounding(predictions=[], references=["A1 [whole clip] loudness: loud"], embedder=embedder).score
        == 0.0
    )
    no_evidence = grounding(predictions=["he shouts"], references=[], embedder=embedder)
    assert no_evidence.score == 0.0 and no_evidence.hallucinated == ["he shouts"]
    # Evidence lines without ids work; they just cannot be cited.
    plain = grounding(
        predictions=["he shouts loudly"], references=["the speaker is shouting loudly"], embedder=embedder
    )
    assert plain.score == 1.0
    # A Clip, and a rendered block with headers, give the same lines.
    from affectllm.textualize.render import render_cues

    clip = Clip("c1", cues=list(EVIDENCE))
    assert evidence_lines(clip) == evidence_lines(render_cues(clip)) == evidence_lines(EVIDENCE)


def test_grounding_registry_over_a_corpus(embedder) -> None:
    spec = get_metric("grounding")
    out = spec.fn(
        predictions={"c1": [{"cue": "loud voice", "cue_id": "A1"}, "a cake"], "c2": "He shouts.", "c3": []},
        references={"c1": Clip("c1", cues=list(EVIDENCE)), "c3": EVIDENCE},
        embedder=embedder,
    )
    assert out["samples"]["c1"]["score"] == 0.5
    assert out["missing_evidence"] == ["c2"]
    assert out["empty_rationales"] == 1 and out["grounding"] == pytest.approx(0.25)


def test_calibration_reproduces_the_default_threshold(embedder) -> None:
    report = calibrate_grounding_threshold(embedder)
    assert report["threshold"] == DEFAULT_GROUNDING_THRESHOLD
    assert report["balanced_accuracy"] > 0.75
    assert report["supported_best_cosine"]["mean"] > report["unsupported_best_cosine"]["mean"] + 0.15


# ------------------------------------------------------------------------------------------ EMER reference


def test_emer_reasonings_as_reference(shared_data: Path, embedder) -> None:
    pd = pytest.importorskip("pandas")
    emer = pd.read_csv(shared_data / "emer" / "v1_gt_eng.csv").head(24)  # a sample keeps this fast
    ref = dict(zip(emer["names"], emer["reasons"], strict=True))
    cues = {name: split_cues(text) for name, text in ref.items()}
    assert all(cues.values())
    tagged = {c.modality for cs in cues.values() for c in cs}
    assert {"visual", "acoustic", "textual"} <= tagged
    # EMER's closing "Therefore ... emotional state is ..." is never a cue.
    assert not any(
        "emotional state is" in c.text and c.text.lower().startswith("therefore")
        for cs in cues.values()
        for c in cs
    )

    itself = rationale_scores(predictions=ref, references=ref, embedder=embedder)
    names = list(ref)
    shuffled_names = names[1:] + names[:1]
    random.Random(0).shuffle(shuffled_names)
    shuffled = rationale_scores(
        predictions={n: ref[m] for n, m in zip(names, shuffled_names, strict=True)},
        references=ref,
        embedder=embedder,
    )
    assert itself["overall"]["f"] == pytest.approx(1.0, abs=1e-4)
    assert shuffled["overall"]["f"] < 0.6
    assert shuffled["overall"]["f_hard"] < 0.5
    for modality in ("visual", "acoustic", "textual"):
        assert shuffled[modality]["f"] < itself[modality]["f"]


# --------------------------------------------------------------------------------------------------- CLI


def test_cli_rationale_with_evidence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = tmp_path / "ref.csv"
    ref.write_text(
        'names,reasons\nc1,"He raised his voice and shouted. He said ""we won the final""."\n'
        "c2,She smiled broadly.\n",
        encoding="utf-8",
    )
    pred = tmp_path / "pred.jsonl"
    pred.write_text(
        json.dumps(
            {"id": "c1", "emotions": ["excited"], "rationale": [{"cue": "loud voice", "cue_id": "A1"}]}
        )
        + "\n"
        + json.dumps({"id": "c2", "rationale": "A wide smile. [F9] nose wrinkled."})
        + "\n",
        encoding="utf-8",
    )
    evidence = tmp_path / "cues.jsonl"
    record = Clip("c1", cues=list(EVIDENCE)).to_dict()
    evidence.write_text(
        json.dumps({"clip": "c1", "cues": record["cues"], "text": "..."})
        + "\n"
        + json.dumps({"name": "c2", "evidence": ["F1 [0.4-1.8s] AU12 lip corner puller: strong"]})
        + "\n",
        encoding="utf-8",
    )
    out = tmp_path / "scores.json"
    rc = main(["eval", "rationale", "--pred", str(pred), "--ref", str(ref), "--evidence", str(evidence),
               "--output", str(out)])  # fmt: skip
    assert rc == 0
    table = capsys.readouterr().out
    assert "overall" in table and "acoustic" in table and "grounding" in table
    result = json.loads(out.read_text())
    assert result["rationale"]["n"] == 2
    assert set(result["rationale"]["samples"]) == {"c1", "c2"}
    assert result["grounding"]["samples"]["c1"]["score"] == 1.0
    c2 = result["grounding"]["samples"]["c2"]
    assert "[F9] nose wrinkled" in c2["hallucinated"]  # F9 does not exist
    assert len(c2["supported"]) + len(c2["hallucinated"]) == 2


def test_cli_rationale_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = tmp_path / "ref.csv"
    ref.write_text("name,rationale\na,He shouts.\n", encoding="utf-8")
    pred = tmp_path / "pred.csv"
    pred.write_text("name,rationale\na,He shouts.\nb,She smiles.\n", encoding="utf-8")
    # The one name policy (affectllm.labels.align_names): a prediction the references lack is ignored, reported.
    assert main(["eval", "rationale", "--pred", str(pred), "--ref", str(ref), "--json"]) == 0
    captured = capsys.readouterr()
    assert "pred.csv:3: prediction for 'b', which is not in" in captured.err and "ignored" in captured.err
    assert json.loads(captured.out)["rationale"]["n"] == 1
    assert main(["eval", "rationale", "--pred", str(ref), "--ref", str(ref), "--threshold", "1.5"]) == 2
    assert "--threshold" in capsys.readouterr().err
    bad_evidence = tmp_path / "cues.jsonl"
    bad_evidence.write_text('{"clip": "a", "cues": [{"modality": "smell", "name": "x"}]}\n', encoding="utf-8")
    assert (
        main(["eval", "rationale", "--pred", str(ref), "--ref", str(ref), "--evidence", str(bad_evidence)])
        == 2
    )
    assert "cues.jsonl:1: bad evidence for 'a'" in capsys.readouterr().err
    numeric = tmp_path / "pred.jsonl"
    numeric.write_text('{"name": "a", "rationale": "He shouts."}\n{"name": "a2", "rationale": 3}\n', "utf-8")
    ref2 = tmp_path / "ref2.csv"
    ref2.write_text("name,rationale\na,He shouts.\na2,She smiles.\n", encoding="utf-8")
    assert main(["eval", "rationale", "--pred", str(numeric), "--ref", str(ref2)]) == 2
    assert "pred.jsonl:2: unreadable rationale for 'a2'" in capsys.readouterr().err
    short = tmp_path / "short.csv"
    short.write_text("name,rationale,extra\na,He shouts.,x\na2\n", encoding="utf-8")
    assert main(["eval", "rationale", "--pred", str(short), "--ref", str(ref2)]) == 2
    assert "short.csv:3: fewer cells than header columns" in capsys.readouterr().err


def test_atomic_cue_is_hashable_value() -> None:
    assert AtomicCue("x", "visual") == AtomicCue("x", "visual")
