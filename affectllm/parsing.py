"""Model text → ``Prediction``: the answer contract's reader. Never raises on model output.

The contract (docs/prompts.md) is ``[<think>…</think>]<answer>{"emotions": [...], "rationale": [...],
"confidence": x}</answer>``. Small models break it in predictable ways, so the parser recovers, in order:

1. the first ``<answer>`` block (a base model often goes on to invent further few-shot turns; those are not its
   answer), closed or cut off by a stop string / the token limit;
2. a JSON object inside it (or anywhere, or in a markdown fence), repaired when needed: trailing commas, single
   quotes, Python literals, unquoted keys, a truncated tail;
3. failing JSON, plain text: ``Emotions: a, b`` lines, bulleted or numbered lists under an emotions heading,
   evidence ids cited as ``[F2]``, and for a closed label set, the first label named in the text.

``format_ok`` is true only when the answer followed the contract without repair; ``errors`` lists what was
repaired, dropped or missing, so rewards and reports can tell a malformed answer from a wrong one.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Sequence
from typing import Any

from affectllm.normalize import snap_label
from affectllm.schema import CUE_ID_PATTERN, Clip, Cue, Prediction, RationaleItem, normalize_modality
from affectllm.textualize.render import cue_line, format_time

MAX_EMOTIONS = 12
MAX_EMOTION_WORDS = 4
MAX_RATIONALE = 32
# Model text beyond this is ignored: a runaway generation should not make parsing slow.
MAX_CHARS = 200_000

_THINK_RE = re.compile(r"<think>(.*?)(?:</think>|(?=<answer>)|\Z)", re.S | re.I)
_ANSWER_OPEN_RE = re.compile(r"<\s*answer\s*>", re.I)
_ANSWER_CLOSE_RE = re.compile(r"<\s*/\s*answer\s*>", re.I)
# Where a chat turn ends in common templates: anything after it is the model inventing the next turn.
_TURN_END_RE = re.compile(
    r"<end_of_turn>|<start_of_turn>|<\|im_end\|>|<\|im_start\|>|<\|eot_id\|>|<\|end\|>|</s>|<eos>|\n### (?:User|Instructions)\b"
)
_EMPTY_FENCE_RE = re.compile(r"```\w*\s*```")
_TAG_RE = re.compile(r"</?\s*(?:think|answer)\s*>", re.I)
_FENCE_RE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)(?:```|\Z)", re.S)
_CUE_ID_RE = re.compile(rf"(?<![A-Za-z0-9])(?:{CUE_ID_PATTERN})(?![A-Za-z0-9])")
_BRACKET_ID_RE = re.compile(rf"[\[(]\s*((?:{CUE_ID_PATTERN})(?:\s*[,;/]\s*(?:{CUE_ID_PATTERN}))*)\s*[\])]")
_EMOTION_LINE_RE = re.compile(
    r"^\W*(?:final\s+)?(?:predicted\s+)?(?:emotion(?:al)?\s+|emotion-)?(emotions?|labels?|feelings?|states?|answer)\W{0,3}\s*"
    r"(?:\([^)]*\))?\s*[:=\-–]\s*(.*)$",
    re.I,
)
_LIST_ITEM_RE = re.compile(r"^\s*(?:[-*•]|\d{1,2}[.)])\s+(.+?)\s*$")
_CONF_RE = re.compile(r"confidence\W{0,4}(\d*\.?\d+)\s*(%?)", re.I)
_EMOTION_KEYS = ("emotions", "emotion", "labels", "label", "emotion_labels", "feelings", "answer")
_RATIONALE_KEYS = ("rationale", "evidence", "reasons", "cues", "reasoning")


# ------------------------------------------------------------------------------------------------- helpers


def _cue_table(clip: Clip | Sequence[Cue] | None) -> dict[str, tuple[str, Cue]]:
    if clip is None:
        return {}
    # The clip's own evidence list: the same ids the prompt showed (what was said included, as L1).
    clip = clip if isinstance(clip, Clip) else Clip("", list(clip))
    return {e.id.upper(): (e.id, e.cue) for e in clip.evidence()}


class _StringScanner:
    """Character-by-character state of a JSON-ish scan: inside a quoted string (with backslash escapes) or not.

    ``single_quotes`` also treats ``'`` as a delimiter (Python-style dicts), but only at a token boundary: an
    apostrophe inside a word ("don't") would otherwise open a string that never closes.
    """

    def __init__(self, single_quotes: bool) -> None:
        self.single_quotes = single_quotes
        self.quote: str | None = None
        self._escaped = False

    def outside(self, ch: str, prev: str = " ") -> bool:
        """Feed one character; True when it is structural (outside strings and not a quote delimiter)."""
        if self.quote:
            if self._escaped:
                self._escaped = False
            elif ch == "\\":
                self._escaped = True
            elif ch == self.quote:
                self.quote = None
            return False
        if ch == '"' or (ch == "'" and self.single_quotes and not prev.isalnum()):
            self.quote = ch
            return False
        return True


def _balanced_object(text: str, start: int) -> tuple[str, bool]:
    """The JSON-ish object starting at ``text[start] == "{"``: (text, closed). String-aware brace matching,
    so braces inside quoted cue text do not end it early."""
    depth = 0
    strings = _StringScanner(single_quotes=True)
    for i in range(start, len(text)):
        ch = text[i]
        if not strings.outside(ch, text[i - 1] if i > start else " "):
            continue
        if ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return text[start : i + 1], True
    return text[start:], False


def _close_truncated(fragment: str) -> str:
    """Close the strings, lists and objects a cut-off JSON fragment left open."""
    stack: list[str] = []
    strings = _StringScanner(single_quotes=False)
    for ch in fragment:
        if not strings.outside(ch):
            continue
        if ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]" and stack:
            stack.pop()
    out = fragment
    if strings.quote:
        out += strings.quote
    out = re.sub(r"[,:\s]+$", "", out)
    # A dangling key ("...", "cue") has no value: drop it.
    out = re.sub(r',\s*"[^"]*"$', "", out)
    return out + "".join(reversed(stack))


def _repair_json(fragment: str) -> str:
    s = fragment.strip()
    s = re.sub(r",\s*([}\]])", r"\1", s)  # trailing commas
    s = re.sub(r"\bTrue\b", "true", s)
    s = re.sub(r"\bFalse\b", "false", s)
    s = re.sub(r"\bNone\b", "null", s)
    s = re.sub(r"([{,]\s*)([A-Za-z_][A-Za-z0-9_]*)\s*:", r'\1"\2":', s)  # unquoted keys
    return s


def _loads_object(fragment: str, errors: list[str]) -> tuple[dict[str, Any] | list[Any] | None, bool]:
    """(parsed value, strict) — strict is False when any repair was needed."""
    try:
        value = json.loads(fragment)
        if isinstance(value, (dict, list)):
            return value, True
    except (ValueError, RecursionError):
        pass
    repaired = _repair_json(fragment)
    for candidate in (repaired, _close_truncated(repaired)):
        try:
            value = json.loads(candidate)
            if isinstance(value, (dict, list)):
                errors.append("repaired malformed JSON")
                return value, False
        except (ValueError, RecursionError):
            pass
        try:
            # Single-quoted, Python-literal dicts. literal_eval evaluates literals only, never code.
            value = ast.literal_eval(
                candidate.replace("true", "True").replace("false", "False").replace("null", "None")
            )
            if isinstance(value, (dict, list)):
                errors.append("repaired Python-style JSON")
                return value, False
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass
    return None, False


def _find_object(text: str, errors: list[str]) -> tuple[dict[str, Any] | None, bool, str]:
    """The first JSON object in ``text`` that looks like an answer: (object, strict, the text it spans)."""
    candidates: list[str] = [m.group(1) for m in _FENCE_RE.finditer(text)]
    candidates.append(text)
    for chunk in candidates:
        pos = chunk.find("{")
        tries = 0
        while pos != -1 and tries < 8:
            tries += 1
            fragment, closed = _balanced_object(chunk, pos)
            value, strict = _loads_object(fragment, errors)
            if isinstance(value, dict) and _has_answer_key(value):
                if not closed:
                    errors.append("JSON object was cut off")
                return value, strict and closed and chunk is text, fragment
            pos = chunk.find("{", pos + 1)
    # A bare JSON list of emotions: ["happy", "relieved"].
    m = re.search(r"\[[^\[\]]{0,2000}\]", text)
    if m:
        value, _ = _loads_object(m.group(0), [])
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            errors.append("answer was a bare list, not the contract's object")
            return {"emotions": value}, False, m.group(0)
    return None, False, ""


def _has_answer_key(obj: dict[str, Any]) -> bool:
    keys = {str(k).lower() for k in obj}
    return bool(keys & set(_EMOTION_KEYS) or keys & set(_RATIONALE_KEYS))


def _get(obj: dict[str, Any], keys: Sequence[str]) -> Any:
    lowered = {str(k).lower(): v for k, v in obj.items()}
    for key in keys:
        if key in lowered:
            return lowered[key]
    return None


_STRIP_CHARS = " \t\r\n\"'`*_.,;:!?()[]{}<>"


def _clean_emotion(word: str) -> str:
    w = re.sub(r"\s+", " ", str(word)).strip(_STRIP_CHARS).lower()
    w = re.sub(r"^(?:and|or)\s+", "", w)
    # A degenerate repeat ("happy happy happy") is one word.
    tokens = w.split(" ")
    collapsed = [t for i, t in enumerate(tokens) if i == 0 or t != tokens[i - 1]]
    return " ".join(collapsed).strip(_STRIP_CHARS)


def _split_emotions(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [p for p in re.split(r"[,;/|\n]|\band\b", value) if p.strip()]
    if isinstance(value, dict):
        return [str(k) for k in value]  # {"happy": 0.8, ...}
    if isinstance(value, (list, tuple)):
        out: list[str] = []
        for item in value:
            if isinstance(item, dict):
                v = _get(item, ("emotion", "label", "name", "word"))
                if v is not None:
                    out.append(str(v))
            elif item is not None and not isinstance(item, (list, tuple)):
                out.extend(_split_emotions(str(item)))
        return out
    return [str(value)]


def _normalize_emotions(words: Sequence[str], errors: list[str]) -> list[str]:
    out: list[str] = []
    for raw in words:
        w = _clean_emotion(raw)
        if not w:
            continue
        if len(w.split()) > MAX_EMOTION_WORDS or len(w) > 40:
            errors.append(f"dropped an over-long emotion item: {w[:40]!r}")
            continue
        if len(w.split()) < len(str(raw).split()) and str(raw).strip(_STRIP_CHARS).lower() != w:
            errors.append(f"collapsed repeated words in {str(raw)[:40]!r}")
        if w in out:
            errors.append(f"dropped repeated emotion {w!r}")
        else:
            out.append(w)
    if len(out) > MAX_EMOTIONS:
        errors.append(f"kept the first {MAX_EMOTIONS} of {len(out)} emotions")
        out = out[:MAX_EMOTIONS]
    return out


# The PARSE policy (affectllm.normalize): snap a model's word onto the task's labels, synonyms included.
match_label = snap_label


def _labels_in_text(text: str, labels: Sequence[str]) -> list[str]:
    """Closed-set labels named in free text, in order of first mention (stems count: "anger" → angry)."""
    hits: list[tuple[int, str]] = []
    words = [(m.start(), m.group(0)) for m in re.finditer(r"[A-Za-z][A-Za-z\-']*", text)]
    for lab in labels:
        first = None
        if " " in lab.strip():
            m = re.search(r"\b" + re.escape(lab) + r"\b", text, re.I)
            first = m.start() if m else None
        else:
            for pos, word in words:
                if match_label(word, [lab]) == lab:
                    first = pos
                    break
        if first is not None:
            hits.append((first, lab))
    return [lab for _, lab in sorted(hits)]


def _confidence(value: Any, errors: list[str]) -> float | None:
    if value is None:
        return None
    try:
        text = str(value).strip()
        pct = text.endswith("%")
        x = float(text.rstrip("%"))
    except (TypeError, ValueError):
        errors.append(f"unreadable confidence {str(value)[:20]!r}")
        return None
    if pct or 1.0 < x <= 100.0:
        x /= 100.0
    if not 0.0 <= x <= 1.0 or x != x:
        errors.append(f"confidence {value!r} out of range")
        return None
    return round(x, 4)


def _rationale_items(value: Any, errors: list[str]) -> list[RationaleItem]:
    if value is None:
        return []
    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, (list, tuple)):
        errors.append("rationale is not a list")
        return []
    items: list[RationaleItem] = []
    for entry in list(value)[:MAX_RATIONALE]:
        if isinstance(entry, dict):
            cue_id = _get(entry, ("id", "cue_id", "ref", "evidence_id", "cite"))
            text = _get(entry, ("cue", "text", "evidence", "description", "reason", "observation"))
            modality = _get(entry, ("modality", "channel", "source"))
            time = _get(entry, ("time", "when", "span", "timestamp"))
            items.append(
                RationaleItem(
                    cue="" if text is None else str(text).strip(),
                    modality=None if modality is None else str(modality),
                    time=None if time is None else str(time),
                    cue_id=None if cue_id is None else str(cue_id).strip(),
                )
            )
        elif isinstance(entry, str) and entry.strip():
            m = _CUE_ID_RE.search(entry)
            items.append(RationaleItem(cue=entry.strip(), cue_id=m.group(0) if m else None))
    if len(value) > MAX_RATIONALE:
        errors.append(f"kept the first {MAX_RATIONALE} rationale items")
    return items


def _text_rationale(text: str, cues: dict[str, tuple[str, Cue]]) -> list[RationaleItem]:
    """Evidence cited in prose: bracketed ids anywhere, and bare ids that name a real cue of the clip."""
    found: list[str] = []
    for m in _BRACKET_ID_RE.finditer(text):
        for cid in re.split(r"\s*[,;/]\s*", m.group(1)):
            if cid.upper() not in found:
                found.append(cid.upper())
    if cues:
        for m in _CUE_ID_RE.finditer(text):
            cid = m.group(0).upper()
            if cid in cues and cid not in found:
                found.append(cid)
    items = []
    for cid in found[:MAX_RATIONALE]:
        # The cue text is the sentence that cites the id, trimmed of the citation itself.
        sentence = ""
        for s in re.split(r"(?<=[.!?])\s+|\n", text):
            if re.search(r"(?<![A-Za-z0-9])" + cid + r"(?![0-9])", s, re.I):
                sentence = _BRACKET_ID_RE.sub("", s).strip(" -*•:")
                break
        items.append(RationaleItem(cue=sentence, cue_id=cid))
    return items


def _text_emotions(text: str) -> tuple[list[str], bool]:
    """Emotions from an ``Emotions: a, b`` line or a list under an emotions heading. (words, found)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = _EMOTION_LINE_RE.match(line.strip())
        if not m:
            continue
        rest = m.group(2).strip()
        if rest:
            return _split_emotions(rest), True
        words = []
        for follow in lines[i + 1 : i + 1 + MAX_EMOTIONS]:
            item = _LIST_ITEM_RE.match(follow)
            if not item:
                if words or follow.strip():
                    break
                continue
            # "1. happy - smiling [F3]" → "happy"
            words.append(re.split(r"\s[-–:(]\s*|\s\[", item.group(1))[0])
        if words:
            return words, True
    return [], False


