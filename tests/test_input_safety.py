"""Output safety (affectllm.outputs, ResumableJSONL), media that cannot hurt the process, values checked at the
edge, the judge's failure accounting, and offline means offline."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from affectllm.batch import ResumableJSONL, iter_jsonl_objects, read_jsonl
from affectllm.errors import InputError
from affectllm.outputs import atomic_write_text, check_output

# ------------------------------------------------------------------------------------------- check_output


def test_check_output_refuses_inputs_devices_folders_and_paths_under_files(tmp_path: Path) -> None:
    data = tmp_path / "m.jsonl"
    data.write_text('{"id": "a"}\n')
    link = tmp_path / "link.jsonl"
    link.symlink_to(data)
    loop = tmp_path / "loop"
    loop.symlink_to("loop")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    refused = {
        data: "input of this run",
        link: "input of this run",
        tmp_path: "a folder",
        Path("/dev/null"): "a device",
        Path("/dev/full"): "a device",
        fifo: "FIFO",
        data / "out.json": "is a file, not a folder",
        loop: "symbolic links",
    }
    for path, problem in refused.items():
        with pytest.raises(InputError, match=problem) as info:
            check_output(path, inputs=[data], option="--out")
        assert str(path) in str(info.value)
    assert check_output(tmp_path / "new" / "sub" / "out.json", inputs=[data]) == tmp_path / "new/sub/out.json"
    assert not (tmp_path / "new").exists()  # checking creates nothing


def test_atomic_write_replaces_whole_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "r.json"
    atomic_write_text(out, "one\n")
    atomic_write_text(out, "two\n")
    assert out.read_text() == "two\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["r.json"]
    blocker = tmp_path / "file"
    blocker.write_text("keep")
    with pytest.raises(InputError, match="file"):
        atomic_write_text(blocker / "x.json", "{}")
    assert blocker.read_text() == "keep"


def test_eval_output_equal_to_an_input_is_refused_before_scoring(tmp_path: Path, capsys) -> None:
    from affectllm.cli.main import main

    pred = tmp_path / "p.jsonl"
    pred.write_text('{"name": "a", "labels": ["happy"]}\n')
    before = pred.read_bytes()
    assert main(["eval", "ov", "--pred", str(pred), "--gold", str(pred), "--output", str(pred)]) == 2
    assert pred.read_bytes() == before
    assert "input of this run" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ ResumableJSONL


@pytest.mark.parametrize(
    "content",
    [b"my notes\nmore\n", b"my notes", b'{"name": "x"}\n{"name": "y"}\n', b"[1, 2]\n", b'{"id": ["a"]}\n'],
)
def test_resumable_refuses_a_file_it_did_not_write(tmp_path: Path, content: bytes) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(content)
    with pytest.raises(InputError, match="--overwrite") as info:
        ResumableJSONL(out)
    assert info.value.path == str(out) and info.value.line == 1
    assert out.read_bytes() == content
    writer = ResumableJSONL(out, overwrite=True)  # the user asked for it
    writer.write({"id": "a"})
    assert read_jsonl(out) == [{"id": "a"}]


def test_resumable_drops_a_line_torn_inside_a_utf8_character(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"id": "a", "t": "ok"}\n' + '{"id": "b", "t": "caf\u00e9'.encode()[:-1])
    writer = ResumableJSONL(out)
    assert writer.pending(["a", "b"]) == ["b"]
    writer.write({"id": "b", "t": "again"})
    assert [r["id"] for r in read_jsonl(out)] == ["a", "b"]


def test_resumable_compacts_to_one_row_per_id_success_wins(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    writer = ResumableJSONL(out)
    writer.write_error("b", RuntimeError("first try"))
    writer.write({"id": "a", "v": 1})
    writer.write({"id": "b", "v": 2})
    writer.write_error("c", RuntimeError("still failing"))
    writer.write_error("c", RuntimeError("failing again"))
    writer.compact(["a", "b", "c"])
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    assert rows[1] == {"id": "b", "v": 2} and "failing again" in rows[2]["error"]


def test_two_processes_appending_to_one_output_lose_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    script = textwrap.dedent(
        """
        import sys
        from affectllm.batch import ResumableJSONL
        w = ResumableJSONL(sys.argv[1])
        for i in range(150):
            w.write({"id": f"{sys.argv[2]}{i}", "text": "x" * 500})
        w.compact()
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(out), tag]) for tag in ("p", "q")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    ids = [r["id"] for r in read_jsonl(out)]
    assert sorted(ids) == sorted([f"p{i}" for i in range(150)] + [f"q{i}" for i in range(150)])


