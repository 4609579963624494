"""Agents' display names and teams by their vendor id, for the `agent` and `team` of tickets.

A CRM's tickets carry the id of the user (or queue) that owns them; `AgentDirectory` turns it
into a name the first time a page names it and keeps what it learnt for the rest of the sync,
so each id costs one lookup per sync, not one per page.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Agent:
    """An owner as a ticket shows it: `name` is None for an owner that is no person (a queue),
    whose tickets have no agent yet but belong to the `team` it names."""

    name: str | None
    team: str | None = None


def full_name(*parts: str | None) -> str | None:
    """The non-empty `parts` joined by spaces ("Olga Petrova"); None when all are empty."""
    joined = " ".join(str(p).strip() for p in parts if p and str(p).strip())
    return joined or None


Lookup = Callable[[list[str], str], Mapping[str, Agent]]
"""Agents found among `ids` (missing ids left out); `where` names the page for errors."""


class AgentDirectory:
    """Agents by id for one sync, learnt through `lookup`. With `complete`, the first lookup
    reads the vendor's whole directory (ids are ignored), so it is never asked again."""

    def __init__(self, lookup: Lookup, *, complete: bool = False) -> None:
        self.lookup = lookup
        self.complete = complete
        self._known: dict[str, Agent] = {}
        self._asked: set[str] = set()
        self._lock = threading.Lock()

    def named(self, rows: list[dict], where: str, valid: Callable[[str], Any] = bool) -> list[dict]:
        """`rows` with each `agent` id the directory knows replaced by the agent's name (and
        `team`, where a row has none, by the agent's team); unknown ids, and values `valid`
        finds false as ids, stay as they are."""
        ids = {str(row["agent"]) for row in rows if row.get("agent") is not None}
        self._learn(sorted(i for i in ids if valid(i)), where)
        for row in rows:
            agent = self._known.get(str(row.get("agent")))
            if agent is None:
                continue
            row["agent"] = agent.name
            if row.get("team") is None:
                row["team"] = agent.team
        return rows

    def _learn(self, ids: Iterable[str], where: str) -> None:
        with self._lock:
            wanted = [i for i in ids if i not in self._asked]
            if not wanted or (self.complete and self._asked):
                return
            self._known |= self.lookup(wanted, where)
            self._asked |= set(wanted)