def _resolve(
    items: list[RationaleItem], cues: dict[str, tuple[str, Cue]], errors: list[str]
) -> list[RationaleItem]:
    out: list[RationaleItem] = []
    seen: set[tuple[str | None, str]] = set()
    for item in items:
        if item.cue_id:
            key = item.cue_id.strip().strip("[]()").upper()
            if cues:
                if key in cues:
                    cid, cue = cues[key]
                    item.cue_id = cid
                    item.modality = item.modality or cue.modality
                    item.time = item.time or format_time(cue.start, cue.end)
                    if not item.cue:
                        item.cue = cue_line(cid, cue).split(": ", 1)[-1]
                else:
                    errors.append(f"cited unknown cue id {item.cue_id!r}")
                    item.cue_id = None
            elif _CUE_ID_RE.fullmatch(key):
                item.cue_id = key
            else:
                errors.append(f"malformed cue id {item.cue_id!r}")
                item.cue_id = None
        if item.modality:
            try:
                item.modality = normalize_modality(item.modality)
            except ValueError:
                errors.append(f"unknown modality {item.modality!r}")
                item.modality = None
        if not item.cue and not item.cue_id:
            continue
        key2 = (item.cue_id, item.cue)
        if key2 in seen:
            continue
        seen.add(key2)
        out.append(item)
    return out


