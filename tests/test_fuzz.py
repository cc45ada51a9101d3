"""The fuzz corpus (tests/fuzz/): every command fed bad input must refuse it cleanly — an exit code, a short
message naming the file, no traceback, no hang — and leave every file it did not own byte-identical.

The default suite runs the whole generated corpus once (in child processes, ~1 minute) and checks each case;
``-m fuzz`` adds hypothesis-generated inputs. ``python tests/fuzz/runner.py`` prints the table.
"""

from __future__ import annotations

import json
import shutil
import string
from pathlib import Path

import pytest
from fuzz.corpus import Case, all_cases
from fuzz.runner import run_all, run_case, table

CASES = all_cases()


@pytest.fixture(scope="module")
def fuzz_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    records = run_all(CASES, tmp_path_factory.mktemp("fuzz"))
    print("\n" + table(records))
    return {r["id"]: r for r in records}


def test_corpus_is_large_and_covers_every_command() -> None:
    assert len(CASES) >= 400
    commands = {c.command for c in CASES}
    assert commands >= {
        "textualize",
        "predict",
        "chat",
        "eval ov",
        "eval closed",
        "eval rationale",
        "eval run",
        "train",
    }


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fuzz_case(case: Case, fuzz_results: dict[str, dict]) -> None:
    record = fuzz_results.get(case.id)
    assert record is not None, f"{case.id}: no result (the runner stopped early)"
    if case.known:
        if record["problems"]:
            pytest.xfail(f"known, outside this corpus' fixes: {case.known}")
        return  # fixed meanwhile: the KNOWN entry can go
    assert not record["problems"], f"{case.id} {case.argv}: {record['problems']}; stderr: {record['stderr']}"


# ---------------------------------------------------------------------------------- hypothesis (-m fuzz)

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_TEXT = st.text(alphabet=string.printable + "éü\u2028\ufeff\x00", max_size=200)
_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_ROWS = st.lists(
    st.dictionaries(st.sampled_from(["name", "id", "labels", "label", "rationale", "openset"]), _JSON_VALUES),
    max_size=5,
)
_LINES = st.one_of(
    _TEXT,
    _ROWS.map(lambda rows: "\n".join(json.dumps(r, allow_nan=True) for r in rows)),
    st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
)
_FUZZ_SETTINGS = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _run_generated(
    tmp_path: Path, case_id: str, argv: list[str], files: dict[str, bytes], may_change: tuple[str, ...] = ()
) -> dict:
    root = tmp_path / "runs"
    root.mkdir(exist_ok=True)
    case = Case(case_id, argv[0], argv, files, expect="any", may_change=may_change, timeout=60)
    try:
        return run_case(case, root)
    finally:
        shutil.rmtree(root / case_id, ignore_errors=True)


@pytest.mark.fuzz
@_FUZZ_SETTINGS
@given(pred=_LINES, gold=_LINES, suffix=st.sampled_from([".jsonl", ".csv", ".txt"]))
def test_hypothesis_eval_tables(tmp_path: Path, pred: str, gold: str, suffix: str) -> None:
    for sub in ("ov", "closed"):
        argv = ["eval", sub, "--pred", "{d}/p" + suffix, "--gold", "{d}/g" + suffix, "--output", "{d}/o.json"]
        files = {
            "p" + suffix: pred.encode("utf-8", "surrogatepass"),
            "g" + suffix: gold.encode("utf-8", "surrogatepass"),
        }
        record = _run_generated(tmp_path, f"hyp-{sub}", argv, files)
        assert not record["problems"], record


@pytest.mark.fuzz
@_FUZZ_SETTINGS
@given(
    body=st.lists(
        st.lists(
            st.sampled_from(["0", "1", "-1", "nan", "inf", "1e308", "x", "", "0.5"]), min_size=9, max_size=9
        ),
        max_size=6,
    )
)
def test_hypothesis_au_csv(tmp_path: Path, body: list[list[str]]) -> None:
    from fuzz.inputs import AU_HEADER

    data = "\n".join([AU_HEADER, *(",".join(row) for row in body)]).encode()
    record = _run_generated(
        tmp_path, "hyp-au", ["textualize", "{d}/x.au.csv", "--no-cache", "--asr", "none"], {"x.au.csv": data}
    )
    assert not record["problems"], record


@pytest.mark.fuzz
@_FUZZ_SETTINGS
@given(captions=_LINES, is_json=st.booleans())
def test_hypothesis_captions_and_transcripts(tmp_path: Path, captions: str, is_json: bool) -> None:
    name = "x.captions.json" if is_json else "x.transcript.txt"
    record = _run_generated(
        tmp_path,
        "hyp-cap",
        ["textualize", "{d}/" + name, "--no-cache", "--asr", "none"],
        {name: captions.encode("utf-8", "surrogatepass")},
    )
    assert not record["problems"], record


@pytest.mark.fuzz
@_FUZZ_SETTINGS
@given(existing=_LINES)
def test_hypothesis_resumable_out_never_loses_lines(tmp_path: Path, existing: str) -> None:
    manifest = b'{"id": "a", "transcript": "I am fine."}\n'
    record = _run_generated(
        tmp_path,
        "hyp-out",
        ["textualize", "{d}/m.jsonl", "--out", "{d}/out.jsonl", "--no-cache", "--asr", "none", "--quiet"],
        {"m.jsonl": manifest, "out.jsonl": existing.encode("utf-8", "surrogatepass")},
        may_change=("out.jsonl",),
    )
    assert not record["problems"], record
    if record["outcome"] == "refused":  # refused: the file the user pointed at is exactly as it was
        assert "out.jsonl" not in record["changed"], record


@pytest.mark.fuzz
def test_random_media_mutations_never_crash_the_process(tmp_path: Path) -> None:
    """300 seeded mutations of generated WAV and MP4 clips (bit flips, cuts, spliced headers), run in child
    processes like the corpus, so a decoder segfault is reported as a crash of one case instead of ending
    the test run."""
    import random

    from fuzz import inputs

    seeds = {
        "wav": inputs.wav_bytes(2),
        "wav8": inputs.wav_bytes(8),
        "mp4": inputs.mp4_bytes(),
        "mp471": inputs.mp4_bytes(audio_layout="7.1"),
    }
    cases = []
    for i in range(300):
        rng = random.Random(i)
        name, data = rng.choice(sorted(seeds.items()))
        how = rng.choice(["flips", "cut", "splice"])
        if how == "flips":
            data = inputs.bit_flips(data, i, count=rng.randint(1, 200))
        elif how == "cut":
            data = data[: rng.randrange(1, len(data))]
        else:
            other = seeds[rng.choice(sorted(seeds))]
            data = data[: rng.randrange(1, 200)] + other[rng.randrange(0, len(other)) :]
        ext = ".mp4" if name.startswith("mp4") else ".wav"
        cases.append(
            Case(
                f"mutation-{i}-{name}-{how}",
                "textualize",
                ["textualize", "{d}/clip" + ext, "--modalities", "audio", "--asr", "none", "--no-cache"],
                {"clip" + ext: data},
                expect="any",
                timeout=60,
            )
        )
    records = run_all(cases, tmp_path)
    print("\n" + table(records))
    bad = [(r["id"], r["problems"]) for r in records if r["problems"]]
    assert len(records) == len(cases) and not bad, bad[:10]
