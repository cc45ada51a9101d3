"""The cue timeline: a clip's evidence on one time axis, with the cues an answer cites highlighted.

One row per kind of evidence, all sharing the time axis: the words said (ASR word times, else the timed
transcript lines, else the transcript over the whole clip), voice timing (pauses, speaking rate, voice
quality), the pitch and loudness contours with the bands the prosody cues are judged against, one row per
action unit that the facial cues name (intensity, onset-offset span, apex), other facial episodes, and the
scene captions. Each cue carries its citation id (``Clip.evidence()``); the ids a prediction cites are
highlighted, and ids it cites that the evidence does not have are listed as ungrounded.

The plot reads only the clip: its cues and ``Clip.signals`` (the contours the textualizers kept), so drawing
never re-runs ASR or any extractor. matplotlib (``affectllm[plots]``) is imported on first use, with the Agg
backend, so it works on headless machines.
"""

from __future__ import annotations

import io
import math
import re
import textwrap
from pathlib import Path
from typing import Any

from affectllm.schema import (
    ACOUSTIC,
    CUE_ID_PATTERN,
    FACIAL,
    LINGUISTIC,
    SCENE,
    Clip,
    Cue,
    Prediction,
)

__all__ = ["cited_ids", "render_timeline", "timeline_tracks", "ungrounded_ids"]

_ID_RE = re.compile(rf"(?<![A-Za-z0-9_])({CUE_ID_PATTERN})(?![A-Za-z0-9_])")
# The parser drops a cited id the evidence lacks and says so in Prediction.errors; the timeline lists it.
_UNKNOWN_ID_RE = re.compile(r"cited unknown cue id '([^']*)'")
_AU_NAME_RE = re.compile(r"^(?:face \d+: )?AU(\d{1,2}) ")
_APEX_RE = re.compile(r"apex (\d+(?:\.\d+)?)s")

_PITCH_CUES = {"pitch", "pitch range", "pitch contour"}
_SHORT_NAMES = {
    "speaking rate": "rate",
    "pitch contour": "contour",
    "pitch range": "range",
    "speech activity": "speech activity",
}

COLORS = {
    ACOUSTIC: "#1f77b4",
    FACIAL: "#2ca02c",
    SCENE: "#9467bd",
    LINGUISTIC: "#8c564b",
    "cited": "#e6550d",
    "ungrounded": "#c0392b",
    "pause": "#7f7f7f",
}


# ------------------------------------------------------------------------------------------------ citations


def cited_ids(prediction: Prediction | None) -> list[str]:
    """The evidence ids a prediction cites, in order of first mention: its rationale items' ids, ids written
    in their text or the answer, and ids the parser dropped because the evidence lacks them."""
    if prediction is None:
        return []
    found: list[str] = []
    texts = [prediction.answer]
    for item in prediction.rationale:
        if item.cue_id:
            found.append(item.cue_id.strip().strip("[]()").upper())
        texts.append(item.cue or "")
    for error in prediction.errors:
        found += [m.strip().strip("[]()").upper() for m in _UNKNOWN_ID_RE.findall(error)]
    for text in texts:
        found += _ID_RE.findall(text or "")
    return [i for i in dict.fromkeys(found) if re.fullmatch(CUE_ID_PATTERN, i)]


def ungrounded_ids(clip: Clip, prediction: Prediction | None) -> list[str]:
    """Ids the prediction cites that are not among the clip's evidence ids."""
    present = {e.id for e in clip.evidence()}
    return [i for i in cited_ids(prediction) if i not in present]


# ---------------------------------------------------------------------------------------------------- tracks


def _lane(cue: Cue) -> str:
    """The timeline row a cue is drawn on."""
    if cue.modality == LINGUISTIC:
        return "words"
    if cue.modality == SCENE:
        return "scene"
    if cue.modality == ACOUSTIC:
        if cue.name in _PITCH_CUES:
            return "pitch"
        return "loudness" if cue.name == "loudness" else "voice"
    match = _AU_NAME_RE.match(cue.name)
    return f"AU{int(match.group(1)):02d}" if match else "face"


