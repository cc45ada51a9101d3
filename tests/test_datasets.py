"""Dataset converters: upstream layouts written in tmp_path, plus the real shared files when present."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from affectllm.datasets import available_datasets, get_dataset, load_dataset_rows
from affectllm.datasets._common import find_media, fix_text, parity_split
from affectllm.datasets.mer import mer2023_fold, ovmerd_names
from affectllm.errors import InputError

MELD_HEADER = (
    "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"
)


# Where each dataset's upstream files lie in ../shared/data (CREMA-D is not there); shared by the tests that
# run every shipped task and check the recipes against them.
SHARED_DIRS = {
    "mer2023": "mer2023",
    "ovmerd": "ovmerd",
    "emer": "emer",
    "meld": "meld",
    "emorynlp": "emorynlp",
    "goemotions": "goemotions",
    "emodb": "audio/emodb",
    "ravdess": "audio/ravdess",
}


def write_meld(folder: Path, name: str = "dev_sent_emo.csv", encoding: str = "utf-8") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        # Out of order on purpose: context must follow Utterance_ID, not file order.
        '3,"No, I\u2019m fine.",Ross,neutral,neutral,0,1,1,1,"00:00:02,000","00:00:03,000"',
        '1,"Oh my God, you\u2019re here!",Rachel,surprise,positive,0,0,1,1,"00:00:00,000","00:00:01,500"',
        '2,Get out!,Monica,anger,negative,0,2,1,1,"00:00:04,000","00:00:05,000"',
        '4,Hi.,Joey,joy,positive,1,0,1,2,"00:01:00,000","00:01:01,000"',
    ]
    path = folder / name
    path.write_bytes((MELD_HEADER + "\n".join(rows) + "\n").encode(encoding))
    return path


def test_registry_lists_every_converter() -> None:
    assert {
        "ovmerd",
        "emer",
        "mer2023",
        "meld",
        "emorynlp",
        "goemotions",
        "emodb",
        "ravdess",
        "cremad",
        "manifest",
    } <= set(available_datasets())
    with pytest.raises(InputError, match="unknown dataset"):
        get_dataset("nope")


@pytest.mark.parametrize(
    ("broken", "fixed"),
    [
        ("You\u00e2\u20ac\u2122re", "You\u2019re"),  # UTF-8 read as cp1252
        ("caf\u00c3\u00a9", "caf\u00e9"),
        ("I\u0092m here\u0085", "I\u2019m here\u2026"),  # cp1252 code points stored as C1 controls
        ("a\u00a0b ", "a b"),
        ("caf\u00e9\u2026 ok", "caf\u00e9\u2026 ok"),  # already clean text is left alone
    ],
)
def test_fix_text_repairs_released_encoding_damage(broken: str, fixed: str) -> None:
    assert fix_text(broken) == fixed


def test_meld_rows_ids_context_and_labels(tmp_path: Path) -> None:
    write_meld(tmp_path)
    rows = {r["id"]: r for r in load_dataset_rows("meld", tmp_path, "dev")}
    assert set(rows) == {"dia0_utt0", "dia0_utt1", "dia0_utt2", "dia1_utt0"}
    third = rows["dia0_utt2"]
    assert third["label"] == "anger" and third["labels"] == ["anger"]
    assert third["speaker"] == "Monica" and third["sentiment"] == "negative"
    assert [t["speaker"] for t in third["context"]] == ["Rachel", "Ross"]
    assert third["context"][0]["text"] == "Oh my God, you\u2019re here!"
    assert rows["dia1_utt0"]["context"] == []
    assert third["source"].startswith("dev_sent_emo.csv:")
    limited = load_dataset_rows("meld", tmp_path, "dev", context_turns=1)
    assert [len(r["context"]) for r in limited if r["id"] == "dia0_utt2"] == [1]


def test_meld_cp1252_file_and_media_lookup(tmp_path: Path) -> None:
    path = write_meld(tmp_path, encoding="utf-8")
    # The original release had raw cp1252 bytes (0x92 for ’), which are not valid UTF-8.
    path.write_bytes(path.read_bytes().replace("\u2019".encode(), b"\x92"))
    (tmp_path / "dev_splits_complete").mkdir()
    (tmp_path / "dev_splits_complete" / "dia0_utt0.mp4").write_bytes(b"")
    rows = {r["id"]: r for r in load_dataset_rows("meld", tmp_path, "dev")}
    assert rows["dia0_utt0"]["transcript"] == "Oh my God, you\u2019re here!"
    assert rows["dia0_utt0"]["media"].endswith("dev_splits_complete/dia0_utt0.mp4")
    assert rows["dia0_utt1"]["media"] is None


def test_meld_errors_name_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"dev_sent_emo\.csv"):
        load_dataset_rows("meld", tmp_path, "dev")
    (tmp_path / "dev_sent_emo.csv").write_text("Utterance,Speaker\nhi,Ross\n", encoding="utf-8")
    with pytest.raises(InputError, match="missing column") as info:
        load_dataset_rows("meld", tmp_path, "dev")
    assert info.value.line == 1
    write_meld(tmp_path)
    text = (tmp_path / "dev_sent_emo.csv").read_text(encoding="utf-8").replace(",anger,", ",furious,")
    (tmp_path / "dev_sent_emo.csv").write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match="furious") as info:
        load_dataset_rows("meld", tmp_path, "dev")
    assert info.value.line == 4
    with pytest.raises(InputError, match="does not exist"):
        load_dataset_rows("meld", tmp_path / "missing", "dev")


def test_test_split_needs_final(tmp_path: Path) -> None:
    write_meld(tmp_path, "test_sent_emo.csv")
    with pytest.raises(InputError, match="final"):
        load_dataset_rows("meld", tmp_path, "test")
    assert len(load_dataset_rows("meld", tmp_path, "test", final=True)) == 4
    with pytest.raises(InputError, match="no split"):
        load_dataset_rows("meld", tmp_path, "validation")


def test_emorynlp_scenes_restart_per_episode(tmp_path: Path) -> None:
    header = "Utterance,Speaker,Emotion,Scene_ID,Utterance_ID,Season,Episode,Start_Time,End_Time\n"
    body = (
        "Coffee.,['Rachel Green'],Neutral,1,1,1,15,00:00:03.795,00:00:05.004\n"
        "Thank you.,['Joey Tribbiani'],Joyful,1,2,1,15,00:00:05.171,00:00:07.423\n"
        "Hey.,\"['Ross Geller', 'Monica Geller']\",Mad,1,1,1,16,00:00:01.000,00:00:02.000\n"
    )
    (tmp_path / "emorynlp_dev_final.csv").write_text(header + body, encoding="utf-8")
    rows = {r["id"]: r for r in load_dataset_rows("emorynlp", tmp_path, "dev")}
    assert set(rows) == {"s01_e15_c01_u001", "s01_e15_c01_u002", "s01_e16_c01_u001"}
    assert rows["s01_e15_c01_u002"]["context"] == [{"speaker": "Rachel Green", "text": "Coffee."}]
    assert rows["s01_e16_c01_u001"]["context"] == []  # same Scene_ID, different episode
    assert rows["s01_e16_c01_u001"]["speaker"] == "Ross Geller & Monica Geller"
    assert rows["s01_e15_c01_u002"]["label"] == "joyful"


def write_goemotions(folder: Path) -> None:
    names = ["admiration", "amusement", "anger", "joy", "neutral"]
    (folder / "emotions.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    (folder / "ekman_mapping.json").write_text(
        json.dumps({"anger": ["anger"], "joy": ["joy", "amusement", "admiration"]}), encoding="utf-8"
    )
    (folder / "dev.tsv").write_text(
        "So funny\t1,3\tc1\nWhatever\t4\tc2\nGreat job\t0\tc3\n", encoding="utf-8"
    )


def test_goemotions_multilabel_ekman_and_neutral(tmp_path: Path) -> None:
    write_goemotions(tmp_path)
    rows = {r["id"]: r for r in load_dataset_rows("goemotions", tmp_path, "dev")}
    assert rows["c1"]["labels"] == ["amusement", "joy"] and rows["c2"]["labels"] == ["neutral"]
    ekman = {r["id"]: r for r in load_dataset_rows("goemotions", tmp_path, "dev", taxonomy="ekman")}
    assert ekman["c1"]["labels"] == ["joy"] and ekman["c3"]["labels"] == ["joy"]
    dropped = load_dataset_rows("goemotions", tmp_path, "dev", drop_neutral=True)
    assert [r["id"] for r in dropped] == ["c1", "c3"]
    (tmp_path / "dev.tsv").write_text("ok\t0\ta\nbad\t9\tb\n", encoding="utf-8")
    with pytest.raises(InputError, match="label id '9'") as info:
        load_dataset_rows("goemotions", tmp_path, "dev")
    assert info.value.line == 2


def _names(n: int) -> list[str]:
    return [f"sample_{i:08d}" for i in range(n)]


def test_ovmerd_from_the_mer2025_release_layout(tmp_path: Path) -> None:
    names = _names(12)
    gold = "name,openset\n" + "".join(f"{n},\"['happy', 'relaxed']\"\n" for n in names)
    (tmp_path / "track2_train_ovmerd.csv").write_text(gold, encoding="utf-8")
    subs = "name,chinese,english\n" + "".join(f"{n},你好,Hello {i}\n" for i, n in enumerate(names))
    (tmp_path / "subtitle_chieng.csv").write_text(subs, encoding="utf-8")
    (tmp_path / "track3_train_ovmerd.csv").write_text(
        "name,reason\n" + "".join(f"{n},He smiles.\n" for n in names), encoding="utf-8"
    )
    dev = load_dataset_rows("ovmerd", tmp_path, "dev")
    test = load_dataset_rows("ovmerd", tmp_path, "test", final=True)
    assert {r["id"] for r in dev} == {n for n in names if parity_split(n) == "dev"}
    assert len(dev) + len(test) == 12 and dev and test
    assert dev[0]["labels"] == ["happy", "relaxed"] and dev[0]["transcript"].startswith("Hello")
    assert dev[0]["rationale"] == "He smiles."
    with pytest.raises(InputError, match="final"):
        load_dataset_rows("ovmerd", tmp_path, "all")
    assert ovmerd_names(tmp_path) == set(names)


def test_emer_v1_and_mer2023(tmp_path: Path) -> None:
    names = _names(20)
    v1 = "names,emotions,subtitles,reasons\n" + "".join(f"{n},happy,Hi.,He smiles broadly.\n" for n in names)
    (tmp_path / "gt-eng.csv").write_text(v1, encoding="utf-8")
    rows = load_dataset_rows("emer", tmp_path, "dev", version="v1")
    assert rows and all(r["label"] == "happy" and r["rationale"] == "He smiles broadly." for r in rows)
    mer = "name,emotion,valence,chinese,english\n" + "".join(f"{n},worried,-1.5,,Oh no.\n" for n in names)
    (tmp_path / "train.csv").write_text(mer, encoding="utf-8")
    dev = load_dataset_rows("mer2023", tmp_path, "dev")
    train = load_dataset_rows("mer2023", tmp_path, "train")
    assert {r["id"] for r in dev}.isdisjoint({r["id"] for r in train}) and len(dev) + len(train) == 20
    assert all(mer2023_fold(r["id"]) == "dev" for r in dev) and dev[0]["valence"] == -1.5
    excluded = load_dataset_rows("mer2023", tmp_path, "train", exclude_ids=[train[0]["id"]])
    assert len(excluded) == len(train) - 1
    (tmp_path / "train.csv").write_text(mer.replace("worried", "worrying", 1), encoding="utf-8")
    with pytest.raises(InputError, match="worrying") as info:
        load_dataset_rows("mer2023", tmp_path, "train" if mer2023_fold(names[0]) == "train" else "dev")
    assert info.value.line == 2


def test_speech_corpora_labels_from_file_names(tmp_path: Path) -> None:
    for name in ("03a01Fa.wav", "16b10Wb.wav"):
        (tmp_path / "emodb" / "wav").mkdir(parents=True, exist_ok=True)
        (tmp_path / "emodb" / "wav" / name).write_bytes(b"")
    emodb = {r["id"]: r for r in load_dataset_rows("emodb", tmp_path / "emodb", "all", final=True)}
    assert emodb["03a01Fa"]["label"] == "happiness" and emodb["16b10Wb"]["label"] == "anger"
    assert emodb["03a01Fa"]["transcript"] == "Der Lappen liegt auf dem Eisschrank."
    actor = tmp_path / "ravdess" / "Actor_12"
    actor.mkdir(parents=True)
    (actor / "03-01-05-02-02-01-12.wav").write_bytes(b"")
    (actor / "03-02-03-01-01-01-12.wav").write_bytes(b"")  # song: skipped by default
    rav = load_dataset_rows("ravdess", tmp_path / "ravdess", "train")
    assert [(r["label"], r["sex"], r["intensity"]) for r in rav] == [("angry", "female", "strong")]
    assert rav[0]["media"].endswith(".wav") and rav[0]["transcript"] == "Dogs are sitting by the door."
    (tmp_path / "crema" / "AudioWAV").mkdir(parents=True)
    (tmp_path / "crema" / "AudioWAV" / "1001_DFA_ANG_XX.wav").write_bytes(b"")
    crema = load_dataset_rows("cremad", tmp_path / "crema", "dev")
    assert crema[0]["label"] == "anger" and crema[0]["transcript"] == "Don't forget a jacket."
    (tmp_path / "crema" / "AudioWAV" / "notes.wav").write_bytes(b"")
    with pytest.raises(InputError, match=r"notes\.wav"):
        load_dataset_rows("cremad", tmp_path / "crema", "dev")


def test_speech_splits_are_speaker_independent(tmp_path: Path) -> None:
    """train and dev never share a speaker; "all" is their union and, holding dev, needs final=True."""
    from affectllm.datasets.speech import speaker_split

    names = {
        "emodb": ["13a01Fa.wav", "15b10Wb.wav", "03a01Ta.wav", "16a02Na.wav"],
        "ravdess": ["03-01-05-02-02-01-01.wav", "03-01-04-01-01-01-04.wav", "03-01-03-01-01-01-05.wav"],
        "cremad": [
            "1001_DFA_ANG_XX.wav",
            "1018_IEO_SAD_HI.wav",
            "1019_IEO_HAP_LO.wav",
            "1091_TAI_FEA_MD.wav",
        ],
    }
    expected_dev = {"emodb": 2, "ravdess": 2, "cremad": 2}
    for dataset, files in names.items():
        folder = tmp_path / dataset
        folder.mkdir()
        for name in files:
            (folder / name).write_bytes(b"")
        train = load_dataset_rows(dataset, folder, "train")
        dev = load_dataset_rows(dataset, folder, "dev")
        assert len(dev) == expected_dev[dataset] and len(train) + len(dev) == len(files), dataset
        assert not {r["speaker"] for r in train} & {r["speaker"] for r in dev}, dataset
        assert all(speaker_split(dataset, r["speaker"]) == "dev" for r in dev)
        assert {r["split"] for r in dev} == {"dev"}
        with pytest.raises(InputError, match="final"):
            load_dataset_rows(dataset, folder, "all")
        assert len(load_dataset_rows(dataset, folder, "all", final=True)) == len(files)


def test_manifest_jsonl_relative_media_and_duplicates(tmp_path: Path) -> None:
    lines = [
        {"id": "a", "transcript": "I won!", "labels": ["happy", "proud"], "media": "a.wav", "extra": 1},
        {"id": "b", "transcript": "Leave.", "label": "angry"},
    ]
    (tmp_path / "dev.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    rows = load_dataset_rows("manifest", tmp_path, "dev")
    assert rows[0]["media"] == str(tmp_path / "a.wav") and rows[0]["extra"] == 1
    assert rows[1]["labels"] == ["angry"] and rows[1]["label"] == "angry"
    (tmp_path / "dev.jsonl").write_text(
        json.dumps(lines[0]) + "\n" + json.dumps(lines[0]) + "\n", encoding="utf-8"
    )
    with pytest.raises(InputError, match="duplicate id"):
        load_dataset_rows("manifest", tmp_path, "dev")
    (tmp_path / "dev.jsonl").write_text("{not json\n", encoding="utf-8")
    with pytest.raises(InputError) as info:
        load_dataset_rows("manifest", tmp_path, "dev")
    assert info.value.line == 1


# ------------------------------------------------------------------------------- the real shared files


def test_shared_ovmerd_emer_mer2023(shared_data: Path) -> None:
    dev = load_dataset_rows("ovmerd", shared_data / "ovmerd", "dev")
    assert len(dev) == 170
    # The shared dev half was cut with the same SHA-1 parity rule the converter uses.
    assert all(parity_split(r["id"]) == "dev" for r in dev)
    with_subtitle = [r for r in dev if r["transcript"]]
    assert len(with_subtitle) > 150 and all(r["labels"] for r in dev)
    assert sum(1 for r in dev if r["rationale"]) == 170  # EMER v2 found in the sibling emer/ folder
    v2 = load_dataset_rows("emer", shared_data / "emer", "dev")
    assert {r["id"] for r in v2} == {r["id"] for r in dev} and all(r["labels"] for r in v2)
    v1 = load_dataset_rows("emer", shared_data / "emer", "dev", version="v1")
    assert 0 < len(v1) < 84 and {r["label"] for r in v1} <= {"angry", "happy", "worried", "sad", "surprise"}
    mer = load_dataset_rows("mer2023", shared_data / "mer2023", "dev")
    assert 500 < len(mer) < 800 and {r["label"] for r in mer} == {
        "neutral",
        "angry",
        "happy",
        "sad",
        "worried",
        "surprise",
    }


def test_shared_meld_emorynlp_goemotions(shared_data: Path) -> None:
    meld = load_dataset_rows("meld", shared_data / "meld", "dev")
    assert len(meld) == 1109 and meld[1]["context"][0]["speaker"] == "Phoebe"
    assert not any("\u00e2\u20ac" in r["transcript"] for r in meld)
    emory = load_dataset_rows("emorynlp", shared_data / "emorynlp", "dev")
    assert len(emory) == 954 and {r["label"] for r in emory} == set(get_dataset("emorynlp").labels)
    go = load_dataset_rows("goemotions", shared_data / "goemotions", "dev")
    assert len(go) == 5426 and any(len(r["labels"]) > 1 for r in go)


def test_shared_speech(shared_data: Path) -> None:
    emodb = load_dataset_rows("emodb", shared_data / "audio" / "emodb", "all", final=True)
    assert len(emodb) == 21 and all(Path(r["media"]).is_file() for r in emodb)
    # Speakers 13 and 15 are the dev speakers: 6 of the shared 21 files, 6 of the 7 emotions.
    dev = load_dataset_rows("emodb", shared_data / "audio" / "emodb", "dev")
    train = load_dataset_rows("emodb", shared_data / "audio" / "emodb", "train")
    assert (len(dev), len(train)) == (6, 15) and {r["speaker"] for r in dev} == {"13", "15"}
    assert len({r["label"] for r in dev}) == 6
    from affectllm.datasets.speech import EMODB_CODES

    # labels.csv and the file-name code agree on every file.
    assert all(EMODB_CODES[r["id"][5]] == r["label"] for r in emodb)
    ravdess = load_dataset_rows("ravdess", shared_data / "audio" / "ravdess", "dev")
    assert [r["label"] for r in ravdess] == ["neutral"]


def test_media_added_between_conversions_is_found(tmp_path: Path) -> None:
    # Folder listings are cached within one conversion only; a later load must see new media.
    (tmp_path / "labels.csv").write_text("file,emotion,speaker,sex,text\n")
    wav_dir = tmp_path / "wav"
    wav_dir.mkdir()
    assert find_media(tmp_path, "x", ["wav"], [".wav"]) is None
    (wav_dir / "x.wav").write_bytes(b"RIFF")
    with pytest.raises(InputError):
        load_dataset_rows("emodb", tmp_path, split="train")  # clears the listings before converting
    assert find_media(tmp_path, "x", ["wav"], [".wav"]) == str(wav_dir / "x.wav")
