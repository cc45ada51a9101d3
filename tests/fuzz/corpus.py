"""The fuzz corpus: every case is generated here from the input kinds of :mod:`inputs` and the commands.

A case is a command line run in its own folder (``{d}`` in ``argv`` is that folder), the files it starts with,
what it should do (``refuse``: a clean error; ``accept``: exit 0; ``any``: either, as long as it neither
crashes, hangs nor loses data) and, for refusals, a text the message must contain (the bad file's name).
Files that exist before a run must be byte-identical after it unless listed in ``may_change``.
Commands that need a model get an OpenAI-compatible backend at a closed local port, so a case that passes
input validation ends in a clean connection error instead of loading weights.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

try:
    from . import inputs as I
except ImportError:  # run as a script: tests/fuzz/runner.py puts tests/ on sys.path
    from fuzz import inputs as I  # type: ignore[no-redef]

DEAD_ENDPOINT = ["--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--model", "fuzz"]
Content = (
    bytes | str
)  # bytes: a file; str: "@kind" for a special path (see inputs.SPECIAL) or "@readonly-dir"


@dataclass
class Case:
    id: str
    command: str
    argv: list[str]
    files: dict[str, Content] = field(default_factory=dict)
    expect: str = "refuse"
    names: str | None = None
    may_change: tuple[str, ...] = ()
    # A crash in code outside this corpus' fixes, reported rather than hidden: the test is an xfail.
    known: str | None = None
    timeout: float = 60.0


def _special_argv(kind: str, rel: str) -> str:
    return {"dev-null": "/dev/null", "dev-zero": "/dev/zero"}.get(kind, "{d}/" + rel)


# ------------------------------------------------------------------------------------------- output paths

# name -> (files to create, the path to pass, expectation, text the refusal must name, may_change).
# "{input}" in a path is replaced by the case's input file.
OUTPUT_KINDS: dict[str, tuple[dict[str, Content], str, str, str | None, tuple[str, ...]]] = {
    "same-as-input": ({}, "{input}", "refuse", "input", ()),
    "symlink-to-input": ({"link.out": "@symlink-to-input"}, "{d}/link.out", "refuse", "input", ()),
    "folder": ({"outdir": "@folder"}, "{d}/outdir", "refuse", "outdir", ()),
    "dev-null": ({}, "/dev/null", "refuse", "/dev/null", ()),
    "dev-full": ({}, "/dev/full", "refuse", "/dev/full", ()),
    "fifo": ({"pipe.out": "@fifo"}, "{d}/pipe.out", "refuse", "pipe.out", ()),
    "under-a-file": ({"plain.txt": b"keep me\n"}, "{d}/plain.txt/out.json", "refuse", "plain.txt", ()),
    "symlink-loop": ({"loop.out": "@symlink-loop"}, "{d}/loop.out", "refuse", "loop.out", ()),
    "dangling-symlink": ({"dang.out": "@dangling-symlink"}, "{d}/dang.out", "refuse", "dang.out", ()),
    "new-subfolder": ({}, "{d}/new/sub/out.json", "accept", None, ()),
    "readonly-folder": ({"ro": "@readonly-dir"}, "{d}/ro/out.json", "any", "ro", ()),
}


def _with_output(
    base_files: dict[str, Content], input_rel: str, kind: str, extra_ok: set[str] = frozenset()
) -> tuple[dict[str, Content], str, str, str | None, tuple[str, ...]]:
    files, path, expect, names, may_change = OUTPUT_KINDS[kind]
    files = {k: (f"@symlink:{input_rel}" if v == "@symlink-to-input" else v) for k, v in files.items()}
    path = path.replace("{input}", "{d}/" + input_rel)
    if names == "input":
        names = input_rel
    if kind in extra_ok:
        expect = "any"
    return {**base_files, **files}, path, expect, names, may_change


# ------------------------------------------------------------------------------------------------- eval

# Readable tables whose content is odd but legal: a quoted cell may span lines, NaN/null labels are "no
# label", an empty prediction file scores every sample as unanswered (with a warning per name).
OV_ACCEPTABLE = {
    "empty",
    "csv-header-only",
    "csv-unbalanced-quote",
    "jsonl-nan-labels",
    "jsonl-valid",
    "csv-valid",
    "csv-crlf-bom",
    "jsonl-bom",
    "jsonl-labels-null",
    "csv-huge-field",
    "csv-nul",
    "csv-duplicate-names",
    "jsonl-duplicate",
    "jsonl-labels-nested",
}


def _eval_label_cases(command: str, extra: list[str], gold: bytes) -> Iterator[Case]:
    sub = command.split()[1]
    for slot in ("pred", "gold"):
        for kind, (suffix, make) in I.LABEL_FILES.items():
            bad = f"{slot}{suffix}"
            other = "gold.jsonl" if slot == "pred" else "pred.jsonl"
            files = {bad: make(), other: gold}
            args = {"pred": "{d}/" + (bad if slot == "pred" else other)}
            args["gold"] = "{d}/" + (bad if slot == "gold" else other)
            yield Case(
                f"{sub}-{slot}-{kind}",
                command,
                ["eval", sub, "--pred", args["pred"], "--gold", args["gold"], *extra],
                files,
                expect="any" if kind in OV_ACCEPTABLE else "refuse",
                names=bad,
            )
        for kind in I.SPECIAL:
            rel = f"{slot}.jsonl"
            other = "gold.jsonl" if slot == "pred" else "pred.jsonl"
            path = _special_argv(kind, rel)
            files = {other: gold, **({rel: f"@{kind}"} if not kind.startswith("dev-") else {})}
            argv_pred = path if slot == "pred" else "{d}/" + other
            argv_gold = path if slot == "gold" else "{d}/" + other
            yield Case(
                f"{sub}-{slot}-{kind}",
                command,
                ["eval", sub, "--pred", argv_pred, "--gold", argv_gold, *extra],
                files,
                names=path.replace("{d}/", ""),
            )


def _eval_output_cases(command: str, ref: str, pred: bytes, gold: bytes, extra: list[str]) -> Iterator[Case]:
    sub = command.split()[1]
    base = {"pred.jsonl": pred, "gold.jsonl": gold}
    for target in ("pred", "gold"):
        for kind in OUTPUT_KINDS:
            if target == "gold" and kind not in ("same-as-input", "symlink-to-input"):
                continue
            files, path, expect, names, may_change = _with_output(base, f"{target}.jsonl", kind)
            yield Case(
                f"{sub}-output-{kind}-{target}",
                command,
                [
                    "eval",
                    sub,
                    "--pred",
                    "{d}/pred.jsonl",
                    f"--{ref}",
                    "{d}/gold.jsonl",
                    "--output",
                    path,
                    *extra,
                ],
                files,
                expect=expect,
                names=names,
                may_change=may_change,
            )
    yield Case(
        f"{sub}-output-replaces-existing-result",
        command,
        ["eval", sub, "--pred", "{d}/pred.jsonl", f"--{ref}", "{d}/gold.jsonl", "--output", "{d}/old.json"],
        {**base, "old.json": b'{"old": true}\n'},
        expect="accept",
        may_change=("old.json",),
    )


def eval_cases() -> Iterator[Case]:
    ov_gold = I.label_jsonl(I.GOLD_ROWS)
    yield from _eval_label_cases("eval ov", ["--no-floor"], ov_gold)
    yield from _eval_output_cases("eval ov", "gold", ov_gold, ov_gold, ["--no-floor"])
    closed_gold = I.label_jsonl([{"name": f"s{i}", "label": "happy" if i % 2 else "sad"} for i in range(6)])
    yield from _eval_label_cases("eval closed", [], closed_gold)
    yield from _eval_output_cases("eval closed", "gold", closed_gold, closed_gold, [])
    for kind, (_, make) in list(I.LABEL_FILES.items())[:12]:
        yield Case(
            f"closed-hitrate-pred-{kind}",
            "eval closed",
            ["eval", "closed", "--hit-rate", "--pred", "{d}/pred.jsonl", "--gold", "{d}/gold.jsonl"],
            {"pred.jsonl": make(), "gold.jsonl": closed_gold},
            expect="any",
            names="pred.jsonl",
        )
    yield from rationale_cases()


RATIONALE_ROWS = [
    {"name": "a", "rationale": "The speaker smiles broadly and laughs."},
    {"name": "b", "rationale": "Her voice trembles and she looks down."},
]


def rationale_cases() -> Iterator[Case]:
    ref = I.label_jsonl(RATIONALE_ROWS)
    bad_tables: dict[str, bytes] = {
        "broken": b'{"name": "a", "rationale": \n',
        "deep": b'{"name": "a", "rationale": ' + b"[" * 60000 + b"]" * 60000 + b"}\n",
        "deep-line": b"[" * 60000 + b"\n",
        "rationale-number": b'{"name": "a", "rationale": 5}\n',
        "rationale-dict": b'{"name": "a", "rationale": {"x": [1, {"y": 2}]}}\n',  # read as text: any
        "rationale-nested-lists": b'{"name": "a", "rationale": [[["x"]], [1]]}\n',
        "no-rationale": b'{"name": "a", "text": "x"}\n',
        "no-name": b'{"rationale": "x"}\n',
        # No "unknown-name" case: under the one name policy (affectllm.labels.align_names) a prediction for a
        # name the references lack is ignored and reported, not refused (tests/test_rationale.py).
        "cut-utf8": I.label_jsonl(RATIONALE_ROWS[:1]) + I.cut_utf8('{"name": "b", "rationale": "\u00e9'),
        "latin1": '{"name": "a", "rationale": "caf\xe9"}\n'.encode("latin-1"),
        "binary": I.random_bytes(2000, 13),
        "empty": b"",
        "array-line": b'["a", "x"]\n',
        "duplicate": I.label_jsonl([RATIONALE_ROWS[0], RATIONALE_ROWS[0]]),
    }
    for slot in ("pred", "ref"):
        for kind, data in bad_tables.items():
            other = "ref.jsonl" if slot == "pred" else "pred.jsonl"
            files = {f"{slot}.jsonl": data, other: ref}
            yield Case(
                f"rationale-{slot}-{kind}",
                "eval rationale",
                ["eval", "rationale", "--pred", "{d}/pred.jsonl", "--ref", "{d}/ref.jsonl"],
                files,
                expect="any" if kind == "rationale-dict" else "refuse",
                names=f"{slot}.jsonl",
            )
    evidence_bad: dict[str, bytes] = {
        "cues-not-list": b'{"name": "a", "cues": 5}\n',
        "cues-bad-objects": b'{"name": "a", "cues": [{"nope": 1}]}\n',
        "evidence-number": b'{"name": "a", "evidence": 7}\n',
        "broken": b'{"name": "a", "cues": [\n',
        "deep": b'{"name": "a", "evidence": ' + b"[" * 60000 + b"]" * 60000 + b"}\n",
        "binary": I.random_bytes(500, 17),
    }
    for kind, data in evidence_bad.items():
        yield Case(
            f"rationale-evidence-{kind}",
            "eval rationale",
            [
                "eval",
                "rationale",
                "--pred",
                "{d}/pred.jsonl",
                "--ref",
                "{d}/ref.jsonl",
                "--evidence",
                "{d}/ev.jsonl",
            ],
            {"pred.jsonl": ref, "ref.jsonl": ref, "ev.jsonl": data},
            names="ev.jsonl",
        )
    for value in ("0", "-1", "nan", "2"):
        yield Case(
            f"rationale-threshold-{value}",
            "eval rationale",
            ["eval", "rationale", "--pred", "{d}/pred.jsonl", "--ref", "{d}/ref.jsonl", "--threshold", value],
            {"pred.jsonl": ref, "ref.jsonl": ref},
            names="--threshold",
        )
    for kind in ("same-as-input", "symlink-to-input", "folder", "dev-full", "fifo", "under-a-file"):
        files, path, expect, names, may_change = _with_output(
            {"pred.jsonl": ref, "ref.jsonl": ref}, "ref.jsonl", kind
        )
        yield Case(
            f"rationale-output-{kind}",
            "eval rationale",
            ["eval", "rationale", "--pred", "{d}/pred.jsonl", "--ref", "{d}/ref.jsonl", "--output", path],
            files,
            expect=expect,
            names=names,
            may_change=may_change,
        )
    yield Case(
        "rationale-valid",
        "eval rationale",
        ["eval", "rationale", "--pred", "{d}/pred.jsonl", "--ref", "{d}/ref.jsonl", "--json"],
        {"pred.jsonl": ref, "ref.jsonl": ref},
        expect="accept",
    )


# -------------------------------------------------------------------------------------------- textualize

TEXTUALIZE_FAST = ["--asr", "none", "--no-cache", "--quiet"]
MEDIA_ACCEPTABLE = {
    "wav-mono",
    "wav-stereo",
    "wav-3ch",
    "wav-8ch",
    "wav-16ch",
    "wav-8khz",
    "wav-96khz",
    "wav-truncated-data",
    "wav-data-past-end",
}
AU_ACCEPTABLE = {"valid", "confidence-nan", "bom", "one-row", "nul-bytes", "ragged-rows", "text-cells"}
CAPTIONS_ACCEPTABLE = {"json-valid", "json-strings", "json-bom", "txt-valid", "txt-latin1-never"}
TRANSCRIPT_ACCEPTABLE = {"valid", "timed", "long-line", "nul-bytes"}


def textualize_cases() -> Iterator[Case]:
    for kind, make in I.MEDIA.items():
        for ext in (
            (".wav", ".mp4") if kind in ("random-bytes", "text-not-media", "wav-8ch", "empty") else (".wav",)
        ):
            name = f"clip{ext}"
            yield Case(
                f"textualize-media-{kind}{ext}",
                "textualize",
                ["textualize", "{d}/" + name, "--extractors", "audio", *TEXTUALIZE_FAST],
                {name: make()},
                expect="any" if kind in MEDIA_ACCEPTABLE else "refuse",
                names=name,
            )
    for kind, make in I.VIDEO.items():
        yield Case(
            f"textualize-video-{kind}",
            "textualize",
            ["textualize", "{d}/clip.mp4", "--extractors", "audio,scene", *TEXTUALIZE_FAST],
            {"clip.mp4": make()},
            # Damaged files may still decode in part (FFmpeg conceals errors): any clean outcome will do.
            expect="any" if kind != "mp4-truncated-header" else "refuse",
            names="clip.mp4",
        )
    for kind in I.SPECIAL:
        path = _special_argv(kind, "clip.wav")
        files = {} if kind.startswith("dev-") or kind == "missing" else {"clip.wav": f"@{kind}"}
        yield Case(
            f"textualize-media-{kind}",
            "textualize",
            ["textualize", path, "--extractors", "audio", *TEXTUALIZE_FAST],
            files,
            names=path.replace("{d}/", ""),
            timeout=20,
        )
    for kind, make in I.AU_CSV.items():
        yield Case(
            f"textualize-au-{kind}",
            "textualize",
            ["textualize", "{d}/x.au.csv", *TEXTUALIZE_FAST],
            {"x.au.csv": make()},
            expect="any" if kind in AU_ACCEPTABLE else "refuse",
            names="x.au.csv",
        )
    for kind, (is_json, make) in I.CAPTIONS.items():
        name = "x.captions.json" if is_json else "x.captions.txt"
        yield Case(
            f"textualize-captions-{kind}",
            "textualize",
            ["textualize", "{d}/" + name, *TEXTUALIZE_FAST],
            {name: make()},
            expect="any" if kind in CAPTIONS_ACCEPTABLE else "refuse",
            names=name,
        )
    for kind, make in I.TRANSCRIPTS.items():
        yield Case(
            f"textualize-transcript-{kind}",
            "textualize",
            ["textualize", "{d}/x.transcript.txt", *TEXTUALIZE_FAST],
            {"x.transcript.txt": make()},
            expect="any" if kind in TRANSCRIPT_ACCEPTABLE else "refuse",
            names="x.transcript.txt",
        )
    transcript = I.TRANSCRIPTS["valid"]()
    for option, rel in (
        ("--au-csv", "side.au.csv"),
        ("--captions", "side.captions.json"),
        ("--transcript", "t2.txt"),
    ):
        for kind in I.SPECIAL:
            path = _special_argv(kind, rel)
            files = {"x.transcript.txt": transcript}
            if not (kind.startswith("dev-") or kind == "missing"):
                files[rel] = f"@{kind}"
            yield Case(
                f"textualize-option{option}-{kind}",
                "textualize",
                ["textualize", "{d}/x.transcript.txt", option, path, *TEXTUALIZE_FAST],
                files,
                names=path.replace("{d}/", ""),
                timeout=20,
            )
    for option, value in (
        ("--au-confidence", "nan"),
        ("--au-confidence", "-1"),
        ("--au-confidence", "7"),
        ("--max-tokens", "0"),
        ("--max-tokens", "-5"),
        ("--num-frames", "0"),
        ("--extractors", "smell"),
        ("--asr", "telepathy"),
        ("--sex", "other"),
    ):
        yield Case(
            f"textualize-option{option}={value}",
            "textualize",
            ["textualize", "{d}/x.transcript.txt", f"{option}={value}", "--no-cache"],
            {"x.transcript.txt": transcript},
            names=option if option not in ("--extractors", "--asr", "--sex") else value,
        )
    # --json output of one clip
    for kind in OUTPUT_KINDS:
        files, path, expect, names, may_change = _with_output(
            {"x.transcript.txt": transcript}, "x.transcript.txt", kind
        )
        yield Case(
            f"textualize-json-{kind}",
            "textualize",
            ["textualize", "{d}/x.transcript.txt", "--json", path, *TEXTUALIZE_FAST],
            files,
            expect=expect,
            names=names,
            may_change=may_change,
        )
    yield from textualize_batch_cases()


def _manifest(rows: list[dict]) -> bytes:
    return I.label_jsonl(rows)


def textualize_batch_cases() -> Iterator[Case]:
    transcript = I.TRANSCRIPTS["valid"]()
    good = _manifest(
        [{"id": "a", "transcript": "a.transcript.txt"}, {"id": "b", "transcript": "Oh no, not again."}]
    )
    manifests: dict[str, tuple[bytes, str]] = {
        "broken": (b'{"id": "a", "transcript": \n', "refuse"),
        "deep": (b"[" * 60000 + b"\n", "refuse"),
        "array-line": (b'["a", "b"]\n', "refuse"),
        "cut-utf8": (good + I.cut_utf8('{"id": "c", "transcript": "\u00e9'), "refuse"),
        "latin1": ('{"id": "a", "transcript": "caf\xe9"}\n'.encode("latin-1"), "refuse"),
        "binary": (I.random_bytes(1000, 19), "refuse"),
        "empty": (b"", "refuse"),
        "duplicate-ids": (
            _manifest([{"id": "a", "transcript": "x y"}, {"id": "a", "transcript": "x z"}]),
            "refuse",
        ),
        "no-id": (b'{"transcript": "x y"}\n', "refuse"),
        "id-null": (b'{"id": null, "transcript": "x y"}\n', "refuse"),
        "missing-media": (_manifest([{"id": "a", "media": "nope.wav"}]), "any"),
        "fifo-media": (_manifest([{"id": "a", "media": "pipe.wav"}]), "any"),
        "transcript-int": (_manifest([{"id": "a", "transcript": 5}]), "any"),
        "au-csv-list": (_manifest([{"id": "a", "au_csv": ["x"], "transcript": "x y"}]), "any"),
        "transcript-path-missing": (_manifest([{"id": "a", "transcript": "nope.transcript.txt"}]), "refuse"),
        "bom": (b"\xef\xbb\xbf" + good, "accept"),
        "valid": (good, "accept"),
    }
    for kind, (data, expect) in manifests.items():
        files: dict[str, Content] = {"m.jsonl": data, "a.transcript.txt": transcript}
        if kind == "fifo-media":
            files["pipe.wav"] = "@fifo"
        yield Case(
            f"textualize-manifest-{kind}",
            "textualize",
            ["textualize", "{d}/m.jsonl", "--out", "{d}/out.jsonl", *TEXTUALIZE_FAST],
            files,
            expect=expect,
            names={"transcript-path-missing": "nope.transcript.txt"}.get(
                kind, "m.jsonl" if expect == "refuse" else None
            ),
            timeout=20,
        )
    folder: dict[str, Content] = {
        "clips/a.transcript.txt": transcript,
        "clips/b.wav": I.MEDIA["wav-8ch"](),
        "clips/c.wav": I.MEDIA["random-bytes"](),
        "clips/d.au.csv": I.AU_CSV["inf-time"](),
        "clips/e.wav": "@fifo",
    }
    yield Case(
        "textualize-folder-mixed",
        "textualize",
        [
            "textualize",
            "{d}/clips",
            "--out",
            "{d}/out.jsonl",
            "--extractors",
            "audio,face,scene",
            *TEXTUALIZE_FAST,
        ],
        folder,
        expect="accept",
        timeout=30,
    )
    out_kinds: dict[str, tuple[Content, str, str | None, tuple[str, ...]]] = {
        "foreign-text": (b"my notes\nsecond line\n", "refuse", "out.jsonl", ()),
        "foreign-text-no-newline": (b"my notes", "refuse", "out.jsonl", ()),
        "json-without-id": (b'{"name": "x"}\n{"name": "y"}\n', "refuse", "out.jsonl", ()),
        "json-array-lines": (b"[1, 2]\n", "refuse", "out.jsonl", ()),
        "torn-last-line": (b'{"id": "a", "text": "ok"}\n{"id": "b", "te', "accept", None, ("out.jsonl",)),
        "torn-mid-utf8": (
            b'{"id": "a", "text": "ok"}\n' + I.cut_utf8('{"id": "b", "text": "\u00e9'),
            "accept",
            None,
            ("out.jsonl",),
        ),
        "resumable": (b'{"id": "a", "text": "done before"}\n', "accept", None, ("out.jsonl",)),
        "error-rows": (
            b'{"id": "a", "error": "boom"}\n{"id": "b", "error": "boom"}\n',
            "accept",
            None,
            ("out.jsonl",),
        ),
    }
    for kind, (content, expect, names, may_change) in out_kinds.items():
        yield Case(
            f"textualize-out-{kind}",
            "textualize",
            ["textualize", "{d}/m.jsonl", "--out", "{d}/out.jsonl", *TEXTUALIZE_FAST],
            {"m.jsonl": good, "a.transcript.txt": transcript, "out.jsonl": content},
            expect=expect,
            names=names,
            may_change=may_change,
        )
    yield Case(
        "textualize-out-foreign-overwrite",
        "textualize",
        ["textualize", "{d}/m.jsonl", "--out", "{d}/out.jsonl", "--overwrite", *TEXTUALIZE_FAST],
        {"m.jsonl": good, "a.transcript.txt": transcript, "out.jsonl": b"my notes\n"},
        expect="accept",
        may_change=("out.jsonl",),
    )
    for kind in OUTPUT_KINDS:
        files, path, expect, names, may_change = _with_output(
            {"m.jsonl": good, "a.transcript.txt": transcript}, "m.jsonl", kind
        )
        yield Case(
            f"textualize-out-{kind}",
            "textualize",
            ["textualize", "{d}/m.jsonl", "--out", path.replace("out.json", "out.jsonl"), *TEXTUALIZE_FAST],
            files,
            expect=expect,
            names=names,
            may_change=may_change,
        )
    yield Case(
        "textualize-out-is-a-sidecar",
        "textualize",
        ["textualize", "{d}/m.jsonl", "--out", "{d}/a.transcript.txt", *TEXTUALIZE_FAST],
        {"m.jsonl": good, "a.transcript.txt": transcript},
        names="a.transcript.txt",
    )


# ------------------------------------------------------------------------------------ model-backed commands


def predict_cases() -> Iterator[Case]:
    transcript = I.TRANSCRIPTS["valid"]()
    good = _manifest([{"id": "a", "transcript": "a.transcript.txt"}])
    manifests: dict[str, bytes] = {
        "broken": b'{"id": "a"\n',
        "deep": b"[" * 60000 + b"\n",
        "deep-value": b'{"id": "a", "transcript": ' + b"[" * 60000 + b"]" * 60000 + b"}\n",
        "array-line": b"[1]\n",
        "cut-utf8": good + I.cut_utf8('{"id": "b", "transcript": "\u00e9'),
        "latin1": '{"id": "a", "transcript": "caf\xe9"}\n'.encode("latin-1"),
        "binary": I.random_bytes(800, 23),
        "duplicate-ids": _manifest([{"id": "a", "transcript": "x"}, {"id": "a", "transcript": "y"}]),
        "no-id": b'{"transcript": "x y"}\n',
        "id-list": b'{"id": [1, 2], "transcript": "x y"}\n',
    }
    for kind, data in manifests.items():
        yield Case(
            f"predict-manifest-{kind}",
            "predict",
            ["predict", "--data", "{d}/m.jsonl", "--out", "{d}/out.jsonl", "-q", *DEAD_ENDPOINT],
            {"m.jsonl": data, "a.transcript.txt": transcript},
            names="m.jsonl",
        )
    for kind in I.SPECIAL:
        path = _special_argv(kind, "m.jsonl")
        files = {} if kind.startswith("dev-") or kind == "missing" else {"m.jsonl": f"@{kind}"}
        yield Case(
            f"predict-manifest-{kind}",
            "predict",
            ["predict", "--data", path, "--out", "{d}/out.jsonl", "-q", *DEAD_ENDPOINT],
            files,
            names=path.replace("{d}/", ""),
            timeout=20,
        )
    base = {"m.jsonl": good, "a.transcript.txt": transcript}
    for kind in OUTPUT_KINDS:
        if kind in ("new-subfolder", "readonly-folder"):
            continue
        files, path, expect, _, may_change = _with_output(base, "m.jsonl", kind)
        # Refused either for the output or (until predict checks outputs before loading a model) for the
        # dead endpoint: what is asserted is that nothing is lost.
        yield Case(
            f"predict-out-{kind}",
            "predict",
            ["predict", "--data", "{d}/m.jsonl", "--out", path, "-q", *DEAD_ENDPOINT],
            files,
            expect=expect,
            may_change=may_change,
        )
    yield Case(
        "predict-out-foreign-text",
        "predict",
        ["predict", "--data", "{d}/m.jsonl", "--out", "{d}/notes.txt", "-q", *DEAD_ENDPOINT],
        {**base, "notes.txt": b"my notes\n"},
    )
    for option, value in (
        ("--batch-size", "0"),
        ("--limit", "0"),
        ("--limit", "-3"),
        ("--max-tokens", "0"),
        ("--max-tokens", "-5"),
    ):
        yield Case(
            f"predict-option{option}={value}",
            "predict",
            [
                "predict",
                "--data",
                "{d}/m.jsonl",
                "--out",
                "{d}/out.jsonl",
                f"{option}={value}",
                "-q",
                *DEAD_ENDPOINT,
            ],
            base,
        )


def chat_cases() -> Iterator[Case]:
    for kind, make in I.TRANSCRIPTS.items():
        yield Case(
            f"chat-transcript-{kind}",
            "chat",
            ["chat", "{d}/x.transcript.txt", "how do they feel?", "--json", "--no-cache", *DEAD_ENDPOINT],
            {"x.transcript.txt": make()},
            names=None if kind in TRANSCRIPT_ACCEPTABLE else "x.transcript.txt",
        )
    for kind in ("nan-time", "inf-intensity", "binary", "empty", "absurd-time"):
        yield Case(
            f"chat-au-{kind}",
            "chat",
            ["chat", "{d}/x.au.csv", "how do they feel?", "--json", "--no-cache", *DEAD_ENDPOINT],
            {"x.au.csv": I.AU_CSV[kind]()},
            names="x.au.csv",
        )
    for kind in I.SPECIAL:
        path = _special_argv(kind, "clip.wav")
        files = {} if kind.startswith("dev-") or kind == "missing" else {"clip.wav": f"@{kind}"}
        yield Case(
            f"chat-clip-{kind}",
            "chat",
            ["chat", path, "why?", "--json", "--no-cache", "--asr", "none", *DEAD_ENDPOINT],
            files,
            names=path.replace("{d}/", ""),
            timeout=20,
        )
    for kind in ("wav-8ch", "random-bytes", "wav-zero-channels", "empty"):
        yield Case(
            f"chat-media-{kind}",
            "chat",
            ["chat", "{d}/clip.wav", "why?", "--json", "--no-cache", "--asr", "none", *DEAD_ENDPOINT],
            {"clip.wav": I.MEDIA[kind]()},
            names=None if kind == "wav-8ch" else "clip.wav",
        )


def eval_run_cases() -> Iterator[Case]:
    for kind, make in I.YAML_FILES.items():
        yield Case(
            f"eval-run-task-{kind}",
            "eval run",
            [
                "eval",
                "run",
                "--task",
                "{d}/task.yaml",
                "--data-dir",
                "{d}/data",
                "--output-dir",
                "{d}/out",
                "--quiet",
                *DEAD_ENDPOINT,
            ],
            {"task.yaml": make(), "data/.keep": b""},
            names="task.yaml",
        )
    for kind in ("missing", "folder", "fifo", "dev-null"):
        path = _special_argv(kind, "task.yaml")
        files = {} if kind in ("missing", "dev-null") else {"task.yaml": f"@{kind}"}
        yield Case(
            f"eval-run-task-{kind}",
            "eval run",
            [
                "eval",
                "run",
                "--task",
                path,
                "--data-dir",
                "{d}",
                "--output-dir",
                "{d}/out",
                "--quiet",
                *DEAD_ENDPOINT,
            ],
            files,
            names=path.replace("{d}/", ""),
            timeout=20,
        )
    yield Case("eval-run-list", "eval run", ["eval", "run", "--list"], {}, expect="accept")
    for kind, out in (
        ("file", "{d}/plain.txt"),
        ("dev-full", "/dev/full"),
        ("under-a-file", "{d}/plain.txt/x"),
    ):
        yield Case(
            f"eval-run-output-dir-{kind}",
            "eval run",
            [
                "eval",
                "run",
                "--task",
                "ravdess-speech",
                "--data-dir",
                "{d}/nodata",
                "--output-dir",
                out,
                "--quiet",
                *DEAD_ENDPOINT,
            ],
            {"plain.txt": b"keep me\n"},
        )
    for option, value in (("--limit", "0"), ("--batch-size", "0"), ("--max-tokens", "-5")):
        yield Case(
            f"eval-run-option{option}={value}",
            "eval run",
            [
                "eval",
                "run",
                "--task",
                "ravdess-speech",
                "--data-dir",
                "{d}/nodata",
                f"{option}={value}",
                "--quiet",
                *DEAD_ENDPOINT,
            ],
            {},
        )


def eval_compare_cases() -> Iterator[Case]:
    metrics: dict[str, bytes] = {
        "broken": b'{"task": ',
        "deep": b"[" * 60000 + b"]" * 60000,
        "latin1": '{"task": "caf\xe9"}'.encode("latin-1"),
        "list": b"[1, 2, 3]",
        "empty-object": b"{}",
        "binary": I.random_bytes(700, 29),
        "wrong-types": b'{"task": 5, "metrics": "high", "split": []}',
    }
    for kind, data in metrics.items():
        yield Case(
            f"eval-compare-metrics-{kind}",
            "eval compare",
            ["eval", "compare", "{d}/run"],
            {"run/metrics.json": data},
            expect="any" if kind == "empty-object" else "refuse",
            names="metrics.json",
        )
    for kind in ("missing", "fifo", "dev-null", "symlink-loop"):
        path = _special_argv(kind, "run")
        files = {} if kind in ("missing", "dev-null") else {"run": f"@{kind}"}
        yield Case(
            f"eval-compare-run-{kind}",
            "eval compare",
            ["eval", "compare", path],
            files,
            names=path.replace("{d}/", ""),
            timeout=20,
        )
    yield Case(
        "eval-compare-empty-folder",
        "eval compare",
        ["eval", "compare", "{d}/run"],
        {"run/.keep": b""},
        names="run",
    )


def train_cases() -> Iterator[Case]:
    for argv in (["train", "--help"], ["train", "sft", "--help"], ["train", "grpo", "--help"]):
        yield Case("-".join(argv).replace("--", ""), "train", argv, {}, expect="accept")
    yield Case("train-no-method", "train", ["train"], {}, expect="any")
    yield Case("train-bad-method", "train", ["train", "ppo"], {})
    for method in ("sft", "grpo"):
        for kind, make in I.YAML_FILES.items():
            yield Case(
                f"train-{method}-recipe-{kind}",
                "train",
                ["train", method, "--config", "{d}/recipe.yaml", "--print-recipe"],
                {"recipe.yaml": make()},
                expect="any" if kind == "empty" else "refuse",
                names=None if kind == "empty" else "recipe.yaml",
            )
        for kind in ("missing", "folder", "fifo", "dev-null"):
            path = _special_argv(kind, "recipe.yaml")
            files = {} if kind in ("missing", "dev-null") else {"recipe.yaml": f"@{kind}"}
            yield Case(
                f"train-{method}-recipe-{kind}",
                "train",
                ["train", method, "--config", path, "--print-recipe"],
                files,
                names=path.replace("{d}/", ""),
                timeout=20,
            )


def models_cases() -> Iterator[Case]:
    yield Case("models-list", "models", ["models", "list"], {}, expect="accept")
    yield Case("models-no-subcommand", "models", ["models"], {}, expect="any")
    yield Case("models-unknown", "models", ["models", "frobnicate"], {}, names="frobnicate")


GROUPS: dict[str, Callable[[], Iterator[Case]]] = {
    "eval": eval_cases,
    "textualize": textualize_cases,
    "predict": predict_cases,
    "chat": chat_cases,
    "eval run": eval_run_cases,
    "eval compare": eval_compare_cases,
    "train": train_cases,
    "models": models_cases,
}


# Failures in code outside the files this corpus was written to fix (another change owns them): listed so the
# table shows them and the tests mark them xfail, never hidden. Remove an entry once its fix lands.
# Cases that fail for a reason outside the files this corpus' fixes touched, as case id -> where and why; they
# run as expected failures until fixed (then the entry goes). None are open.
KNOWN: dict[str, str] = {}


def all_cases() -> list[Case]:
    cases = [case for make in GROUPS.values() for case in make()]
    for case in cases:
        case.known = case.known or KNOWN.get(case.id)
    ids = [c.id for c in cases]
    duplicates = {i for i in ids if ids.count(i) > 1}
    if duplicates:
        raise AssertionError(f"duplicate fuzz case ids: {sorted(duplicates)}")
    return cases