def _number(value: Any) -> float | None:
    """A finite float, or None (signals come from JSON files a person may have edited)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _series_points(signal: Any) -> tuple[list[float], list[float | None]] | None:
    """(times, values) of a regular-grid signal ``{"step", "values"}`` (value i at ``(i + 0.5) * step``)."""
    if not isinstance(signal, dict) or not isinstance(signal.get("values"), list):
        return None
    step = _number(signal.get("step"))
    values = [_number(v) for v in signal["values"]]
    if not step or step <= 0 or all(v is None for v in values):
        return None
    return [(i + 0.5) * step for i in range(len(values))], values


def _spans(items: Any, *keys: str) -> list[dict[str, Any]]:
    """The entries of a signals list that have numeric ``start``/``end`` (and the other ``keys``)."""
    if not isinstance(items, list):
        return []
    return [
        x
        for x in items
        if isinstance(x, dict)
        and _number(x.get("start")) is not None
        and _number(x.get("end")) is not None
        and all(k in x for k in keys)
    ]


def timeline_tracks(clip: Clip) -> dict[str, Any]:
    """What the timeline draws, as plain data: ``duration``, ``cues`` (every evidence line with its id, lane,
    times and text), ``words`` (``[{"start", "end", "text"}]`` and ``words_source``), the ``pitch`` and
    ``loudness`` contours (``{"t", "values", "unit"}`` or None), ``bands``, ``pauses``, ``au`` rows
    (``{"AU12": {"t", "values", "scale"}}``) and ``lanes`` (the rows in drawing order)."""
    signals = clip.signals if isinstance(clip.signals, dict) else {}
    cues = []
    for ev in clip.evidence():
        cue = ev.cue
        apex = None
        if cue.modality == FACIAL and cue.detail:
            m = _APEX_RE.search(cue.detail)
            apex = float(m.group(1)) if m else None
        cues.append(
            {
                "id": ev.id,
                "lane": _lane(cue),
                "modality": cue.modality,
                "name": cue.name,
                "start": cue.start,
                "end": cue.end,
                "apex": apex,
                "band": cue.band,
                "value": cue.value,
                "text": ev.text,
            }
        )

    words = [w for w in _spans(signals.get("words"), "text") if str(w["text"]).strip()]
    words_source = "ASR word times" if words else None
    if not words:
        lines = [c for c in cues if c["lane"] == "words" and c["start"] is not None]
        words = [
            {
                "start": c["start"],
                "end": c["end"] if c["end"] is not None else c["start"],
                "text": str(c["value"]),
            }
            for c in lines
        ]
        words_source = "transcript lines" if words else None

    def contour(name: str) -> dict[str, Any] | None:
        got = _series_points(signals.get(name))
        if got is None:
            return None
        return {"t": got[0], "values": got[1], "unit": str(signals[name].get("unit") or "")}

    pitch, loudness = contour("pitch"), contour("loudness")

    au_rows: dict[str, Any] = {}
    au = signals.get("au") if isinstance(signals.get("au"), dict) else {}
    series_by_au = au.get("series") if isinstance(au.get("series"), dict) else {}
    for name, values in series_by_au.items():
        got = _series_points({"step": au.get("step"), "values": values})
        if got is not None:
            au_rows[name] = {"t": got[0], "values": got[1], "scale": au.get("scale", "")}

    ends = [c["end"] for c in cues if c["end"] is not None] + [
        c["start"] for c in cues if c["start"] is not None
    ]
    ends += [w["end"] for w in words]
    for series in [pitch, loudness, *au_rows.values()]:
        if series:
            ends.append(series["t"][-1])
    duration = clip.duration if clip.duration and math.isfinite(clip.duration) else None
    if duration is None and ends:
        duration = max(ends)

    lanes: list[str] = []
    timed = {c["lane"] for c in cues if c["start"] is not None}
    if words or any(c["lane"] == "words" for c in cues):
        lanes.append("words")
    pauses = _spans(signals.get("pauses"))
    if pauses or "voice" in timed:
        lanes.append("voice")
    if pitch or "pitch" in timed:
        lanes.append("pitch")
    if loudness or "loudness" in timed:
        lanes.append("loudness")
    au_lanes = sorted({c["lane"] for c in cues if c["lane"].startswith("AU") and c["start"] is not None})
    lanes += au_lanes
    if "face" in timed:
        lanes.append("face")
    if "scene" in timed:
        lanes.append("scene")
    return {
        "clip": clip.clip_id,
        "duration": duration,
        "cues": cues,
        "words": words,
        "words_source": words_source,
        "transcript": clip.transcript,
        "pitch": pitch,
        "loudness": loudness,
        "bands": [
            b
            for b in _spans(signals.get("bands"), "feature", "edges")
            if isinstance(b["edges"], list)
            and len(b["edges"]) == 4
            and all(_number(e) is not None for e in b["edges"])
        ],
        "pauses": pauses,
        "au": {k: v for k, v in au_rows.items() if k in au_lanes},
        "lanes": lanes,
    }


# ------------------------------------------------------------------------------------------------- drawing

# Row heights in inches: contours need room to show their shape, an AU row only its rise and fall.
_ROW_HEIGHT = {"words": 0.85, "voice": 0.5, "pitch": 1.3, "loudness": 0.95, "face": 0.34, "scene": 0.34}
_AU_ROW_HEIGHT = 0.42
_LEFT_IN, _RIGHT_IN, _HEADER_IN, _AXIS_IN, _GAP_IN, _FOOT_LINE_IN = 1.75, 0.2, 0.95, 0.45, 0.06, 0.2


def _pyplot() -> Any:
    from affectllm.errors import require

    matplotlib = require("matplotlib", "plots", "the cue timeline")
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _pack(spans: list[tuple[float, float]], min_gap: float) -> list[int]:
    """A sub-row for each span so spans on one sub-row do not overlap (greedy interval packing)."""
    row_ends: list[float] = []
    rows = []
    for start, end in spans:
        for i, row_end in enumerate(row_ends):
            if start >= row_end + min_gap:
                row_ends[i] = end
                rows.append(i)
                break
        else:
            row_ends.append(end)
            rows.append(len(row_ends) - 1)
    return rows


def _fit(text: str, seconds: float, seconds_per_char: float) -> str:
    """``text`` cut to what fits in ``seconds`` of the axis."""
    room = max(0, int(seconds / seconds_per_char))
    if len(text) <= room:
        return text
    return text[: max(0, room - 1)].rstrip() + "…" if room > 3 else ""


def _label_row(lane: str, tracks: dict[str, Any]) -> str:
    if lane == "words":
        return "words\n(" + (tracks["words_source"] or "transcript") + ")"
    if lane == "voice":
        return "pauses, rate,\nvoice quality"
    if lane == "pitch":
        return "pitch (Hz)"
    if lane == "loudness":
        unit = (tracks["loudness"] or {}).get("unit") or ""
        return f"loudness ({unit})" if unit else "loudness"
    if lane == "face":
        return "face: other\nepisodes"
    if lane == "scene":
        return "scene\ncaptions"
    from affectllm.textualize.facs import au_name

    try:
        name = au_name(int(lane[2:]))
    except (KeyError, ValueError):
        name = ""
    return f"{lane}\n{name}" if name else lane


def render_timeline(
    clip: Clip,
    prediction: Prediction | None = None,
    *,
    path: str | Path | None = None,
    width: float = 11.0,
) -> bytes:
    """Draw ``clip``'s evidence on one time axis and return the PNG bytes (also written to ``path``, its
    folders created; a path that cannot be written is an :class:`~affectllm.errors.InputError`).

    With ``prediction``, the cues it cites are highlighted and labelled, and ids it cites that are not in the
    evidence are listed as ungrounded. A clip with no timed evidence (a transcript only, cues without times)
    still gets a figure: what it has, and a note that nothing is timed.
    """
    plt = _pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    tracks = timeline_tracks(clip)
    cited = set(cited_ids(prediction))
    ungrounded = [i for i in cited_ids(prediction) if i not in {c["id"] for c in tracks["cues"]}]
    lanes = tracks["lanes"]
    duration = tracks["duration"] or 1.0
    timed_cues = [c for c in tracks["cues"] if c["start"] is not None]
    # Whole-clip cues are listed under the plot; the transcript is drawn across the words row instead.
    whole_clip = [
        c for c in tracks["cues"] if c["start"] is None and not (c["lane"] == "words" and "words" in lanes)
    ]
    has_times = bool(timed_cues or tracks["words"] or tracks["pitch"] or tracks["loudness"] or tracks["au"])

    plot_width_in = max(2.0, width - _LEFT_IN - _RIGHT_IN)
    # ~0.55 em per character at 7 pt: how many seconds of axis one character of a label takes.
    sec_per_char = duration / (plot_width_in * 72.0 / (7.0 * 0.55))

    # Sub-rows for the lanes whose spans may overlap.
    packed: dict[str, list[int]] = {}
    for lane in ("face", "scene"):
        items = [c for c in timed_cues if c["lane"] == lane]
        packed[lane] = _pack(
            [(c["start"], c["end"] if c["end"] is not None else c["start"]) for c in items], 0.0
        )
    heights = []
    for lane in lanes:
        if lane in ("face", "scene"):
            heights.append(max(0.42, _ROW_HEIGHT[lane] * (max(packed[lane], default=0) + 1)))
        else:
            heights.append(_ROW_HEIGHT.get(lane, _AU_ROW_HEIGHT))
    if not lanes:
        heights = [0.9]

    footer = _footer_lines(whole_clip, cited, width)
    header = _header_lines(prediction, cited, ungrounded, tracks, has_times, width)
    header_in = max(_HEADER_IN, 0.5 + 0.2 * len(header))
    total = header_in + sum(heights) + _GAP_IN * max(0, len(heights) - 1) + _AXIS_IN
    total += _FOOT_LINE_IN * len(footer) + (0.15 if footer else 0.0)
    fig = plt.figure(figsize=(width, total))
    try:
        _header(fig, clip, header, total)
        axes = []
        top = total - header_in
        for height in heights:
            bottom = top - height
            ax = fig.add_axes(
                (_LEFT_IN / width, bottom / total, plot_width_in / width, height / total),
                sharex=axes[0] if axes else None,
            )
            axes.append(ax)
            top = bottom - _GAP_IN
        if not lanes:
            _no_timed_evidence(axes[0], tracks)
        for ax, lane in zip(axes if lanes else [], lanes, strict=True):
            ax.set_ylabel(
                _label_row(lane, tracks), rotation=0, ha="right", va="center", fontsize=8, labelpad=6
            )
            ax.tick_params(axis="y", labelsize=6.5)
            ax.grid(axis="x", color="#dddddd", lw=0.6)
            ax.set_axisbelow(True)
            lane_cues = [c for c in timed_cues if c["lane"] == lane]
            if lane == "words":
                _draw_words(ax, tracks, lane_cues, cited, sec_per_char)
            elif lane == "voice":
                _draw_voice(ax, tracks, lane_cues, cited, sec_per_char)
            elif lane in ("pitch", "loudness"):
                _draw_contour(ax, lane, tracks, lane_cues, cited, sec_per_char)
            elif lane in ("face", "scene"):
                _draw_spans(ax, lane, lane_cues, packed[lane], cited, sec_per_char)
            else:
                _draw_au(ax, lane, tracks, lane_cues, cited)
            if lane in ("words", "pitch", "loudness") and tracks["pauses"]:
                for p in tracks["pauses"]:
                    ax.axvspan(p["start"], p["end"], color=COLORS["pause"], alpha=0.12, lw=0, zorder=0)
        for ax in axes[:-1]:
            ax.tick_params(axis="x", labelbottom=False)
        axes[-1].set_xlim(0.0, duration)
        if has_times:
            axes[-1].set_xlabel("time (s)", fontsize=8)
            axes[-1].tick_params(axis="x", labelsize=7)
        else:
            axes[-1].set_xticks([])
        _legend(fig, tracks, cited - set(ungrounded), total, width, Line2D, Patch)
        y = _AXIS_IN - 0.05 + _FOOT_LINE_IN * (len(footer) - 1)
        for text, color, weight in footer:
            fig.text(
                0.01, y / total, text, fontsize=7, color=color, weight=weight, va="top", family="monospace"
            )
            y -= _FOOT_LINE_IN
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
    finally:
        plt.close(fig)
    data = _palette_png(buffer.getvalue())
    if path is not None:
        from affectllm.outputs import ensure_parent

        ensure_parent(path)
        try:
            Path(path).write_bytes(data)
        except OSError as exc:
            from affectllm.errors import InputError
            from affectllm.outputs import os_problem

            raise InputError(path, f"cannot write: {os_problem(exc)}") from None
    return data


def _palette_png(png: bytes) -> bytes:
    """The same image with a 256-colour palette: flat plot colours survive it and the file is about a third
    the size (reports hold one per shown sample; the web page sends one per answer)."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _header(fig, clip: Clip, lines: list[tuple[str, str]], total: float) -> None:
    y = 1.0 - 0.12 / total
    fig.text(0.01, y, f"{clip.clip_id}: cue timeline", fontsize=11, weight="bold", va="top")
    for i, (text, color) in enumerate(lines):
        fig.text(0.01, y - (0.3 + 0.2 * i) / total, text, fontsize=8, color=color, va="top")


