"""The project as commands read it: the checked configuration, its hypotheses, its store's data."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from flows.cli.terminal import warn

if TYPE_CHECKING:
    from flows.config import Config
    from tasks.hypotheses import Hypothesis
    from tasks.loader import CxData

UNRANKED = (
    "the store has no pain-point ranking yet, so each hypothesis's `pain_point` is not checked; "
    "it is once `cxloop rank` or `cxloop run` has ranked."
)


def checked(config_path: Path) -> Config:
    """The configuration, with its sources' options, hypotheses and store checked before any
    work starts; nothing is written (the store not created) unless all of them pass."""
    from flows.config import load_config
    from tasks.hypotheses import load_hypotheses, stored_ranking

    config = load_config(config_path)
    ranking = stored_ranking(config.store_url)
    if not config.hypotheses_dir.is_dir():
        warn(
            f"no folder {config.hypotheses_dir}, so no pilots are evaluated; "
            "`cxloop hypotheses new` writes a first hypothesis there."
        )
    elif load_hypotheses(config.hypotheses_dir, ranking) and ranking is None:
        warn(UNRANKED)
    config.store()
    return config


def hypotheses_of(config: Config) -> list[Hypothesis]:
    """The hypotheses in the configuration's folder."""
    from tasks.hypotheses import load_hypotheses

    return load_hypotheses(config.hypotheses_dir)


def data(config: Config) -> CxData:
    """Everything in the configured store, as the analyses read it."""
    from tasks.loader import CxData

    return CxData.from_store(
        config.store(), config.business_hours.calendar(), config.timezone, config.fcr.repeat_days
    )