def test_jsonl_reader_names_file_and_line_for_deep_nesting_and_reads_a_bom(tmp_path: Path) -> None:
    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"id": 1}\n' + "[" * 100_000 + "\n")
    with pytest.raises(InputError, match=r"deep\.jsonl:2: JSON nested too deeply"):
        list(iter_jsonl_objects(deep))
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b'\xef\xbb\xbf{"id": 1}\n')
    assert read_jsonl(bom) == [{"id": 1}]


# ------------------------------------------------------------------------------------------------- media


def _wav(path: Path, channels: int, rate: int = 16000, frames: int = 8000) -> Path:
    import wave

    import numpy as np

    samples = (np.random.default_rng(0).standard_normal(frames * channels) * 1000).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return path


def test_many_channel_wavs_decode_without_crashing_the_process(tmp_path: Path) -> None:
    pytest.importorskip("av")
    # In a child: PyAV's planar to_ndarray() used to segfault on 8+ channels, which would end this test run.
    paths = [_wav(tmp_path / f"c{n}.wav", n) for n in (1, 2, 6, 8, 16)]
    code = "import sys\nfrom affectllm.media import load_audio\nfor p in sys.argv[1:]: print(round(load_audio(p).duration, 3))"
    result = subprocess.run(
        [sys.executable, "-c", code, *map(str, paths)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0.5"] * 5


def test_fifos_and_devices_are_refused_without_opening_them(tmp_path: Path) -> None:
    pytest.importorskip("av")
    from affectllm.media import load_audio

    fifo = tmp_path / "clip.wav"
    os.mkfifo(fifo)  # opening it would block forever: no writer
    with pytest.raises(InputError, match="FIFO"):
        load_audio(fifo)
    with pytest.raises(InputError, match="device"):
        load_audio("/dev/zero")


# ------------------------------------------------------------------------------------ values at the edge


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ("2,0,-3,0.9,1,1.0,1.0", "timestamp is -3"),
        ("2,0,nan,0.9,1,1.0,1.0", "timestamp is nan"),
        ("2,0,1e308,0.9,1,1.0,1.0", "timestamp is 1e\\+308"),
        ("2,0,0.1,0.9,1,inf,1.0", "AU06_r is inf"),
        ("2,0,0.1,0.9,1,-4,1.0", "AU06_r is -4"),
        ("2,0,0.1,12,1,1.0,1.0", "confidence is 12"),
    ],
)
def test_au_csv_values_out_of_range_name_file_line_and_column(tmp_path: Path, row: str, problem: str) -> None:
    pytest.importorskip("pandas")
    from affectllm.textualize.face import read_au_csv

    path = tmp_path / "x.au.csv"
    path.write_text(
        "frame,face_id,timestamp,confidence,success,AU06_r,AU12_r\n1,0,0.0,0.9,1,1.0,1.0\n" + row + "\n"
    )
    with pytest.raises(InputError, match=problem) as info:
        read_au_csv(path)
    assert info.value.path == str(path) and info.value.line == 3


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("c.captions.json", '[{"start": -1, "text": "x"}]', "time is -1"),
        ("c.captions.json", '[{"start": NaN, "text": "x"}]', "time is nan"),
        ("c.captions.json", '[{"start": 0, "end": 1e308, "text": "x"}]', "time is 1e\\+308"),
        ("c.captions.json", "[" * 50_000 + "]" * 50_000, "nested too deeply"),
        ("c.captions.txt", "[99999999:00] x\n", "start time is"),
    ],
)
def test_caption_times_must_be_finite_and_plausible(
    tmp_path: Path, name: str, content: str, problem: str
) -> None:
    from affectllm.textualize.scene import read_captions

    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InputError, match=problem):
        read_captions(path)