def _header_lines(
    prediction, cited: set[str], ungrounded: list[str], tracks, has_times: bool, width: float
) -> list[tuple[str, str]]:
    """The lines under the title: the answer and what it cites, ungrounded ids, and a note when nothing is
    timed; wrapped to the figure's width."""
    lines: list[tuple[str, str]] = []
    if prediction is not None:
        emotions = ", ".join(prediction.emotions) or "(none)"
        shown = sorted(cited - set(ungrounded), key=_id_order)
        lines.append(
            (
                f"answer: {emotions}    cited (highlighted): {', '.join(shown) or 'none'}",
                COLORS["cited"] if shown else "black",
            )
        )
        if ungrounded:
            lines.append(
                (f"cited but not in the evidence (ungrounded): {', '.join(ungrounded)}", COLORS["ungrounded"])
            )
    else:
        n = len(tracks["cues"])
        lines.append(
            (
                f"{n} evidence line{'s' if n != 1 else ''}; no answer given, so nothing is highlighted",
                "#444444",
            )
        )
    if not has_times:
        lines.append(
            ("no timed evidence: nothing in this clip has times, so there is no time axis", "#555555")
        )
    chars = int(width * 72 / (8 * 0.55)) - 4
    return [(part, color) for text, color in lines for part in textwrap.wrap(text, chars)]


