"""The company's clock: store times in its time zone, and working hours between two times."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


def local_times(frame: pd.DataFrame, timezone: str) -> pd.DataFrame:
    """`frame` with its naive-UTC datetime columns as naive wall-clock time in `timezone`."""
    if timezone == "UTC":
        return frame
    moments = frame.select_dtypes("datetime").columns
    return frame.assign(
        **{c: frame[c].dt.tz_localize("UTC").dt.tz_convert(timezone).dt.tz_localize(None)
           for c in moments}
    )  # fmt: skip


@dataclass(frozen=True)
class BusinessHours:
    """Working time: `start`–`end` o'clock on `weekdays` (numpy weekmask, Monday first), minus
    `holidays` (ISO dates)."""

    start: float = 9.0
    end: float = 18.0
    weekdays: str = "1111100"
    holidays: tuple[str, ...] = ()

    def elapsed(self, since: pd.Series, until: pd.Series) -> pd.Series:
        """Working hours between two timestamp columns (NaN where either is missing)."""
        return self._clock(until) - self._clock(since)

    def _clock(self, at: pd.Series) -> pd.Series:
        """Working hours from 1970-01-01 to each timestamp."""
        known = at.notna().to_numpy()
        day = at.dt.floor("D").to_numpy()
        days = np.zeros(len(at))
        open_day = np.zeros(len(at), dtype=bool)
        calendar = {"weekmask": self.weekdays, "holidays": list(self.holidays)}
        days[known] = np.busday_count("1970-01-01", day[known].astype("datetime64[D]"), **calendar)
        open_day[known] = np.is_busday(day[known].astype("datetime64[D]"), **calendar)
        hour = ((at - at.dt.floor("D")) / pd.Timedelta(hours=1)).to_numpy()
        today = np.clip(hour - self.start, 0, self.end - self.start) * open_day
        clock = days * (self.end - self.start) + today
        return pd.Series(np.where(known, clock, np.nan), index=at.index)
