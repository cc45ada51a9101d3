"""Run the fuzz corpus and judge each case: exit code, message, no traceback, no hang, nothing lost.

Cases run in-process through ``affectllm.cli.main.main(argv)`` (fast: no interpreter start per case) inside a
child process, so a segfault or an out-of-memory kill ends only that child: the driver records the case that
was running as a crash and starts a new child for the rest. Each case gets its own folder; every file, link
and FIFO in it is snapshotted before and compared after.

    python tests/fuzz/runner.py              # the table: cases per command, refusals, crashes, hangs, losses
    python tests/fuzz/runner.py --details    # and one line per case that did not pass
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import io
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from fuzz import inputs  # type: ignore[no-redef]
    from fuzz.corpus import Case, all_cases  # type: ignore[no-redef]
else:
    from . import inputs
    from .corpus import Case, all_cases

MAX_MESSAGE_LINES = 8  # a refusal is a message, not a report


class Hang(BaseException):
    """The case ran past its timeout (BaseException: batch code that records per-item errors must not eat it)."""


# ------------------------------------------------------------------------------------------- one case


def setup_case(case: Case, folder: Path) -> None:
    folder.mkdir(parents=True)
    for rel, content in case.files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content.startswith("@symlink:"):
            os.symlink(folder / content[len("@symlink:") :], path)
        elif content == "@readonly-dir":
            path.mkdir()
            path.chmod(0o555)
        else:
            inputs.materialise(path, content[1:])


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under ``folder`` (links not followed) -> what it is: a content hash, a link target, a kind."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(folder))
            info = os.lstat(path)
            if stat.S_ISREG(info.st_mode):
                out[rel] = "file:" + hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(info.st_mode):
                out[rel] = "link:" + os.readlink(path)
            elif stat.S_ISDIR(info.st_mode):
                out[rel] = "dir"
            else:
                out[rel] = f"special:{stat.S_IFMT(info.st_mode)}"
    return out


def _timeout(signum: int, frame: Any) -> None:
    raise Hang()


def _out_path(argv: list[str]) -> Path | None:
    for flag in ("--out",):
        if flag in argv and argv.index(flag) + 1 < len(argv):
            return Path(argv[argv.index(flag) + 1])
    return None


def run_case(case: Case, root: Path) -> dict[str, Any]:
    """Run one case in this process; return its record (outcome, problems, stderr tail, seconds)."""
    from affectllm.cli.main import main

    folder = root / case.id.replace("/", "_")
    setup_case(case, folder)
    argv = [a.replace("{d}", str(folder)) for a in case.argv]
    before = snapshot(folder)
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    rc: int | None = None
    outcome = None
    escaped = None
    started = time.perf_counter()
    os.chdir(folder)
    previous = signal.signal(signal.SIGALRM, _timeout)
    signal.setitimer(signal.ITIMER_REAL, case.timeout)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = int(main(argv) or 0)
    except SystemExit as exc:  # argparse: 0 for --help, 2 for a usage error
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Hang:
        outcome = "hang"
    except BaseException as exc:
        outcome = "crash"
        escaped = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        os.chdir(cwd)
    seconds = time.perf_counter() - started
    stderr = err.getvalue()
    if outcome is None and "Traceback (most recent call last)" in stderr:
        outcome = "crash"
        escaped = stderr.strip().splitlines()[-1]
    if outcome is None:
        outcome = "accepted" if rc == 0 else "refused"
    after = snapshot(folder)
    changed = sorted(p for p, v in before.items() if after.get(p) != v)
    altered = [p for p in changed if p not in case.may_change]

    problems: list[str] = []
    if outcome in ("crash", "hang"):
        problems.append(f"{outcome}: {escaped or ''}".strip())
    if altered:
        problems.append(f"files lost or altered: {', '.join(altered)}")
    if case.expect == "refuse" and outcome == "accepted":
        problems.append("accepted bad input (exit 0)")
    if case.expect == "accept" and outcome == "refused":
        problems.append(f"refused good input (exit {rc})")
    if outcome == "refused":
        lines = [line for line in stderr.splitlines() if line.strip()]
        if any(line.startswith("usage:") for line in lines):
            # argparse repeats the usage before its one-line error; the message is that line.
            lines = [line for line in lines if ": error:" in line]
        if not any("error" in line for line in lines):
            problems.append("refusal without an error message on stderr")
        if len(lines) > MAX_MESSAGE_LINES:
            problems.append(f"refusal message is {len(lines)} lines long")
        if case.names and case.names not in stderr:
            problems.append(f"message does not name {case.names!r}")
    out_file = _out_path(argv)
    if outcome == "accepted" and out_file is not None and out_file.is_file():
        lines = out_file.read_text(encoding="utf-8").splitlines()
        ids = [json.dumps(json.loads(line).get("id")) for line in lines if line.strip()]
        if len(ids) != len(set(ids)):
            problems.append("--out holds duplicate ids after the run")
    for path in folder.rglob("*"):  # let the temporary folder be removed
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
    return {
        "id": case.id,
        "command": case.command,
        "expect": case.expect,
        "outcome": outcome,
        "rc": rc,
        "altered": altered,
        "changed": changed,
        "problems": problems,
        "known": case.known,
        "stderr": stderr.strip().splitlines()[-4:],
        "seconds": round(seconds, 3),
    }


# ------------------------------------------------------------------------------------------ child process


def _dump_cases(cases: list[Case], path: Path) -> None:
    """Cases as JSON for the child (file contents as base64, special kinds as their "@kind" text)."""
    rows = []
    for case in cases:
        row = dict(vars(case))
        row["files"] = {
            rel: ({"b64": base64.b64encode(v).decode()} if isinstance(v, bytes) else v)
            for rel, v in case.files.items()
        }
        rows.append(row)
    path.write_text(json.dumps(rows))


def _load_cases(path: Path) -> list[Case]:
    cases = []
    for row in json.loads(path.read_text()):
        row["files"] = {
            rel: (base64.b64decode(v["b64"]) if isinstance(v, dict) else v) for rel, v in row["files"].items()
        }
        row["may_change"] = tuple(row["may_change"])
        cases.append(Case(**row))
    return cases


def _child(results: Path, cases_file: Path, progress: Path) -> None:
    """Run the cases of ``cases_file`` in this process, appending each record to ``results``."""
    with tempfile.TemporaryDirectory(prefix="affectllm-fuzz-") as tmp:
        for case in _load_cases(cases_file):
            progress.write_text(case.id)
            record = run_case(case, Path(tmp))
            with results.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")


def child_env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        AFFECTLLM_CACHE=str(cache),
        TQDM_DISABLE="1",
        OPENAI_API_KEY="fuzz",
    )
    env.pop("AFFECTLLM_DEBUG", None)
    return env


def run_all(cases: list[Case] | None = None, workdir: Path | None = None) -> list[dict[str, Any]]:
    """Run ``cases`` (default: the corpus) in child processes; a child that dies is replaced, and the case
    it was running is recorded as a crash (signal or exit status)."""
    cases = all_cases() if cases is None else cases
    with tempfile.TemporaryDirectory(prefix="affectllm-fuzz-run-") as tmp:
        work = workdir or Path(tmp)
        results, progress = work / "results.jsonl", work / "progress.txt"
        results.unlink(missing_ok=True)
        env = child_env(work / "cache")
        records: dict[str, dict[str, Any]] = {}
        remaining = [c.id for c in cases]
        by_id = {c.id: c for c in cases}
        while remaining:
            cases_file = work / "cases.json"
            _dump_cases([by_id[i] for i in remaining], cases_file)
            proc = subprocess.run(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--child",
                    str(results),
                    str(cases_file),
                    str(progress),
                ],
                env=env,
                capture_output=True,
                text=True,
            )
            if results.exists():
                for line in results.read_text(encoding="utf-8").splitlines():
                    record = json.loads(line)
                    records[record["id"]] = record
            remaining = [i for i in remaining if i not in records]
            if proc.returncode != 0 and remaining:
                dead = progress.read_text() if progress.exists() else remaining[0]
                case = by_id[dead]
                how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
                records[dead] = {
                    "id": dead,
                    "command": case.command,
                    "expect": case.expect,
                    "outcome": "crash",
                    "rc": proc.returncode,
                    "altered": [],
                    "changed": [],
                    "problems": [f"crash: the process died ({how}): {proc.stderr.strip()[-300:]}"],
                    "known": case.known,
                    "stderr": proc.stderr.strip().splitlines()[-4:],
                    "seconds": None,
                }
                remaining = [i for i in remaining if i != dead]
            elif proc.returncode != 0:
                break
        return [records[c.id] for c in cases if c.id in records]


# --------------------------------------------------------------------------------------------------- table


def table(records: list[dict[str, Any]]) -> str:
    """Cases per command: clean refusals, accepted, crashes, hangs, files lost or altered, other problems."""
    rows: dict[str, Counter] = defaultdict(Counter)
    for r in records:
        c = rows[r["command"]]
        c["cases"] += 1
        c[r["outcome"]] += 1
        c["altered"] += bool(r["altered"])
        other = [p for p in r["problems"] if not p.startswith(("crash", "hang", "files lost"))]
        c["other"] += bool(other)
        c["known"] += bool(r["problems"] and r["known"])
    header = (
        f"{'command':<16}{'cases':>7}{'refused':>9}{'accepted':>10}{'crashes':>9}{'hangs':>7}{'lost/altered':>14}"
        f"{'other':>7}{'of which known':>16}"
    )
    lines = [header, "-" * len(header)]
    total: Counter = Counter()
    for command in sorted(rows):
        c = rows[command]
        total.update(c)
        lines.append(
            f"{command:<16}{c['cases']:>7}{c['refused']:>9}{c['accepted']:>10}{c['crash']:>9}{c['hang']:>7}"
            f"{c['altered']:>14}{c['other']:>7}{c['known']:>16}"
        )
    lines.append("-" * len(header))
    lines.append(
        f"{'total':<16}{total['cases']:>7}{total['refused']:>9}{total['accepted']:>10}{total['crash']:>9}"
        f"{total['hang']:>7}{total['altered']:>14}{total['other']:>7}{total['known']:>16}"
    )
    lines.append("other: a refusal without a message naming the file, good input refused, bad input accepted")
    lines.append(
        "known: problems in code outside this corpus' fixes, listed in tests/fuzz/corpus.py KNOWN (xfail)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--child", nargs=3, metavar=("RESULTS", "CASES", "PROGRESS"), help=argparse.SUPPRESS)
    parser.add_argument("--details", action="store_true", help="one line per case with a problem")
    parser.add_argument("--only", metavar="TEXT", help="only cases whose id contains TEXT")
    parser.add_argument("--json", metavar="FILE", type=Path, help="write every case's record here")
    args = parser.parse_args(argv)
    if args.child:
        results, cases_file, progress = args.child
        _child(Path(results), Path(cases_file), Path(progress))
        return 0
    cases = [c for c in all_cases() if not args.only or args.only in c.id]
    started = time.perf_counter()
    records = run_all(cases)
    print(table(records))
    print(f"{len(records)} cases in {time.perf_counter() - started:.0f} s")
    if args.details:
        for r in records:
            if r["problems"]:
                print(f"{r['id']}: {'; '.join(r['problems'])} | {' / '.join(r['stderr'])[:300]}")
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))
    return 0 if all(not r["problems"] or r["known"] for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