def _id_order(cue_id: str) -> tuple[str, int]:
    return cue_id[0], int(cue_id[1:])


def _footer_lines(
    whole_clip: list[dict[str, Any]], cited: set[str], width: float
) -> list[tuple[str, str, str]]:
    """Whole-clip cues as text lines (they have no place on the time axis), cited ones highlighted."""
    if not whole_clip:
        return []
    chars = int(width * 72 / (7 * 0.6)) - 2
    out = [("whole clip (no times):", "black", "bold")]
    for c in whole_clip[:8]:
        text = c["text"].replace(" [whole clip]", "", 1)
        for i, line in enumerate(textwrap.wrap(text, chars - 2, max_lines=2, placeholder=" …")):
            hit = c["id"] in cited
            out.append(
                (
                    "  " + line if i == 0 else "     " + line,
                    COLORS["cited"] if hit else "#333333",
                    "bold" if hit else "normal",
                )
            )
    if len(whole_clip) > 8:
        out.append((f"  … and {len(whole_clip) - 8} more", "#333333", "normal"))
    return out


def _legend(fig, tracks, cited: set[str], total: float, width: float, Line2D, Patch) -> None:
    handles = []
    if cited:
        handles.append(
            Patch(
                facecolor=COLORS["cited"], alpha=0.25, edgecolor=COLORS["cited"], label="cited by the answer"
            )
        )
    if tracks["pauses"]:
        handles.append(Patch(facecolor=COLORS["pause"], alpha=0.3, label="pause"))
    if tracks["pitch"] or tracks["loudness"]:
        handles.append(Line2D([], [], color=COLORS[ACOUSTIC], lw=1.2, label="contour"))
    if tracks["bands"]:
        handles.append(Patch(facecolor=COLORS[ACOUSTIC], alpha=0.21, label="average band (±1 SD)"))
        handles.append(Patch(facecolor=COLORS[ACOUSTIC], alpha=0.07, label="low / high (±2 SD)"))
    if any(lane.startswith("AU") for lane in tracks["lanes"]):
        handles.append(Patch(facecolor=COLORS[FACIAL], alpha=0.35, label="AU episode (onset-offset)"))
        handles.append(Line2D([], [], color=COLORS[FACIAL], marker="v", lw=0, label="apex"))
    if handles:
        fig.legend(
            handles=handles,
            loc="upper right",
            bbox_to_anchor=(1.0 - 0.1 / width, 1.0 - 0.08 / total),
            ncol=min(4, len(handles)),
            fontsize=7,
            frameon=False,
        )