def test_textualize_numeric_options_are_range_checked(tmp_path: Path, capsys) -> None:
    from affectllm.cli.main import main

    clip = tmp_path / "x.transcript.txt"
    clip.write_text("Fine, thanks.")
    for option in (["--au-confidence", "nan"], ["--max-tokens", "0"], ["--num-frames", "0"]):
        assert main(["textualize", str(clip), "--no-cache", *option]) == 2
        assert option[0] in capsys.readouterr().err


# -------------------------------------------------------------------------------------------------- judge


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_judge_counts_failed_calls_and_stops_calling_a_dead_endpoint() -> None:
    pytest.importorskip("openai")
    from affectllm.metrics.judge import GIVE_UP_AFTER, LLMJudge

    judge = LLMJudge(base_url=f"http://127.0.0.1:{_closed_port()}/v1", model="m", max_retries=0, timeout=5)
    names = [f"s{i}" for i in range(6)]
    result = judge.score({n: "she smiles" for n in names}, {n: "a smile" for n in names})
    assert result["n_calls"] == result["n_failed_calls"] == 2 * len(names)
    assert result["clue_overlap"] is None and result["n_errors"] == len(names)
    not_sent = [s for s in result["samples"].values() if s["errors"][0].startswith("not sent")]
    assert len(not_sent) == len(names) - GIVE_UP_AFTER // 2


# ---------------------------------------------------------------------------------------- offline is offline


def test_textualizing_sidecars_and_scoring_open_no_network_sockets(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    pytest.importorskip("pandas")
    from affectllm.cli.main import main

    addresses: list[object] = []
    real_connect = socket.socket.connect

    def recording_connect(self, address):  # type: ignore[no-untyped-def]
        addresses.append(address)
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", recording_connect)
    (tmp_path / "x.transcript.txt").write_text("[00:00.0-00:01.5] I did not expect that.")
    rows = [f"{i},0,{i / 30:.3f},0.95,1,{1 + (i % 5) / 2},2.0" for i in range(1, 40)]
    (tmp_path / "x.au.csv").write_text(
        "frame,face_id,timestamp,confidence,success,AU06_r,AU12_r\n" + "\n".join(rows)
    )
    assert (
        main(
            [
                "textualize",
                str(tmp_path / "x.transcript.txt"),
                "--no-cache",
                "--json",
                str(tmp_path / "c.json"),
            ]
        )
        == 0
    )
    labels = tmp_path / "l.jsonl"
    labels.write_text(json.dumps({"name": "a", "labels": ["happy", "surprised"]}) + "\n")
    assert main(["eval", "ov", "--pred", str(labels), "--gold", str(labels), "--json"]) == 0
    capsys.readouterr()
    remote = [
        a for a in addresses if not (isinstance(a, tuple) and a[0] in ("127.0.0.1", "::1", "localhost"))
    ]
    remote = [a for a in remote if not isinstance(a, (str, bytes))]  # AF_UNIX sockets stay on the machine
    assert remote == []


def test_onnxruntime_telemetry_is_off_for_the_speech_recogniser(tmp_path: Path) -> None:
    pytest.importorskip("faster_whisper")
    pytest.importorskip("onnxruntime")
    code = (
        "from affectllm.textualize.asr import disable_onnxruntime_telemetry\n"
        "disable_onnxruntime_telemetry()\n"
        "from faster_whisper.vad import get_vad_model\n"
        "get_vad_model()\n"
    )
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / ".cache")}
    env.pop("ORT_DISABLE_TELEMETRY", None)
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    # Without the switch, importing onnxruntime alone writes ~/.cache/Microsoft/DeveloperTools.
    assert not (tmp_path / ".cache" / "Microsoft").exists()


# ------------------------------------------------------------------------------------------ batch reruns


