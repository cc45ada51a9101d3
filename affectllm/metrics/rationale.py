"""Cue-level rationale metrics and evidence grounding.

A rationale (a human EMER reasoning, or a model's cited evidence) is split into *atomic cues* — one
observation each — tagged with the EMER modality it speaks about (visual, acoustic, textual, or unknown).
Predicted and reference cues are embedded with a sentence-transformers model (offline MiniLM by default) and
matched by cosine similarity:

- cue precision = mean over predicted cues of the best cosine to any reference cue; recall the converse;
  F = 2PR/(P+R); per modality (cues of that modality on both sides) and overall (all cues);
- *grounding* = the share of a rationale's cues supported by some evidence cue of the clip (best cosine at
  or above ``DEFAULT_GROUNDING_THRESHOLD``); the others are reported as hallucinated. It is a plain function
  over lists of strings because the GRPO grounding reward calls it.

The threshold is not tuned on any data set: ``calibrate_grounding_threshold`` reproduces it from hand-written
paraphrase / unrelated pairs over rendered cue lines (``CALIBRATION_CUES``); see
docs/evaluation-closed-rationale.md for the numbers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from affectllm.schema import (
    COARSE_MODALITY,
    CUE_ID_PATTERN,
    CUE_ID_PREFIX,
    Clip,
    Cue,
    RationaleItem,
    normalize_modality,
)

if TYPE_CHECKING:
    from affectllm.embeddings import Embedder

VISUAL, ACOUSTIC, TEXTUAL, UNKNOWN = "visual", "acoustic", "textual", "unknown"
#: The modalities scored separately (EMER's three channels); ``unknown`` cues only count overall.
RATIONALE_MODALITIES: tuple[str, ...] = (VISUAL, ACOUSTIC, TEXTUAL)

#: Cosine (MiniLM) at or above which an evidence cue supports a rationale cue. Chosen by
#: ``calibrate_grounding_threshold()`` on ``CALIBRATION_CUES`` (maximum balanced accuracy between paraphrase
#: and unrelated pairs, rounded to 0.05); re-run it after changing the default embedding model.
DEFAULT_GROUNDING_THRESHOLD = 0.5

_PREFIX_MODALITY = {prefix: COARSE_MODALITY[mod] for mod, prefix in CUE_ID_PREFIX.items()}
# Citation ids as the renderer assigns them (A1, F12, S3, L1); ids start at 1, so "F0" (pitch) is no id.
_ID = CUE_ID_PATTERN
_ID_RE = re.compile(rf"(?<![A-Za-z0-9_])({_ID})(?![A-Za-z0-9_])")
_BRACKETED_IDS_RE = re.compile(rf"[\[(]\s*{_ID}(?:\s*[,;/&]\s*{_ID}|\s+and\s+{_ID})*\s*[\])]")
_LEADING_ID_RE = re.compile(rf"^\s*(?:{_ID})(?:\s*[,;/&]\s*{_ID})*\s*[:.)\-–]?\s+")
_TIME_RE = re.compile(r"[\[(]\s*(?:\d+(?:\.\d+)?\s*s?\s*(?:[-–]\s*\d+(?:\.\d+)?\s*s?)?|whole clip)\s*[\])]")
_NUMERIC_PAREN_RE = re.compile(r"\s*\([^()]*\d[^()]*\)")
_BULLET_RE = re.compile(r"^\s*(?:[-*•]+|\d{1,2}[.)])\s+")
_SPACES_RE = re.compile(r"\s+")
_QUOTE_RE = re.compile(r"\"[^\"]+\"|“[^”]+”")
# A sentence ends after . ! ? (or a quotation that ends with one, whose placeholder ends in \x01).
_SENTENCE_END_RE = re.compile(r"(?<=[.!?。！？\x01])\s+(?=[A-Z0-9\"“'(\[\x00])|(?<=[。！？])")
_ABBREVIATIONS = ("Mr.", "Mrs.", "Ms.", "Dr.", "e.g.", "i.e.", "vs.", "etc.", "approx.", "St.")
_LEADING_CONJUNCTION_RE = re.compile(r"^(?:and|but|also|then|yet|or|so|plus)\s+", re.I)
# Connectives and scene-setting phrases that carry no observation on their own.
_BOILERPLATE_RE = re.compile(
    r"^(?:(?:in|from|throughout|at) (?:the|this) (?:(?:beginning|middle|end|start) of (?:the|this) )?"
    r"(?:video|clip|scene|footage)|at the same time|in addition|additionally|moreover|furthermore|"
    r"meanwhile|besides|also|however|finally|first(?:ly)?|second(?:ly)?|then)$",
    re.I,
)
# EMER reasonings end with the emotion they conclude ("Therefore, it can be inferred that his emotional state
# is sadness."). That sentence states the label, not evidence, so it is not a cue.
_CONCLUSION_RE = re.compile(
    r"^(?:therefore|thus|hence|so|in (?:summary|conclusion)|overall|to sum up|in short)\b.*"
    r"\b(?:emotion(?:al)? state|emotions?|feels?|feeling|mood|inferr?\w*|conclu\w*|deduc\w*)\b",
    re.I,
)

# Words that mark which channel a cue describes. EMER reasonings mark modality this way (facial expression,
# tone of voice, what was said); the lists hold observable-evidence vocabulary, not emotion words.
_MODALITY_PATTERNS: dict[str, re.Pattern[str]] = {
    VISUAL: re.compile(
        r"\b(?:visual(?:ly)?|face|faces|facial|expressions?|eyes?|eyebrows?|brows?|forehead|frown\w*|smil\w*|"
        r"grin\w*|mouth|lips?|teeth|tooth|jaw|chin|cheeks?|nose|nostrils?|gaze\w*|glanc\w*|star(?:e|es|ed|ing)|"
        r"looks? (?:at|down|up|away|around)|looked|looking|blink\w*|tears?|tearful|head|nod\w*|"
        r"shak(?:e|es|ing) (?:his|her|their) head|hands?|arms?|fists?|gestur\w*|posture|body|shoulders?|"
        r"lean\w*|sat|sits?|sitting|stood|stands?|standing|walk\w*|movements?|scene|background|environment|"
        r"lighting|dim|dark|room|camera|frame|appearance|AU\d+|action units?|lids?|eyelids?|wide-eyed|squint\w*|"
        r"clench\w*|pout\w*|wrinkl\w*|raiser|puller|lowerer|depressor|dimpler|stretcher|tightener)\b",
        re.I,
    ),
    ACOUSTIC: re.compile(
        r"\b(?:acoustic\w*|audio|voice[sd]?|vocal\w*|tone|tones|pitch\w*|intonation|prosod\w*|loud\w*|"
        r"volume|quiet(?:ly)?|softly|whisper\w*|shout\w*|yell\w*|scream\w*|sigh\w*|sob\w*|sniff\w*|"
        r"laugh\w*|chuckl\w*|stutter\w*|stammer\w*|hesitat\w*|paus(?:e|es|ed|ing)|breath\w*|chok\w*|"
        r"speech|pace|tempo|"
        r"(?:speech|speaking|articulation) (?:rate|speed)|tremb\w* voice|shaky voice|energy|jitter|"
        r"shimmer|hz|db|f0|syllables?|"
        r"(?:speaks?|spoke|speaking|talks?|talked|talking)\s+(?:\w+\s+)?(?:fast\w*|slow\w*|quickly|"
        r"rapidly|loudly|softly|quietly|hesitantly|calmly|sharply|weakly|firmly))\b",
        re.I,
    ),
    TEXTUAL: re.compile(
        r"\b(?:subtitles?|transcripts?|text|textual|words?|said|says|say|saying|stated?|states|mentions?|"
        r"mentioned|asks?|asked|asking|wrote|content|sentences?|phrases?|lines?|linguistic\w*|lexical|"
        r"utterances?|remarks?|replie[sd]|reply|answer(?:s|ed)?|expressed that|talk(?:s|ed)? about|"
        r"according to|question(?:s|ed)?|complain\w*|exclaim\w*|express(?:ed|es|ing)|hears?|heard|"
        r"tells?|told|talk(?:s|ed|ing)? to|chat\w*|criticiz\w*|prais\w*|conversation|dialogue|topic|phone)\b",
        re.I,
    ),
}


@dataclass(frozen=True)
class AtomicCue:
    """One observation of a rationale.

    ``text`` is what gets embedded (citation ids, time stamps and numeric read-outs removed); ``raw`` the cue as
    written (with its citation ids, which grounding resolves); ``cue_ids`` the evidence ids it cites.
    """

    text: str
    modality: str = UNKNOWN
    cue_ids: tuple[str, ...] = ()
    raw: str = ""


def clean_cue_text(text: str) -> str:
    """The words of a cue without citation ids, time stamps, bullets or numeric read-outs in parentheses.

    ``"F2 [0.4-1.8s] AU12 lip corner puller: marked (C), peak 2.31 (onset 0.4s, apex 1.0s)"`` →
    ``"AU12 lip corner puller: marked (C), peak 2.31"``. The numbers say nothing a sentence encoder can
    compare, and ids differ between the model's wording and the evidence line it cites.
    """
    text = _BULLET_RE.sub("", text)
    text = _LEADING_ID_RE.sub("", text)
    text = _BRACKETED_IDS_RE.sub("", text)
    text = _TIME_RE.sub("", text)
    text = _NUMERIC_PAREN_RE.sub("", text)
    text = _SPACES_RE.sub(" ", text).strip(" ,;:-–")
    return text


def cited_ids(text: str) -> tuple[str, ...]:
    """Evidence ids a cue cites, in order (``"[F2, A1] ..."`` → ``("F2", "A1")``)."""
    return tuple(dict.fromkeys(m.group(1) for m in _ID_RE.finditer(text)))


def tag_modality(text: str, cue_ids: Sequence[str] = ()) -> str:
    """EMER modality of one cue: from its cited ids when they agree, else from the channel words it uses.

    The channel with the most marker words wins; a tie goes to the channel mentioned first. A quoted span
    counts as a textual marker (EMER quotes the subtitle). No marker → ``"unknown"``.
    """
    from_ids = {_PREFIX_MODALITY[i[0]] for i in cue_ids if i[0] in _PREFIX_MODALITY}
    if len(from_ids) == 1:
        return from_ids.pop()
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    for modality, pattern in _MODALITY_PATTERNS.items():
        hits = [m.start() for m in pattern.finditer(text)]
        if modality == TEXTUAL:
            hits += [m.start() for m in _QUOTE_RE.finditer(text)]
        if hits:
            counts[modality] = len(hits)
            first[modality] = min(hits)
    if not counts:
        return UNKNOWN
    return min(counts, key=lambda m: (-counts[m], first[m]))


def _coarse(modality: str | None) -> str | None:
    if not modality:
        return None
    key = modality.strip().lower()
    if key in (VISUAL, ACOUSTIC, TEXTUAL, UNKNOWN):
        return key
    try:
        return COARSE_MODALITY[normalize_modality(key)]
    except ValueError:
        return None


def _make_cue(text: str, modality: str | None = None, cue_id: str | None = None) -> AtomicCue | None:
    raw = text.strip()
    ids = cited_ids(raw)
    if cue_id:
        cue_id = cue_id.strip().strip("[]()").upper()
        if cue_id not in ids:
            ids = (cue_id, *ids)
            raw = f"[{cue_id}] {raw}".strip()
    clean = clean_cue_text(raw)
    if not clean and not ids:
        return None
    return AtomicCue(clean, _coarse(modality) or tag_modality(raw, ids), ids, raw)


def _protect(text: str) -> tuple[str, list[str]]:
    """Replace quoted spans and abbreviations by placeholders so splitting never cuts inside them."""
    saved: list[str] = []

    def keep(match: re.Match[str]) -> str:
        saved.append(match.group(0))
        # A quotation that ends a sentence ('... "Can't I?" Therefore ...') must still end it.
        end = "\x01" if re.search(r"[.!?。！？][\"”]$", match.group(0)) else "\x02"
        return f"\x00{len(saved) - 1}{end}"

    text = _QUOTE_RE.sub(keep, text)
    for abbreviation in _ABBREVIATIONS:
        text = re.sub(re.escape(abbreviation), keep, text)
    text = re.sub(r"\([^()]*\)", keep, text)  # parentheses hold one thought
    return text, saved


def _restore(text: str, saved: list[str]) -> str:
    # Placeholders can nest (a quote inside parentheses), so restore until none is left.
    while "\x00" in text:
        text = re.sub(r"\x00(\d+)[\x01\x02]", lambda m: saved[int(m.group(1))], text)
    return text


def _split_prose(text: str, drop_conclusions: bool) -> list[str]:
    protected, saved = _protect(text)
    out: list[str] = []
    for sentence in _SENTENCE_END_RE.split(protected):
        sentence = sentence.strip()
        if not sentence:
            continue
        if drop_conclusions and _CONCLUSION_RE.search(_restore(sentence, saved)):
            continue
        clauses: list[str] = []
        for piece in re.split(r"[,;:，；]\s*", sentence):
            piece = _LEADING_CONJUNCTION_RE.sub("", piece.strip()).strip(" .!?。")
            if not piece or _BOILERPLATE_RE.match(_restore(piece, saved)):
                continue
            # A clause of one or two words ("sniffed", "and frowned") is a continuation, not a thought.
            if clauses and len(piece.split()) < 3:
                clauses[-1] = f"{clauses[-1]}, {piece}"
            else:
                clauses.append(piece)
        # A short opening clause joins the next one instead ("Although tense, she smiles").
        if len(clauses) > 1 and len(clauses[0].split()) < 3:
            clauses[1] = f"{clauses[0]}, {clauses[1]}"
            clauses.pop(0)
        out.extend(_restore(c, saved) for c in clauses)
    return out


def split_cues(value: Any, drop_conclusions: bool = True) -> list[AtomicCue]:
    """Split a rationale into atomic cues, each tagged with its modality.

    ``value`` may be:

    - prose (an EMER reasoning): split into sentences, then clauses at commas/semicolons outside quotes and
      parentheses; clauses under three words join their neighbour; "In the video" is dropped, and with
      ``drop_conclusions`` so is the closing sentence that only states the inferred emotion;
    - text with one cue per line (bullets, ``"[F2] ..."``, ``"F2 [0.4-1.8s] ..."`` rendered evidence): each
      line is one cue;
    - a JSON array text, or a list of strings, ``RationaleItem`` s or dicts ``{"cue", "modality", "cue_id"}``
      (our answer contract): each element is one cue; a given modality wins over tagging;
    - a ``Prediction``-like dict with a ``"rationale"`` key.
    """
    if value is None:
        return []
    if isinstance(value, Mapping) and "rationale" in value:
        return split_cues(value["rationale"], drop_conclusions)
    if isinstance(value, RationaleItem):
        value = [value]
    if isinstance(value, Mapping):
        value = [value]
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            try:
                parsed = json.loads(stripped)
            except json.JSONDecodeError:
                parsed = None
            if isinstance(parsed, list):
                return split_cues(parsed, drop_conclusions)
        return _split_text(stripped, drop_conclusions)
    if isinstance(value, Iterable):
        cues: list[AtomicCue] = []
        for item in value:
            cue: AtomicCue | None
            if isinstance(item, AtomicCue):
                cue = item
            elif isinstance(item, RationaleItem):
                cue = _make_cue(item.cue or "", item.modality, item.cue_id)
            elif isinstance(item, Mapping):
                text = item.get("cue") or item.get("text") or item.get("evidence") or ""
                cue_id = item.get("cue_id") or item.get("id")
                cue = _make_cue(str(text), item.get("modality"), None if cue_id is None else str(cue_id))
            elif isinstance(item, str):
                cue = _make_cue(item)
            else:
                raise TypeError(f"cannot read a rationale cue from {type(item).__name__}")
            if cue is not None:
                cues.append(cue)
        return cues
    raise TypeError(f"cannot read a rationale from {type(value).__name__}")


def _split_text(text: str, drop_conclusions: bool) -> list[AtomicCue]:
    lines = [line for line in text.splitlines() if line.strip()]
    structured = len(lines) > 1 or (lines and _is_cue_line(lines[0]))
    pieces: list[str] = []
    for line in lines:
        if structured and _is_cue_line(line):
            pieces.append(line)
        else:
            pieces.extend(_split_prose(line, drop_conclusions))
    return [cue for cue in (_make_cue(p) for p in pieces) if cue is not None]


def _is_cue_line(line: str) -> bool:
    return bool(_BULLET_RE.match(line) or _LEADING_ID_RE.match(line) or re.match(rf"^\s*\[{_ID}", line))


# --------------------------------------------------------------------------------------------------------
# Cue precision / recall
# --------------------------------------------------------------------------------------------------------


def _embedder(embedder: Embedder | None) -> Embedder:
    if embedder is not None:
        return embedder
    from affectllm.embeddings import get_embedder

    return get_embedder()


def _prf(sim: np.ndarray, threshold: float) -> dict[str, float]:
    """P/R/F (soft: best cosine; hard: share of cues whose best cosine reaches ``threshold``)."""
    if sim.shape[0] == 0 or sim.shape[1] == 0:
        return {"p": 0.0, "r": 0.0, "f": 0.0, "p_hard": 0.0, "r_hard": 0.0, "f_hard": 0.0}
    # Negative cosines carry no "less similar than unrelated" meaning for MiniLM; clip so scores stay in [0, 1].
    best_pred = np.clip(sim.max(axis=1), 0.0, 1.0)
    best_ref = np.clip(sim.max(axis=0), 0.0, 1.0)
    p, r = float(best_pred.mean()), float(best_ref.mean())
    ph, rh = float((best_pred >= threshold).mean()), float((best_ref >= threshold).mean())
    return {"p": p, "r": r, "f": _f(p, r), "p_hard": ph, "r_hard": rh, "f_hard": _f(ph, rh)}


def _f(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def sample_rationale_scores(
    *,
    predictions: Sequence[AtomicCue],
    references: Sequence[AtomicCue],
    embedder: Embedder | None = None,
    threshold: float = DEFAULT_GROUNDING_THRESHOLD,
) -> dict[str, Any]:
    """Scores of one sample: ``{"overall": {p, r, f, ...}, "visual": ... | None, ...}``.

    A modality is scored (not ``None``) when the reference has cues of it; a prediction with none scores 0.
    """
    pred_cues, ref_cues = predictions, references
    emb = _embedder(embedder)
    pred_vec = emb.encode([c.text for c in pred_cues])
    ref_vec = emb.encode([c.text for c in ref_cues])
    sim = pred_vec @ ref_vec.T
    out: dict[str, Any] = {"overall": _prf(sim, threshold), "n_pred": len(pred_cues), "n_ref": len(ref_cues)}
    for modality in RATIONALE_MODALITIES:
        ref_rows = [i for i, c in enumerate(ref_cues) if c.modality == modality]
        pred_rows = [i for i, c in enumerate(pred_cues) if c.modality == modality]
        out[modality] = _prf(sim[np.ix_(pred_rows, ref_rows)], threshold) if ref_rows else None
    return out


def rationale_scores(
    *,
    predictions: Mapping[str, Any],
    references: Mapping[str, Any],
    embedder: Embedder | None = None,
    threshold: float = DEFAULT_GROUNDING_THRESHOLD,
    drop_conclusions: bool = True,
    per_sample: bool = True,
) -> dict[str, Any]:
    """Cue-level P/R/F of predicted rationales against reference rationales, per modality and overall.

    ``pred`` and ``ref`` map sample names to rationales in any form ``split_cues`` reads. Corpus P and R are
    means over samples, F is the F of those means (``f_mean`` is the mean per-sample F); ``*_hard`` count a cue
    as matched when its best cosine reaches ``threshold``. A reference name without prediction scores 0 and is
    listed in ``missing_predictions``; a reference that splits into no cue is skipped (``skipped``).
    """
    pred, ref = predictions, references
    emb = _embedder(embedder)
    names = list(ref)
    missing = [n for n in names if n not in pred]
    split_ref = {n: split_cues(ref[n], drop_conclusions) for n in names}
    split_pred = {n: split_cues(pred.get(n), drop_conclusions) for n in names}
    # One encode call for the whole corpus: batching is what makes this fast.
    emb.encode(list({c.text for cues in (*split_ref.values(), *split_pred.values()) for c in cues}))

    samples: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    for name in names:
        if not split_ref[name]:
            skipped.append(name)
            continue
        samples[name] = sample_rationale_scores(
            predictions=split_pred[name], references=split_ref[name], embedder=emb, threshold=threshold
        )

    overall = _corpus([s["overall"] for s in samples.values()])
    # The headline numbers also sit at the top level, so reports can name them without a path.
    result: dict[str, Any] = {"p": overall["p"], "r": overall["r"], "f": overall["f"], "overall": overall}
    for modality in RATIONALE_MODALITIES:
        result[modality] = _corpus([s[modality] for s in samples.values() if s[modality] is not None])
    result.update(
        {
            "n": len(samples),
            "threshold": threshold,
            "embedding_model": getattr(emb, "model_name", None),
            "mean_pred_cues": _mean([s["n_pred"] for s in samples.values()]),
            "mean_ref_cues": _mean([s["n_ref"] for s in samples.values()]),
            "missing_predictions": missing,
            "extra_predictions": sum(1 for n in pred if n not in ref),
            "skipped": skipped,
        }
    )
    if per_sample:
        result["samples"] = samples
    return result


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _corpus(rows: Sequence[dict[str, float]]) -> dict[str, Any]:
    if not rows:
        return {"p": None, "r": None, "f": None, "f_mean": None, "p_hard": None, "r_hard": None,
                "f_hard": None, "n": 0}  # fmt: skip
    p, r = _mean([x["p"] for x in rows]), _mean([x["r"] for x in rows])
    ph, rh = _mean([x["p_hard"] for x in rows]), _mean([x["r_hard"] for x in rows])
    return {
        "p": p,
        "r": r,
        "f": _f(p, r),
        "f_mean": _mean([x["f"] for x in rows]),
        "p_hard": ph,
        "r_hard": rh,
        "f_hard": _f(ph, rh),
        "n": len(rows),
    }


# --------------------------------------------------------------------------------------------------------
# Grounding
# --------------------------------------------------------------------------------------------------------


@dataclass
class GroundingResult:
    """``score`` = share of rationale cues supported by the evidence (0.0 for an empty rationale).

    ``best[i]`` is the best cosine of rationale cue *i* to the evidence it was compared with (0.0 when it cites
    an id the evidence does not have); ``supported`` / ``hallucinated`` hold the rationale cues as given.
    """

    score: float
    supported: list[str] = field(default_factory=list)
    hallucinated: list[str] = field(default_factory=list)
    best: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "supported": list(self.supported),
            "hallucinated": list(self.hallucinated),
            "best": [round(b, 4) for b in self.best],
        }


def _evidence_index(evidence_cues: Sequence[str]) -> tuple[list[str], dict[str, int]]:
    """Cleaned evidence texts, and which row each evidence id (``F2`` in ``"F2 [0.4-1.8s] ..."``) is."""
    texts: list[str] = []
    ids: dict[str, int] = {}
    for row, line in enumerate(evidence_cues):
        m = re.match(rf"^\s*\[?({_ID})\]?(?![A-Za-z0-9_])", line)
        if m:
            ids.setdefault(m.group(1), row)
        texts.append(clean_cue_text(line) or line.strip())
    return texts, ids


def grounding(
    *,
    predictions: Sequence[str],
    references: Sequence[str],
    threshold: float = DEFAULT_GROUNDING_THRESHOLD,
    embedder: Embedder | None = None,
) -> GroundingResult:
    """How much of a rationale the clip's evidence supports.

    ``rationale_cues``: the rationale's cues as strings (a cue may cite evidence ids, ``"[F2] lips pulled
    up"``). ``evidence_cues``: the clip's rendered evidence lines (``cue_line`` / ``evidence_lines``; lines
    without an id work too, they just cannot be cited).

    - A cue that cites ids is checked against the cited evidence only: it is supported when every cited id
      exists and its own words (ids removed) reach ``threshold`` against one of the cited lines; a bare
      citation ("[F2]") takes the cited line as its text and is supported. Citing an id that does not exist is
      a hallucination, whatever the words say.
    - A cue without ids is supported when its best cosine to any evidence line reaches ``threshold``.
    """
    rationale_cues, evidence_cues = predictions, references
    if not rationale_cues:
        return GroundingResult(0.0)
    emb = _embedder(embedder)
    texts, ids = _evidence_index(evidence_cues)
    evidence_vec = emb.encode(texts)
    cue_texts = [clean_cue_text(c) for c in rationale_cues]
    distinct = list(dict.fromkeys(t for t in cue_texts if t))
    cue_vec = emb.encode(distinct)
    row_of = {t: i for i, t in enumerate(distinct)}

    supported: list[str] = []
    hallucinated: list[str] = []
    best: list[float] = []
    for raw, text in zip(rationale_cues, cue_texts, strict=True):
        cites = cited_ids(raw)
        if cites:
            rows = [ids.get(c) for c in cites]
            if any(r is None for r in rows):
                score = 0.0
            elif not text:
                score = 1.0  # the cue *is* the cited evidence line
            else:
                score = float((evidence_vec[rows] @ cue_vec[row_of[text]]).max())
        elif not text or len(texts) == 0:
            score = 0.0
        else:
            score = float((evidence_vec @ cue_vec[row_of[text]]).max())
        best.append(score)
        (supported if score >= threshold else hallucinated).append(raw)
    return GroundingResult(len(supported) / len(rationale_cues), supported, hallucinated, best)


def evidence_lines(evidence: Clip | Sequence[Cue] | Sequence[str] | str) -> list[str]:
    """A clip's evidence as rendered lines with citation ids, the form ``grounding`` takes.

    Accepts a ``Clip``, a list of ``Cue`` (ids assigned as the prompt shows them), a list of lines, or a
    rendered block (modality headers are skipped).
    """
    from affectllm.schema import Evidence
    from affectllm.textualize.render import MODALITY_TITLES

    if isinstance(evidence, Clip):
        return [e.text for e in evidence.evidence()]
    if isinstance(evidence, str):
        headers = {f"{t}:" for t in MODALITY_TITLES.values()}
        return [
            line.strip()
            for line in evidence.splitlines()
            if line.strip()
            and line.strip() not in headers
            and not line.strip().endswith("omitted for length)")
            and not line.strip().startswith("No evidence was extracted")
        ]
    items = list(evidence)
    if items and all(isinstance(c, Cue) for c in items):
        return [e.text for e in Clip("", items).evidence()]
    return [c.text if isinstance(c, Evidence) else str(c) for c in items]


def grounding_scores(
    *,
    predictions: Mapping[str, Any],
    references: Mapping[str, Any],
    threshold: float = DEFAULT_GROUNDING_THRESHOLD,
    embedder: Embedder | None = None,
    per_sample: bool = True,
) -> dict[str, Any]:
    """Corpus grounding: ``pred`` maps names to rationales (any form ``split_cues`` reads), ``evidence`` maps
    names to a ``Clip``, cues or rendered lines. Samples without evidence are listed in ``missing_evidence``."""
    pred, evidence = predictions, references
    emb = _embedder(embedder)
    samples: dict[str, dict[str, Any]] = {}
    missing = [n for n in pred if n not in evidence]
    for name, rationale in pred.items():
        if name not in evidence:
            continue
        cues = [c.raw or c.text for c in split_cues(rationale)]
        samples[name] = grounding(
            predictions=cues, references=evidence_lines(evidence[name]), threshold=threshold, embedder=emb
        ).to_dict()
    scores = [s["score"] for s in samples.values()]
    out: dict[str, Any] = {
        "grounding": _mean(scores),
        "n": len(samples),
        "threshold": threshold,
        "mean_rationale_cues": _mean(
            [len(s["supported"]) + len(s["hallucinated"]) for s in samples.values()]
        ),
        "hallucinated_cues": sum(len(s["hallucinated"]) for s in samples.values()),
        "empty_rationales": sum(1 for s in samples.values() if not s["supported"] and not s["hallucinated"]),
        "missing_evidence": missing,
    }
    if per_sample:
        out["samples"] = samples
    return out


# --------------------------------------------------------------------------------------------------------
# Threshold calibration (reproducible; no evaluation data involved)
# --------------------------------------------------------------------------------------------------------

#: Evidence cues in the form the textualizers emit, each with two ways a rationale might state it. Written
#: for calibration only, from the cue vocabulary (prosody, FACS action units, head/gaze, scene captions,
#: transcript), never from an evaluation set.
CALIBRATION_CUES: tuple[tuple[str, Cue, tuple[str, ...]], ...] = (
    (
        "pitch",
        Cue(
            "acoustic",
            "pitch",
            245.0,
            "Hz",
            "high",
            detail="high and rising (mean 245 Hz, +1.8 SD vs speaker)",
        ),
        ("her voice is high-pitched and rising", "the pitch goes up sharply"),
    ),
    (
        "pitch",
        Cue("acoustic", "pitch", 98.0, "Hz", "low", detail="low and flat (mean 98 Hz, -1.2 SD vs speaker)"),
        ("he speaks in a low, monotone voice", "flat, low pitch"),
    ),
    (
        "loudness",
        Cue("acoustic", "loudness", 0.9, None, "high", detail="loud (+2.1 SD vs speaker)"),
        ("he is shouting", "the speaker raises his voice and speaks loudly"),
    ),
    (
        "loudness",
        Cue("acoustic", "loudness", 0.1, None, "low", detail="quiet (-1.5 SD vs speaker)"),
        ("she speaks very softly", "a quiet, weak voice"),
    ),
    (
        "speech rate",
        Cue("acoustic", "speech rate", 6.1, "syll/s", "fast", detail="fast (6.1 syllables/s)"),
        ("he talks very fast", "rapid speech"),
    ),
    (
        "pauses",
        Cue("acoustic", "pauses", 4, None, "many", detail="many long pauses (4 pauses over 0.5 s)"),
        ("she hesitates with long pauses", "the speech is broken up by long silences"),
    ),
    (
        "voice quality",
        Cue(
            "acoustic",
            "voice quality",
            "trembling",
            None,
            "high jitter",
            detail="trembling, unsteady voice (high jitter)",
        ),
        ("his voice is shaking", "a trembling voice"),
    ),
    (
        "laughter",
        Cue("acoustic", "laughter", "present", start=1.2, end=2.0, detail="laughter"),
        ("she laughs", "there is laughter in the audio"),
    ),
    (
        "smile",
        Cue(
            "facial",
            "AU12 lip corner puller",
            2.31,
            "intensity 0-5",
            "C",
            0.4,
            1.8,
            detail="marked (C), peak 2.31 (onset 0.4s, apex 1.0s, offset 1.8s)",
        ),
        ("the lip corners are pulled up", "AU12 is strongly active"),
    ),
    (
        "smile",
        Cue(
            "facial",
            "AU06+AU12",
            1.4,
            "s",
            start=0.4,
            end=1.8,
            detail="cheeks raised and lids tightened with lip corners pulled up, 1.4 s",
        ),
        ("a genuine smile with raised cheeks", "cheeks raised while the lip corners are pulled up"),
    ),
    (
        "brows",
        Cue(
            "facial",
            "AU04 brow lowerer",
            2.8,
            "intensity 0-5",
            "C",
            0.2,
            2.5,
            detail="marked (C), peak 2.80 (onset 0.2s, apex 1.1s, offset 2.5s)",
        ),
        ("he lowers his brows", "AU4 brow lowerer is active"),
    ),
    (
        "brows",
        Cue(
            "facial",
            "AU01+AU04+AU15",
            1.1,
            "s",
            start=0.5,
            end=1.6,
            detail="inner brows raised and drawn together with lip corners pulled down, 1.1 s",
        ),
        (
            "inner brows raised and drawn together while the mouth corners turn down",
            "the corners of her mouth are pulled down and her inner brows are raised",
        ),
    ),
    (
        "brows",
        Cue(
            "facial",
            "AU01+AU02+AU05+AU26",
            0.6,
            "s",
            start=0.3,
            end=0.9,
            detail="brows raised, upper lids raised and jaw dropped together, 0.6 s",
        ),
        (
            "her eyebrows go up, her eyes widen and her jaw drops",
            "raised brows, widened eyes and a dropped jaw",
        ),
    ),
    (
        "nose",
        Cue(
            "facial",
            "AU09 nose wrinkler",
            1.9,
            "intensity 0-5",
            "B",
            1.0,
            1.6,
            detail="slight (B), peak 1.90 (onset 1.0s, apex 1.3s, offset 1.6s)",
        ),
        ("he wrinkles his nose", "a nose wrinkle (AU9)"),
    ),
    (
        "blink",
        Cue("facial", "blink rate", 41.0, "per min", "high", detail="high (14 blinks in 20.5 s, 41/min)"),
        ("she blinks a lot", "frequent blinking"),
    ),
    (
        "head movement",
        Cue(
            "facial",
            "head movement",
            9.2,
            "deg SD",
            "large",
            detail="large (SD 9.2°; mean pitch -12°, yaw +3°)",
        ),
        ("he moves his head a lot", "large head movements"),
    ),
    (
        "gaze",
        Cue(
            "facial",
            "gaze toward camera",
            0.12,
            "fraction",
            "rarely",
            detail="rarely toward the camera (12% of tracked time)",
        ),
        ("she avoids looking at the camera", "his gaze is mostly averted"),
    ),
    (
        "head pose",
        Cue("facial", "head pose", "down", start=2.0, end=3.5, detail="head tilted down, 1.5 s"),
        ("he looks down", "her head is lowered"),
    ),
    (
        "scene: dark room",
        Cue("visual-scene", "caption", "a man sitting alone in a dark room", start=0.0),
        ("the room is dark and he is alone", "a man sits by himself in a dimly lit room"),
    ),
    (
        "scene: argument",
        Cue("visual-scene", "caption", "two people arguing at a dinner table", start=0.0),
        ("two people are having an argument at the table", "an argument during dinner"),
    ),
    (
        "scene: cake",
        Cue("visual-scene", "caption", "a woman holding a birthday cake with candles", start=0.0),
        ("she holds a birthday cake", "there is a cake with lit candles"),
    ),
    (
        "speech: disbelief",
        Cue("linguistic", "transcript", "I can't believe you did this to me", start=0.0, end=2.4),
        (
            "she says she can't believe he did this to her",
            "the words express disbelief at what he did to her",
        ),
    ),
    (
        "speech: victory",
        Cue("linguistic", "transcript", "We won! We actually won the final!", start=0.0, end=2.0),
        ("he says they won the final", "the speaker announces their victory"),
    ),
    (
        "speech: apology",
        Cue("linguistic", "transcript", "I'm sorry, I didn't mean to hurt you", start=0.0, end=2.2),
        ("he apologises for hurting her", "she says sorry for causing pain"),
    ),
)


def calibrate_grounding_threshold(embedder: Embedder | None = None, step: float = 0.05) -> dict[str, Any]:
    """Re-derive the grounding threshold from ``CALIBRATION_CUES``, the way ``grounding`` decides.

    The evidence is every calibration cue rendered with ``cue_line``. For each paraphrase, the *supported*
    score is its best cosine to the lines of its own topic, the *unsupported* score its best cosine to the
    lines of all other topics (what grounding would see if the clip lacked that evidence). The threshold is
    the multiple of ``step`` with the highest balanced accuracy (mean of the true-positive and true-negative
    rates); ties go to the higher threshold (stricter grounding). Also reported: the plain pairwise cosines,
    and ``same_topic_other_cue`` (a paraphrase against a *different* cue of its topic, e.g. "low pitch" vs a
    high-pitch line) — an embedding cannot tell those apart, so grounding checks the topic, not the polarity.
    """
    from affectllm.textualize.render import assign_ids, cue_line

    emb = _embedder(embedder)
    topics = [topic for topic, _, _ in CALIBRATION_CUES]
    cues = [cue for _, cue, _ in CALIBRATION_CUES]
    line_of = {id(cue): cue_line(cid, cue) for cid, cue in assign_ids(cues)}
    lines = [line_of[id(cue)] for cue in cues]
    line_vec = emb.encode([clean_cue_text(line) for line in lines])
    topic_arr = np.array(topics)

    supported, unsupported, pairwise_pos, same_topic = [], [], [], []
    rows: list[dict[str, Any]] = []
    for i, (topic, _, paraphrases) in enumerate(CALIBRATION_CUES):
        sims = emb.encode(list(paraphrases)) @ line_vec.T
        own = topic_arr == topic
        for j, text in enumerate(paraphrases):
            supported.append(float(sims[j][own].max()))
            unsupported.append(float(sims[j][~own].max()))
            pairwise_pos.append(float(sims[j, i]))
            same_topic.extend(float(sims[j, k]) for k in np.flatnonzero(own) if k != i)
            rows.append(
                {
                    "evidence": lines[i],
                    "paraphrase": text,
                    "cosine": round(float(sims[j, i]), 4),
                    "best_other_topic": round(float(sims[j][~own].max()), 4),
                }
            )
    pos, neg = np.array(supported), np.array(unsupported)
    best: tuple[float, float] = (-1.0, 0.0)
    for threshold in np.round(np.arange(step, 1.0, step), 4):
        balanced = ((pos >= threshold).mean() + (neg < threshold).mean()) / 2
        if balanced >= best[0]:
            best = (float(balanced), float(threshold))
    threshold = best[1]
    return {
        "threshold": threshold,
        "balanced_accuracy": best[0],
        "true_positive_rate": float((pos >= threshold).mean()),
        "false_positive_rate": float((neg >= threshold).mean()),
        "n_paraphrases": len(pos),
        "n_evidence_lines": len(lines),
        "supported_best_cosine": _summary(pos),
        "unsupported_best_cosine": _summary(neg),
        "pairwise_own_cue_cosine": _summary(np.array(pairwise_pos)),
        "same_topic_other_cue_cosine": _summary(np.array(same_topic)),
        "embedding_model": getattr(emb, "model_name", None),
        "pairs": rows,
    }


def _summary(values: np.ndarray) -> dict[str, float]:
    return {
        "mean": round(float(values.mean()), 4),
        "min": round(float(values.min()), 4),
        "max": round(float(values.max()), 4),
        "n": int(values.size),
    }


if __name__ == "__main__":  # python -m affectllm.metrics.rationale: print the calibration
    report = calibrate_grounding_threshold()
    print(json.dumps({k: v for k, v in report.items() if k != "pairs"}, indent=2))
    for row in report["pairs"]:
        cosines = f"{row['cosine']:.3f} (other topics {row['best_other_topic']:.3f})"
        print(f"{cosines}  {row['paraphrase']!r}  ~  {row['evidence']}")