def _id_label(
    ax, x: float, y: float, cue: dict[str, Any], cited: set[str], text: str | None = None, **kw
) -> None:
    hit = cue["id"] in cited
    ax.text(
        x,
        y,
        text or cue["id"],
        fontsize=7,
        color=COLORS["cited"] if hit else "#333333",
        weight="bold" if hit else "normal",
        clip_on=True,
        **kw,
    )


def _highlight(ax, cue: dict[str, Any], cited: set[str]) -> None:
    """A cited cue's span: a light wash over the row and a solid strip along its top edge (the wash alone is
    lost when a cue spans the whole clip)."""
    if cue["id"] in cited and cue["start"] is not None:
        end = cue["end"] if cue["end"] is not None and cue["end"] > cue["start"] else cue["start"] + 0.05
        ax.axvspan(cue["start"], end, facecolor=COLORS["cited"], alpha=0.1, lw=0, zorder=0.5)
        ax.axvspan(cue["start"], end, ymin=0.0, ymax=0.04, facecolor=COLORS["cited"], alpha=0.8, lw=0)


def _unit_labels(ax, cues: list[dict[str, Any]], cited: set[str], sec_per_char: float, y: float) -> None:
    """Labels ``A5 pitch  A6 contour`` for cues sharing a span, at the span's start."""
    by_span: dict[tuple[float, float], list[dict[str, Any]]] = {}
    for c in cues:
        by_span.setdefault((c["start"], c["end"] if c["end"] is not None else c["start"]), []).append(c)
    for (start, end), group in by_span.items():
        x = start + 0.3 * sec_per_char
        room = max(end - start, 8 * sec_per_char)
        for c in sorted(group, key=lambda c: _id_order(c["id"])):
            label = f"{c['id']} {_SHORT_NAMES.get(c['name'], c['name'])}"
            if (x - start) + (len(label) + 1) * sec_per_char > room:
                break
            _id_label(ax, x, y, c, cited, label, transform=ax.get_xaxis_transform(), va="top")
            x += (len(label) + 3) * sec_per_char  # bold (cited) labels run wider


