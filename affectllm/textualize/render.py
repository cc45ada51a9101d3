"""Render a clip's cues to the compact, deterministic text block that prompts show the LLM.

The same ordering and ids are used by the prompt builder, the grounding metric and the GRPO grounding reward,
so a cue cited as ``F2`` in a rationale always means the same piece of evidence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from affectllm.schema import CUE_ID_PREFIX, MODALITIES, Clip, Cue, Evidence, normalize_modality

MODALITY_TITLES: dict[str, str] = {
    "acoustic": "Acoustic (voice and prosody)",
    "facial": "Facial action units",
    "visual-scene": "Visual scene",
    "linguistic": "Speech content",
}


def approx_tokens(text: str) -> int:
    """A tokenizer-free token estimate (~4 characters per token for English BPE vocabularies)."""
    return max(1, (len(text) + 3) // 4)


def ordered_cues(cues: Iterable[Cue]) -> list[Cue]:
    """Stable display order: modality, then start time (whole-clip cues first), then name."""
    rank = {m: i for i, m in enumerate(MODALITIES)}
    return sorted(
        cues,
        key=lambda c: (rank[c.modality], -1.0 if c.start is None else c.start, c.name, str(c.value)),
    )


def assign_ids(cues: Sequence[Cue]) -> list[tuple[str, Cue]]:
    """Give each cue a citation id (A1, F1, S1, L1, ...) over the full ordered list."""
    counters: dict[str, int] = {}
    out = []
    for cue in ordered_cues(cues):
        prefix = CUE_ID_PREFIX[cue.modality]
        counters[prefix] = counters.get(prefix, 0) + 1
        out.append((f"{prefix}{counters[prefix]}", cue))
    return out


def format_time(start: float | None, end: float | None) -> str:
    if start is None and end is None:
        return "whole clip"
    if end is None or abs((end or 0) - (start or 0)) < 0.05:
        return f"{start:.1f}s"
    return f"{(start or 0.0):.1f}-{end:.1f}s"


def _format_number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def cue_line(cue_id: str, cue: Cue) -> str:
    """One line of evidence, e.g. ``F2 [0.4-1.8s] AU12 lip corner puller: strong (C, 2.31)``."""
    if cue.detail:
        body = cue.detail
    else:
        parts = []
        if cue.band:
            parts.append(str(cue.band))
        if isinstance(cue.value, (int, float)) and not isinstance(cue.value, bool):
            measured = _format_number(float(cue.value)) + (f" {cue.unit}" if cue.unit else "")
            parts.append(f"({measured})" if parts else measured)
        elif cue.value not in (None, ""):
            text = str(cue.value)
            parts.append(f'"{text}"' if cue.modality == "linguistic" else text)
        body = " ".join(parts) if parts else "present"
    return f"{cue_id} [{format_time(cue.start, cue.end)}] {cue.name}: {body}"


def render_cues(
    clip_or_cues: Clip | Sequence[Cue],
    modalities: Iterable[str] | None = None,
    max_tokens: int | None = None,
    count_tokens: Callable[[str], int] = approx_tokens,
    with_headers: bool = True,
) -> str:
    """Render cues as text. ``modalities`` toggles which evidence is shown; ``max_tokens`` caps the block.

    When the budget is tight, cues are kept round-robin across modalities in each extractor's own order
    (extractors emit their most salient cues first), so no modality is starved; the block then says how many
    cues were left out. Ids are assigned before filtering so citations stay stable across budgets.
    """
    if isinstance(clip_or_cues, Clip):
        evidence = clip_or_cues.evidence()
    else:
        evidence = [Evidence(cid, c, cue_line(cid, c)) for cid, c in assign_ids(list(clip_or_cues))]
    cues = [e.cue for e in evidence]
    wanted = None if modalities is None else {normalize_modality(m) for m in modalities}
    identified = [(e.id, e.cue) for e in evidence if wanted is None or e.cue.modality in wanted]
    if not identified:
        return "No evidence was extracted for this clip."

    keep = _select_within_budget(cues, identified, max_tokens, count_tokens, with_headers)
    lines: list[str] = []
    current = None
    for cid, cue in identified:
        if cid not in keep:
            continue
        if with_headers and cue.modality != current:
            current = cue.modality
            lines.append(f"{MODALITY_TITLES[current]}:")
        lines.append(cue_line(cid, cue))
    omitted = len(identified) - len(keep)
    if omitted:
        lines.append(f"({omitted} lower-priority cues omitted for length)")
    return "\n".join(lines)


def _select_within_budget(
    cues: Sequence[Cue],
    identified: list[tuple[str, Cue]],
    max_tokens: int | None,
    count_tokens: Callable[[str], int],
    with_headers: bool,
) -> set[str]:
    if max_tokens is None:
        return {cid for cid, _ in identified}
    id_of = {id(c): cid for cid, c in identified}
    # Extractor order within each modality is the priority order.
    queues: dict[str, list[Cue]] = {}
    for cue in cues:
        if id(cue) in id_of:
            queues.setdefault(cue.modality, []).append(cue)
    budget = max_tokens - count_tokens("(99 lower-priority cues omitted for length)")
    keep: set[str] = set()
    seen_modalities: set[str] = set()
    progress = True
    # What was said goes first: it is short, every task can use it, and a budget must never drop it for the
    # hundredth AU line; the other modalities then share what is left, round-robin.
    priority = ("linguistic", *(m for m in MODALITIES if m != "linguistic"))
    while progress:
        progress = False
        for modality in priority:
            queue = queues.get(modality)
            if not queue:
                continue
            cue = queue.pop(0)
            cid = id_of[id(cue)]
            cost = count_tokens(cue_line(cid, cue))
            if with_headers and modality not in seen_modalities:
                cost += count_tokens(MODALITY_TITLES[modality] + ":")
            if cost <= budget:
                budget -= cost
                keep.add(cid)
                seen_modalities.add(modality)
                progress = True
            else:
                queues[modality] = []
    return keep