# ---------------------------------------------------------------------------------------------------- main


def parse_answer(
    text: Any, clip: Clip | Sequence[Cue] | None = None, labels: Sequence[str] | None = None
) -> Prediction:
    """Read one model answer. ``clip`` resolves cited ids (and fills modality/time); ``labels`` makes it a
    closed-set answer: ``emotions`` is then the one label named (or ``[]``). Never raises."""
    raw = text if isinstance(text, str) else ("" if text is None else _safe_str(text))
    try:
        return _parse(raw, clip, labels)
    except Exception as exc:  # the contract: model text never crashes a batch
        return Prediction(raw=raw, errors=[f"parser error: {type(exc).__name__}: {exc}"])


def _safe_str(value: Any) -> str:
    try:
        if isinstance(value, bytes):
            return value.decode("utf-8", errors="replace")
        return str(value)
    except Exception:
        return ""


def _parse(raw: str, clip: Clip | Sequence[Cue] | None, labels: Sequence[str] | None) -> Prediction:
    errors: list[str] = []
    text = raw[:MAX_CHARS].replace("\x00", "")
    if len(raw) > MAX_CHARS:
        errors.append(f"answer longer than {MAX_CHARS} characters was truncated")
    for m in _TURN_END_RE.finditer(text):
        if text[: m.start()].strip():
            text = text[: m.start()]
            break
    text = _TURN_END_RE.sub("", text) if not text.strip() or _TURN_END_RE.match(text.lstrip()) else text
    cues = _cue_table(clip)
    label_list = [str(x) for x in labels] if labels else None

    think_m = _THINK_RE.search(text)
    think = think_m.group(1).strip() if think_m else ""

    open_m = _ANSWER_OPEN_RE.search(text)
    tagged = open_m is not None
    if open_m:
        close_m = _ANSWER_CLOSE_RE.search(text, open_m.end())
        block = text[open_m.end() : close_m.start()] if close_m else text[open_m.end() :]
        if close_m is None:
            # A stop string ("</answer>") or the token limit ended the block: fine when what is left is a
            # complete answer, which the strictness check below decides.
            rest = block.strip()
            if not rest.endswith("}"):
                errors.append("answer block not closed")
        outside = text[: open_m.start()] + ("" if close_m is None else text[close_m.end() :])
    else:
        block, outside = text, ""
        stripped = text.strip()
        # Schema-constrained decoding (vLLM, response_format) emits the bare answer object: that follows the
        # contract too.
        if not (stripped.startswith("{") and stripped.endswith("}")):
            errors.append("no <answer> block")

    obj, strict, span = _find_object(block, errors)
    if obj is None and tagged:
        # The block holds prose; maybe the JSON came before the tag.
        obj, strict, span = _find_object(text, errors)
        strict = False
    emotions_found = False
    words: list[str] = []
    rationale: list[RationaleItem] = []
    confidence = None
    if obj is not None:
        value = _get(obj, _EMOTION_KEYS)
        words = _split_emotions(value)
        emotions_found = value is not None
        if not emotions_found:
            errors.append('answer object has no "emotions"')
        elif not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            errors.append('"emotions" is not a list of words')
        rationale = _rationale_items(_get(obj, _RATIONALE_KEYS), errors)
        confidence = _confidence(_get(obj, ("confidence", "score", "probability")), errors)
    else:
        if tagged:
            errors.append("no JSON object in the answer block")
        words, emotions_found = _text_emotions(block)
        if not emotions_found and tagged:
            # "<answer>happy, relieved</answer>": the block is the list itself.
            stripped = block.strip()
            if stripped and len(stripped) < 200 and "\n" not in stripped:
                words, emotions_found = _split_emotions(stripped), True
        rationale = _text_rationale(text, cues)
        m = _CONF_RE.search(block)
        if m:
            confidence = _confidence(m.group(1) + m.group(2), errors)

    emotions = _normalize_emotions(words, errors)
    if label_list is not None:
        mapped: list[str] = []
        for w in emotions:
            lab = match_label(w, label_list)
            if lab is None:
                errors.append(f"{w!r} is not in the label set")
            elif lab not in mapped:
                mapped.append(lab)
        if not mapped:
            mapped = _labels_in_text(block if tagged else text, label_list)[:1]
            if mapped:
                errors.append("label recovered from free text")
        if len(mapped) > 1:
            errors.append(f"{len(mapped)} labels given; kept the first")
        emotions = mapped[:1]

    rationale = _resolve(rationale, cues, errors)
    if not emotions:
        errors.append("no emotions found")

    # The prose around the contract is the human-readable answer (chat replies, explanations); the reasoning
    # in <think> stands in when there is none.
    prose = outside if tagged else (text.replace(span, " ", 1) if span else text)
    if think_m:
        prose = prose.replace(think_m.group(0), " ")
    prose = _EMPTY_FENCE_RE.sub("", _TAG_RE.sub("", prose))
    answer = re.sub(r"[ \t]+", " ", prose).strip() or think

    bare_object = not tagged and obj is not None and span.strip() == text.strip()
    # Followed the contract = a well-formed answer object that needed no repair of any kind (no repaired
    # JSON, duplicate or over-long emotions, unknown citations, labels outside the set, ...).
    format_ok = bool(
        (tagged or bare_object) and obj is not None and strict and emotions_found and emotions and not errors
    )
    return Prediction(
        emotions=emotions,
        rationale=rationale,
        answer=answer,
        confidence=confidence,
        raw=raw,
        format_ok=format_ok,
        errors=errors,
    )


__all__ = ["match_label", "parse_answer"]