def _draw_words(ax, tracks, cues, cited: set[str], sec_per_char: float) -> None:
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    for c in cues:
        _highlight(ax, c, cited)
        if c["start"] is not None:
            end = c["end"] if c["end"] is not None else c["start"]
            ax.plot(
                [c["start"], end],
                [0.86, 0.86],
                color=COLORS[LINGUISTIC],
                lw=3,
                alpha=0.5,
                solid_capstyle="butt",
            )
            _id_label(
                ax,
                c["start"] + 0.3 * sec_per_char,
                0.86,
                c,
                cited,
                va="center",
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.6},
            )
    words = tracks["words"]
    if not words:
        whole = [c for c in tracks["cues"] if c["lane"] == "words"]
        if whole:
            _highlight(ax, {**whole[0], "start": 0.0, "end": tracks["duration"] or 1.0}, cited)
            text = textwrap.shorten(
                str(whole[0]["value"]), int((tracks["duration"] or 1) / sec_per_char) - 12, placeholder=" …"
            )
            _id_label(
                ax,
                0.5 * sec_per_char,
                0.45,
                whole[0],
                cited,
                f"{whole[0]['id']} [whole clip] \u201c{text}\u201d",
                va="center",
            )
        return
    # Words on up to three levels: each goes on the first level where it does not overlap the last word there.
    level_ends = [-1e9, -1e9, -1e9]
    for w in words:
        mid = (w["start"] + w["end"]) / 2
        half = len(w["text"]) * sec_per_char / 2
        level = next((i for i, e in enumerate(level_ends) if mid - half > e), None)
        if level is None:
            level = min(range(3), key=lambda i: level_ends[i])
        level_ends[level] = mid + half + 0.5 * sec_per_char
        y = 0.5 - 0.24 * level
        ax.plot([w["start"], w["end"]], [y - 0.04, y - 0.04], color=COLORS[LINGUISTIC], lw=1, alpha=0.6)
        ax.text(mid, y, w["text"], fontsize=7, ha="center", va="bottom", color="black", clip_on=True)


