"""Valid survey score ranges per kind (`SurveyScales`) and the options that set them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from connectors.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

HALF_KINDS = ("csat", "ces")


@dataclass(frozen=True)
class SurveyScales:
    """Valid score ranges per survey kind: NPS 0–10, CSAT 1–`csat`, CES 1–`ces`; whole
    numbers, or halves for the kinds in `halves`."""

    csat: int = 5
    ces: int = 7
    halves: frozenset[str] = frozenset()

    def ranges(self) -> dict[str, tuple[int, int]]:
        """(lowest, highest) valid score per kind."""
        return {"nps": (0, 10), "csat": (1, self.csat), "ces": (1, self.ces)}

    def problems(
        self, kinds: pd.Series, scores: pd.Series, written: pd.Series | None = None
    ) -> pd.Series:
        """Why each score is invalid for its kind, `""` where it is valid; `written` is the
        scores' text as the source gave it (scientific notation is no score)."""
        import pandas as pd  # here, so survey sources that only need `ranges` stay light

        ranges = self.ranges()
        low = kinds.map({k: lo for k, (lo, _) in ranges.items()})
        high = kinds.map({k: hi for k, (_, hi) in ranges.items()})
        steps = kinds.map({k: 0.5 for k in self.halves}).fillna(1.0)
        shown = written if written is not None else scores.map("{:g}".format)
        unknown = "kind " + kinds.astype(str) + f" is not one of {', '.join(ranges)}"
        outside = (
            kinds.astype(str)
            + " score "
            + scores.map("{:g}".format)
            + " is outside "
            + low.astype(str).str.removesuffix(".0")
            + "–"
            + high.astype(str).str.removesuffix(".0")
        )
        unit = steps.map({1.0: "a whole number", 0.5: "a whole or half number"})
        uneven = kinds.astype(str) + " score '" + shown.astype(str) + "' is not " + unit
        bad = scores.notna() & ((scores < low.astype(float)) | (scores > high.astype(float)))
        fractional = scores.notna() & ((scores / steps) % 1 != 0)
        if written is not None:
            fractional |= written.str.contains("[eE]", regex=True)
        return (
            pd.Series("", index=kinds.index)
            .mask(bad, outside)
            .mask(fractional, uneven)
            .mask(low.isna(), unknown)
        )


def survey_scales(where: str, csat: Any, ces: Any, halves: Any) -> SurveyScales:
    """The scales the options give; `ConfigError` naming the option and the fix."""
    for option, value in (("csat_scale", csat), ("ces_scale", ces)):
        if not isinstance(value, int) or isinstance(value, bool) or not 3 <= value <= 10:
            raise ConfigError(f"{where}.{option}: got {value!r}; write a whole number 3–10.")
    if not isinstance(halves, list | tuple) or not set(halves) <= set(HALF_KINDS):
        raise ConfigError(
            f"{where}.half_scores: got {halves!r}; list the kinds whose scores may be halves "
            f"(4.5), among {', '.join(HALF_KINDS)} (NPS scores are always whole)."
        )
    return SurveyScales(csat, ces, frozenset(halves))
