"""The compiled emotion-wheel maps: structure, official tie-breaking rules and the shipped data files."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from affectllm.resources import data_path
from affectllm.wheel import VARIANTS, VERSIONS, load_emotion_wheels, normalize_version, wheel_maps


def test_variants_and_versions():
    assert VARIANTS[:2] == ("M1", "M2")
    assert VARIANTS[2:] == tuple(f"W{k}-L{level}" for k in range(1, 6) for level in (1, 2))
    assert VERSIONS == ("2025", "2026")
    from affectllm.cli._io import EW_VERSIONS  # the CLI's copy (kept numpy-free for --help)

    assert EW_VERSIONS == VERSIONS
    assert normalize_version(2026) == "2026" and normalize_version("v2025") == "2025"
    with pytest.raises(ValueError, match="2025, 2026"):
        normalize_version("2024")


def test_loading_is_cached_per_version():
    assert load_emotion_wheels() is load_emotion_wheels("2025") is load_emotion_wheels(2025)
    assert load_emotion_wheels("2026") is not load_emotion_wheels("2025")


def test_wheel_maps_levels_and_last_visited_wins():
    rows = [
        ["a", "a2", "x"],
        ["b", "b2", "dup"],
        ["a", "a1", "dup"],  # 'dup' again, in a later row but in the earlier level-1 group
    ]
    level1, level2 = wheel_maps(rows)
    # The official code walks level-1 groups in first-seen order (a, then b), so b's 'dup' is visited last,
    # although row 3 is the last row naming it.
    assert level1["dup"] == "b" and level2["dup"] == "b2"
    assert level1["x"] == "a" and level2["x"] == "a2"
    assert level1["a2"] == "a" and level2["a2"] == "a2"
    # A level-1 word maps to its alphabetically first level-2 child at level 2.
    assert level1["a"] == "a" and level2["a"] == "a1"


def test_known_mappings_2025():
    wheels = load_emotion_wheels("2025")
    # M1 takes the alphabetically first base word; M2 the first wheel word of its synonyms.
    assert wheels.map_label("happy", "M1") == "happiness"
    assert wheels.map_label("happy", "M2") == "joy"
    assert wheels.map_label("Furious ", "W1-L1") == "mad"  # case and spaces do not matter
    assert wheels.map_label("furious", "W1-L2") == "anger"
    assert wheels.map_label("surprised", "W5-L1") is None  # in the vocabulary, but not in wheel 5
    assert wheels.map_label("neutral", "M1") is None
    assert not wheels.in_vocabulary("neutral") and wheels.in_vocabulary("JOYFUL")


def test_version_2026_separates_less_forms():
    # 2025 lists 'fear' among the forms of 'fearless', so 'fear' can reach 'brave' -> happy in wheel 2.
    assert load_emotion_wheels("2025").map_label("fear", "W2-L1") == "happy"
    assert load_emotion_wheels("2026").map_label("fear", "W2-L1") == "fearful"
    assert len(load_emotion_wheels("2025").label_rows) == 7386  # the count the official code reports


def test_map_labels_and_ids():
    wheels = load_emotion_wheels()
    assert wheels.map_labels(["joyful", "xyzzy", "happy", "sad"], "W1-L1") == ["happy", "happy", "sad"]
    ids = wheels.map_ids(["joyful", "happy", "sad", "xyzzy"], "W1-L1")
    assert isinstance(ids, frozenset) and {wheels.words[i] for i in ids} == {"happy", "sad"}
    assert wheels.map_ids([], "M1") == frozenset()
    with pytest.raises(ValueError, match="unknown variant"):
        wheels.map_labels(["happy"], "W6-L1")


def test_tables_are_complete():
    synonyms = json.loads(data_path("ew", "synonyms.json").read_text())["synonyms"]
    for version in VERSIONS:
        rows = json.loads(data_path("ew", f"format_{version}.json").read_text())["rows"]
        # The official code indexes the synonym table with every base word (a KeyError otherwise).
        assert all(name in synonyms for name, _ in rows)
    wheel_words = {
        w
        for rows in json.loads(data_path("ew", "wheels.json").read_text())["wheels"].values()
        for row in rows
        for w in row
    }
    assert all(set(targets) <= wheel_words for targets in synonyms.values())
    wheels = load_emotion_wheels()
    assert wheels.table.shape == (len(wheels.label_rows) + 1, len(VARIANTS))
    assert (wheels.table[wheels.unknown_row] == -1).all()
    assert (wheels.table[:-1, 0] >= 0).all()  # every vocabulary label has a base word


def test_converter_reproduces_shipped_files(shared_data, tmp_path):
    pytest.importorskip("openpyxl")
    script = Path(__file__).resolve().parents[1] / "tools" / "convert_emotion_wheel.py"
    spec = importlib.util.spec_from_file_location("convert_emotion_wheel", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    convert = module.main

    assert convert([str(shared_data / "emotion_wheel"), str(tmp_path)]) == 0
    for name in ("wheels.json", "synonyms.json", "format_2025.json", "format_2026.json"):
        assert json.loads((tmp_path / name).read_text()) == json.loads(data_path("ew", name).read_text()), (
            name
        )