def _draw_voice(ax, tracks, cues, cited: set[str], sec_per_char: float) -> None:
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    for p in tracks["pauses"]:
        ax.axvspan(p["start"], p["end"], ymax=0.45, color=COLORS["pause"], alpha=0.45, lw=0)
        ax.text(
            (p["start"] + p["end"]) / 2,
            0.22,
            f"{p['end'] - p['start']:.2f}s",
            fontsize=6,
            ha="center",
            va="center",
            clip_on=True,
        )
    for c in cues:
        _highlight(ax, c, cited)
    _unit_labels(ax, cues, cited, sec_per_char, 0.95)


def _draw_contour(ax, lane: str, tracks, cues, cited: set[str], sec_per_char: float) -> None:
    series = tracks[lane]
    for c in cues:
        _highlight(ax, c, cited)
    low = high = None
    if series:
        vals = [v for v in series["values"] if v is not None]
        low, high = min(vals), max(vals)
        # Unvoiced bins are gaps in the line, not zeros.
        ax.plot(
            series["t"],
            [math.nan if v is None else v for v in series["values"]],
            color=COLORS[ACOUSTIC],
            lw=1.2,
        )
    for band in tracks["bands"]:
        if band.get("feature") != lane or len(band.get("edges") or []) != 4:
            continue
        e = band["edges"]
        ax.fill_between([band["start"], band["end"]], e[0], e[3], color=COLORS[ACOUSTIC], alpha=0.07, lw=0)
        ax.fill_between([band["start"], band["end"]], e[1], e[2], color=COLORS[ACOUSTIC], alpha=0.14, lw=0)
        ax.text(
            band["end"],
            e[2],
            f"band vs {band.get('reference', '')} ",
            fontsize=6,
            va="bottom",
            ha="right",
            color="#555555",
            clip_on=True,
        )
        if low is not None:
            low, high = min(low, e[1]), max(high, e[2])
    if low is not None and high is not None:
        pad = 0.15 * (high - low or 1.0)
        ax.set_ylim(low - pad, high + 2.2 * pad)  # room at the top for the id labels
    if series and not any(b.get("feature") == lane for b in tracks["bands"]):
        ax.text(
            0.995,
            0.97,
            "no band: no speaker baseline or norm for this measure",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=6,
            color="#555555",
        )
    if not series:
        ax.set_yticks([])
        ax.text(
            0.5,
            0.5,
            "no contour stored with this clip",
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=7,
            color="#777777",
        )
    _unit_labels(ax, cues, cited, sec_per_char, 0.97)


