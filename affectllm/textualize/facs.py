"""The Facial Action Coding System as data: action-unit names, intensity bands and known co-activations.

Names follow the FACS manual (Ekman & Friesen 1978; Ekman, Friesen & Hager 2002). The co-activation table
lists AU combinations that the FACS/EMFACS literature describes as recurring configurations; each is phrased
as *observable evidence* (which muscles move together), never as an emotion label, so that the LLM does the
interpretation and a rationale can cite the evidence itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ActionUnit:
    """One FACS action unit: its number, FACS name and face region."""

    code: int
    name: str
    region: str

    @property
    def label(self) -> str:
        return f"AU{self.code:02d}"


# Every AU that OpenFace 2.x (17 intensities + AU28 presence + AU45) or py-feat (20 AUs incl. AU11, AU24,
# AU43) reports, plus the other common single AUs, so hand-made CSVs from other coders still get names.
_AUS = [
    (1, "inner brow raiser", "brows"),
    (2, "outer brow raiser", "brows"),
    (4, "brow lowerer", "brows"),
    (5, "upper lid raiser", "eyes"),
    (6, "cheek raiser", "eyes"),
    (7, "lid tightener", "eyes"),
    (9, "nose wrinkler", "nose"),
    (10, "upper lip raiser", "mouth"),
    (11, "nasolabial deepener", "mouth"),
    (12, "lip corner puller", "mouth"),
    (13, "sharp lip puller", "mouth"),
    (14, "dimpler", "mouth"),
    (15, "lip corner depressor", "mouth"),
    (16, "lower lip depressor", "mouth"),
    (17, "chin raiser", "chin"),
    (18, "lip pucker", "mouth"),
    (20, "lip stretcher", "mouth"),
    (22, "lip funneler", "mouth"),
    (23, "lip tightener", "mouth"),
    (24, "lip pressor", "mouth"),
    (25, "lips part", "mouth"),
    (26, "jaw drop", "jaw"),
    (27, "mouth stretch", "jaw"),
    (28, "lip suck", "mouth"),
    (41, "lid droop", "eyes"),
    (42, "slit", "eyes"),
    (43, "eyes closed", "eyes"),
    (44, "squint", "eyes"),
    (45, "blink", "eyes"),
    (46, "wink", "eyes"),
]
AU_TABLE: dict[int, ActionUnit] = {code: ActionUnit(code, name, region) for code, name, region in _AUS}


def au_name(code: int) -> str:
    """The FACS name of an action unit, e.g. ``au_name(12) == "lip corner puller"``."""
    unit = AU_TABLE.get(code)
    return unit.name if unit else f"action unit {code}"


def au_label(code: int) -> str:
    """``"AU12 lip corner puller"`` — the cue name used in rendered evidence."""
    return f"AU{code:02d} {au_name(code)}"


# ---------------------------------------------------------------------------------------------------------
# Intensity. OpenFace 2.x regresses AU intensity on the 0-5 scale of its training corpora (DISFA, BP4D,
# SEMAINE...), where 0 is absent and 1..5 are the FACS intensity letters A..E. A regressed value is mapped to
# the nearest integer code, so the cut-offs sit half-way between the codes:
#   < 0.5 absent | [0.5, 1.5) A trace | [1.5, 2.5) B slight | [2.5, 3.5) C marked
#   | [3.5, 4.5) D severe | >= 4.5 E maximum
# ---------------------------------------------------------------------------------------------------------
INTENSITY_CUTS: tuple[float, ...] = (0.5, 1.5, 2.5, 3.5, 4.5)
INTENSITY_LETTERS: tuple[str, ...] = ("A", "B", "C", "D", "E")
INTENSITY_WORDS: dict[str, str] = {
    "A": "trace",
    "B": "slight",
    "C": "marked",
    "D": "severe",
    "E": "maximum",
}


def intensity_codes(values: np.ndarray) -> np.ndarray:
    """Vectorised: 0 (absent) .. 5 (E) for OpenFace 0-5 intensities; NaN maps to 0."""
    values = np.nan_to_num(np.asarray(values, dtype=float), nan=0.0)
    return np.searchsorted(np.asarray(INTENSITY_CUTS), values, side="right")


def intensity_band(value: float | None) -> str | None:
    """The FACS letter (A-E) for one OpenFace intensity, or None below trace level."""
    if value is None or not np.isfinite(value):
        return None
    code = int(intensity_codes(np.array([value]))[0])
    return INTENSITY_LETTERS[code - 1] if code else None


def band_phrase(letter: str | None) -> str:
    """``"slight (B)"`` — how an intensity band reads in evidence text."""
    if not letter:
        return "below trace level"
    return f"{INTENSITY_WORDS[letter]} ({letter})"


# ---------------------------------------------------------------------------------------------------------
# Co-activations. Each entry: the AUs that must be active in the same frames, the evidence phrase, and where
# the configuration is described. Larger patterns are matched first; a smaller pattern is only reported for
# frames that a larger pattern containing it does not already explain.
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CoActivation:
    aus: tuple[int, ...]
    evidence: str
    reference: str

    @property
    def label(self) -> str:
        return "+".join(f"AU{a}" for a in self.aus)


CO_ACTIVATIONS: tuple[CoActivation, ...] = (
    CoActivation(
        (1, 2, 4, 5, 20, 26),
        "brows raised and drawn together, upper lids raised, lips stretched and jaw dropped together",
        "EMFACS prototype configuration (Ekman & Friesen 1978; Ekman, Friesen & Hager 2002)",
    ),
    CoActivation(
        (1, 2, 5, 26),
        "brows raised, upper lids raised and jaw dropped together",
        "EMFACS prototype configuration (Ekman & Friesen 1978)",
    ),
    CoActivation(
        (4, 5, 7, 23),
        "brows lowered, upper lids raised, lids tightened and lips tightened together",
        "EMFACS prototype configuration (Ekman & Friesen 1978)",
    ),
    CoActivation(
        (1, 4, 15),
        "inner brows raised and drawn together with lip corners pulled down",
        "EMFACS prototype configuration (Ekman & Friesen 1978)",
    ),
    CoActivation(
        (6, 7, 12),
        "cheeks raised and lids tightened with lip corners pulled up",
        "Duchenne pattern with orbital narrowing (Ekman, Davidson & Friesen 1990)",
    ),
    CoActivation(
        (1, 2, 5),
        "brows and upper lids raised together",
        "FACS brow-lid configuration (Ekman, Friesen & Hager 2002)",
    ),
    CoActivation(
        (9, 15),
        "nose wrinkled with lip corners pulled down",
        "EMFACS prototype configuration (Ekman & Friesen 1978)",
    ),
    CoActivation(
        (9, 10),
        "nose wrinkled with upper lip raised",
        "EMFACS prototype configuration (Ekman & Friesen 1978)",
    ),
    CoActivation(
        (6, 12),
        "cheek raiser with lip corner puller co-active (the Duchenne pattern)",
        "Duchenne marker (Ekman, Davidson & Friesen 1990)",
    ),
    CoActivation(
        (12, 14),
        "lip corner puller with dimpler co-active (EMFACS describes this one-sided; "
        "the AU CSV does not code laterality)",
        "EMFACS unilateral AU12+AU14 (Ekman & Friesen 1978; Matsumoto 1992)",
    ),
    CoActivation(
        (1, 4),
        "inner brows raised and drawn together (oblique brows)",
        "FACS brow configuration (Ekman, Friesen & Hager 2002)",
    ),
    CoActivation(
        (4, 7),
        "brows lowered with lids tightened",
        "FACS brow-lid configuration (Ekman, Friesen & Hager 2002)",
    ),
    CoActivation(
        (15, 17),
        "lip corners pulled down with chin raised",
        "FACS lower-face configuration (Ekman, Friesen & Hager 2002)",
    ),
    CoActivation(
        (17, 23),
        "chin raised with lips tightened (mouth pressed)",
        "FACS lower-face configuration (Ekman, Friesen & Hager 2002)",
    ),
    CoActivation(
        (1, 2),
        "inner and outer brows raised together (whole brow raised)",
        "FACS brow configuration (Ekman, Friesen & Hager 2002)",
    ),
    CoActivation(
        (25, 26),
        "lips parted with jaw dropped (also produced by speaking)",
        "FACS mouth-opening configuration (Ekman, Friesen & Hager 2002)",
    ),
)
