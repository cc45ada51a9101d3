"""Label-list parsing (the official rule) and label files (CSV / JSONL) with their error messages."""

from __future__ import annotations

import json

import numpy as np
import pytest

from affectllm.errors import InputError
from affectllm.labels import (
    parse_label_list,
    read_label_file,
    read_label_file_with_lines,
    split_label_string,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("['Concerned', 'worried', 'serious']", ["concerned", "worried", "serious"]),  # Python repr (OV-MERD)
        ('["Frustrated", "annoyed"]', ["frustrated", "annoyed"]),  # JSON array
        ("[anger, frustration, anxiety]", ["anger", "frustration", "anxiety"]),  # bare list in brackets
        ("happy, sad", ["happy", "sad"]),  # no brackets
        ("happy", ["happy"]),
        ("[]", []),
        ("", []),
        ("[ , ,]", []),
        # Only one bracket each side is removed, as the official code does; the rest stays in the labels.
        ("[[happy]]", ["[happy]"]),
        ("[],[negative], [competitive]", ["]", "[negative]", "[competitive"]),
        # No whitespace is stripped before the bracket check.
        (" [happy]", ["[happy"]),
        # Apostrophes split labels in the official rule.
        ("[don't know]", ["don", "t know"]),
        (["Happy ", " SAD", ""], ["happy", "sad"]),
        (("calm",), ["calm"]),
        (np.array(["Calm", "sad"]), ["calm", "sad"]),
        (None, []),
        (float("nan"), []),
    ],
)
def test_parse_label_list(value, expected):
    assert parse_label_list(value) == expected


def test_split_label_string_keeps_case():
    assert split_label_string("['Happy', \"Sad\"]") == ["Happy", "Sad"]


@pytest.mark.parametrize("value", [3, 1.5, {"a": 1}, ["happy", 3], [["nested"]]])
def test_parse_label_list_rejects_non_lists(value):
    with pytest.raises(ValueError):
        parse_label_list(value)


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_read_csv_labels_and_openset(tmp_path):
    pred = _write(tmp_path / "pred.csv", 'name,labels\ns1,"[happy, joyful]"\ns2,[]\ns3,\n')
    assert read_label_file(pred) == {"s1": ["happy", "joyful"], "s2": [], "s3": []}
    gold = _write(tmp_path / "gold.csv", "name,openset\ns1,\"['sad', 'Depressed']\"\n")
    assert read_label_file(gold) == {"s1": ["sad", "depressed"]}


def test_read_with_lines(tmp_path):
    path = _write(tmp_path / "p.csv", 'name,labels\ns1,"[happy,\nsad]"\n\ns2,[calm]\n')
    labels, lines = read_label_file_with_lines(path)
    assert labels == {"s1": ["happy", "sad"], "s2": ["calm"]}
    assert lines == {"s1": 2, "s2": 5}


def test_read_csv_label_column_and_extra_columns(tmp_path):
    path = _write(tmp_path / "p.csv", 'id,name,emotions,labels\n1,s1,"[calm]","[sad]"\n')
    assert read_label_file(path, label_column="emotions") == {"s1": ["calm"]}
    assert read_label_file(path) == {"s1": ["sad"]}


def test_read_csv_pandas_missing_values_are_empty(tmp_path):
    # The official code reads CSVs with pandas, which turns these cells into NaN, i.e. no labels.
    path = _write(tmp_path / "p.csv", "name,labels\ns1,None\ns2,NA\ns3,null\ns4,none\n")
    assert read_label_file(path) == {"s1": [], "s2": [], "s3": [], "s4": ["none"]}


def test_read_csv_bom_and_multiline_cells(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes('\ufeffname,labels\ns1,"[happy,\nsad]"\ns2,[calm]\ns2,[calm]\n'.encode())
    with pytest.raises(InputError) as err:
        read_label_file(path)
    # s2 first appears on line 4 (the quoted cell of s1 spans lines 2-3), again on line 5.
    assert err.value.line == 5
    assert "duplicate name 's2'" in str(err.value) and "line 4" in str(err.value)
    assert str(path) in str(err.value)


def test_read_csv_errors(tmp_path):
    no_name = _write(tmp_path / "a.csv", "id,labels\ns1,[happy]\n")
    with pytest.raises(InputError, match="no 'name' column") as err:
        read_label_file(no_name)
    assert err.value.line == 1 and err.value.path == str(no_name)

    no_labels = _write(tmp_path / "b.csv", "name,emotion\ns1,happy\n")
    with pytest.raises(InputError, match="no label column"):
        read_label_file(no_labels)
    with pytest.raises(InputError, match="no label column 'x'"):
        read_label_file(no_labels, label_column="x")

    ragged = _write(tmp_path / "c.csv", "name,labels\ns1,[happy]\ns2,[sad],extra\n")
    with pytest.raises(InputError, match="expected 2 fields") as err:
        read_label_file(ragged)
    assert err.value.line == 3

    empty_name = _write(tmp_path / "d.csv", "name,labels\n,[sad]\n")
    with pytest.raises(InputError, match="empty name"):
        read_label_file(empty_name)

    with pytest.raises(InputError, match="empty file"):
        read_label_file(_write(tmp_path / "e.csv", ""))
    with pytest.raises(InputError, match="file not found"):
        read_label_file(tmp_path / "missing.csv")
    latin = tmp_path / "f.csv"
    latin.write_bytes(b"name,labels\ns1,[caf\xe9]\n")
    with pytest.raises(InputError, match="not UTF-8"):
        read_label_file(latin)


def test_read_jsonl(tmp_path):
    lines = [
        {"name": "s1", "labels": ["Happy", "joyful"]},
        {"name": "s2", "labels": "[sad, 'calm']"},
        {"name": "s3", "labels": None},
        {"name": 7, "labels": []},
    ]
    path = _write(tmp_path / "p.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    assert read_label_file(path) == {"s1": ["happy", "joyful"], "s2": ["sad", "calm"], "s3": [], "7": []}
    gold = _write(tmp_path / "g.jsonl", json.dumps({"name": "s1", "openset": ["sad"], "extra": 1}) + "\n")
    assert read_label_file(gold) == {"s1": ["sad"]}
    # Content decides the format when the extension does not.
    other = _write(tmp_path / "p.txt", json.dumps({"name": "s1", "labels": ["calm"]}) + "\n")
    assert read_label_file(other) == {"s1": ["calm"]}


@pytest.mark.parametrize(
    ("line2", "message"),
    [
        ('{"name": "s2", "labels": [happy]}', "malformed JSON"),
        ('["s2", ["happy"]]', "expected a JSON object"),
        ('{"labels": ["happy"]}', r"no 'id' \(or 'name'\) key"),
        ('{"name": "s2", "feelings": ["happy"]}', "no label column"),
        ('{"name": "s2", "labels": ["happy", 1]}', "unparsable label list"),
        ('{"name": "s2", "labels": {"happy": 1}}', "unparsable label list"),
        ('{"name": "s1", "labels": ["sad"]}', "duplicate name 's1'"),
        ('{"name": null, "labels": ["sad"]}', "'name' must be a string"),
    ],
)
def test_read_jsonl_errors_name_the_line(tmp_path, line2, message):
    path = _write(tmp_path / "p.jsonl", '{"name": "s1", "labels": ["calm"]}\n' + line2 + "\n")
    with pytest.raises(InputError, match=message) as err:
        read_label_file(path)
    assert err.value.line == 2
    assert str(err.value).startswith(f"{path}:2: ")