def _draw_au(ax, lane: str, tracks, cues, cited: set[str]) -> None:
    series = tracks["au"].get(lane)
    top = 5.0
    if series:
        vals = [v for v in series["values"] if v is not None]
        top = 5.0 if series["scale"].startswith("intensity") else max(1.0, max(vals, default=1.0))
        ax.fill_between(
            series["t"],
            [0 if v is None else v for v in series["values"]],
            color=COLORS[FACIAL],
            alpha=0.12,
            lw=0,
        )
        ax.plot(
            series["t"], [math.nan if v is None else v for v in series["values"]], color=COLORS[FACIAL], lw=1
        )
    ax.set_ylim(0, top * 1.25)
    ax.set_yticks([0, top])
    ax.set_yticklabels(["0", f"{top:g}"])
    for c in cues:
        _highlight(ax, c, cited)
        start, end = c["start"], c["end"] if c["end"] is not None else c["start"]
        ax.broken_barh([(start, max(end - start, 0.02))], (0, top * 0.12), color=COLORS[FACIAL], alpha=0.45)
        for x in (start, end):
            ax.plot([x, x], [0, top * 0.3], color=COLORS[FACIAL], lw=0.8)
        if c["apex"] is not None:
            peak = c["value"] if isinstance(c["value"], (int, float)) else top * 0.6
            ax.plot(
                [c["apex"]],
                [min(float(peak), top) + top * 0.08],
                marker="v",
                color=COLORS[FACIAL],
                ms=5,
                lw=0,
            )
        band = f" {c['band']}" if c["band"] else ""
        peak_text = f" peak {c['value']:.1f}" if isinstance(c["value"], (int, float)) else ""
        _id_label(ax, start, top * 1.2, c, cited, f"{c['id']}{band}{peak_text}", va="top")


def _draw_spans(ax, lane: str, cues, rows: list[int], cited: set[str], sec_per_char: float) -> None:
    n = max(rows, default=0) + 1
    ax.set_ylim(n, 0)
    ax.set_yticks([])
    color = COLORS[SCENE if lane == "scene" else FACIAL]
    for c, row in zip(cues, rows, strict=True):
        _highlight(ax, c, cited)
        start = c["start"]
        end = c["end"] if c["end"] is not None and c["end"] > start else start + 0.05
        ax.broken_barh([(start, end - start)], (row + 0.12, 0.76), color=color, alpha=0.22)
        body = str(c["value"]) if lane == "scene" else c["name"]
        label = _fit(f"{c['id']} {body}", end - start, sec_per_char)
        _id_label(ax, start + 0.4 * sec_per_char, row + 0.5, c, cited, label or c["id"], va="center")


def _no_timed_evidence(ax, tracks) -> None:
    ax.set_yticks([])
    ax.set_xticks([])
    n = len(tracks["cues"])
    note = "no timed evidence: " + (
        f"{n} evidence line{'s' if n != 1 else ''} without times (listed below)"
        if n
        else "the clip has no evidence"
    )
    ax.text(0.5, 0.5, note, transform=ax.transAxes, ha="center", va="center", fontsize=9, color="#555555")