def test_rerun_of_a_mixed_textualize_batch_keeps_one_row_per_id(tmp_path: Path, capsys) -> None:
    pytest.importorskip("pandas")
    from affectllm.cli.main import main

    folder = tmp_path / "clips"
    folder.mkdir()
    (folder / "a.transcript.txt").write_text("I am fine.")
    (folder / "b.wav").write_bytes(os.urandom(3000))  # corrupt: fails every time
    (folder / "c.transcript.txt").write_text("Leave me alone.")
    out = tmp_path / "out.jsonl"
    argv = ["textualize", str(folder), "--out", str(out), "--asr", "none", "--no-cache", "--quiet"]
    for _ in range(3):
        assert main(argv) == 0
    err = capsys.readouterr().err
    assert "clip 'b' failed" in err and "b.wav" in err
    rows = read_jsonl(out)
    assert sorted(r["id"] for r in rows) == ["a", "b", "c"]
    assert "error" in next(r for r in rows if r["id"] == "b")


def test_manifest_transcript_path_that_does_not_exist_is_not_read_as_words(tmp_path: Path) -> None:
    from affectllm.textualize.pipeline import resolve_inputs

    with pytest.raises(InputError, match="transcript file not found"):
        resolve_inputs({"id": "a", "transcript": "a.transcript.txt"}, base_dir=tmp_path)
    words = resolve_inputs({"id": "a", "transcript": "Nothing to see here."}, base_dir=tmp_path)
    assert words.transcript_text == "Nothing to see here."


def test_a_full_disk_is_an_error_naming_the_output_and_the_old_result_survives(tmp_path: Path) -> None:
    # RLIMIT_FSIZE makes writes past the limit fail with EFBIG, as a full disk fails them with ENOSPC.
    (tmp_path / "a.transcript.txt").write_text("I am fine.")
    (tmp_path / "m.jsonl").write_text('{"id": "a", "transcript": "a.transcript.txt"}\n')
    (tmp_path / "old.json").write_text('{"kept": true}\n')
    code = textwrap.dedent(
        """
        import resource, signal, sys
        from affectllm.cli.main import main
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))
        d = sys.argv[1]
        rc1 = main(["textualize", f"{d}/m.jsonl", "--out", f"{d}/out.jsonl", "--asr", "none", "--no-cache", "--quiet"])
        rc2 = main(["textualize", f"{d}/a.transcript.txt", "--json", f"{d}/old.json", "--asr", "none", "--no-cache"])
        sys.exit(10 * rc1 + rc2)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 22, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{tmp_path}/out.jsonl: cannot write" in result.stderr
    assert f"{tmp_path}/old.json: cannot write" in result.stderr
    assert (tmp_path / "old.json").read_text() == '{"kept": true}\n'
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_eval_rationale_reports_judge_failures_and_fails_when_all_failed(capsys, caplog) -> None:
    from affectllm.cli.eval_rationale import _report_judge_failures
    from affectllm.metrics.judge import JudgeScore, summarize

    dead = JudgeScore(
        "a", errors=["clue_overlap: APIConnectionError: Connection error."], calls=2, failed_calls=2
    )
    assert _report_judge_failures(summarize([dead], base_url="http://127.0.0.1:9/v1")) == 1
    # Warnings go through logging (the command prints them on stderr); the final error is printed.
    assert "2 of 2 LLM judge calls failed (http://127.0.0.1:9/v1)" in caplog.text
    assert "every LLM judge call failed" in capsys.readouterr().err
    caplog.clear()
    half = JudgeScore("b", clue_overlap=7.0, errors=["label_overlap: timeout"], calls=2, failed_calls=1)
    assert _report_judge_failures(summarize([half])) == 0
    assert "1 of 2 LLM judge calls failed" in caplog.text
    caplog.clear()
    capsys.readouterr()  # the same warnings on stderr, where an earlier main() in this process configured it
    assert _report_judge_failures(summarize([JudgeScore("c", 8.0, 9.0, calls=2)])) == 0
    assert capsys.readouterr().err == "" and not caplog.records
