"""YAML files into pydantic models, with errors that name the file, line, field and fix.

Stricter than plain YAML where plain YAML silently loses what the user meant: a key given
twice is an error naming both lines (YAML keeps the last), and an impossible date such as
2026-02-30 is an error at its line (PyYAML raises a bare `ValueError`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from connectors.errors import CxloopError

Model = TypeVar("Model", bound=BaseModel)
TIMESTAMP = "tag:yaml.org,2002:timestamp"
MERGE = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class YamlDocument:
    """A parsed YAML file: its data and the node tree that knows each value's line."""

    path: Path
    data: Any
    root: yaml.Node | None

    def where(self, loc: tuple) -> str:
        """`path:line` of the deepest node on `loc` that exists (the path alone if none)."""
        line = _line_of(self.root, loc)
        return f"{self.path}:{line}" if line else str(self.path)

    def validate(self, model: type[Model], error: type[CxloopError]) -> Model:
        """The data validated as `model`; raises `error` listing every problem found."""
        if not isinstance(self.data, dict):
            raise error(
                f"{self.path}: expected a mapping of keys at the top level, "
                f"found {type(self.data).__name__}."
            )
        try:
            return model.model_validate(self.data)
        except ValidationError as exc:
            raise error("\n".join(self._describe(p, model) for p in exc.errors())) from None

    def _describe(self, problem: dict, model: type[BaseModel]) -> str:
        loc = tuple(problem["loc"])
        field, where = _field(loc), self.where(loc)
        if problem["type"] == "extra_forbidden":
            hint = _did_you_mean(model, loc)
            return f"{where}: unknown key `{field}`{hint}; remove it or fix its spelling."
        if problem["type"] == "missing":
            return f"{where}: `{field}` is required; add it."
        message = problem["msg"].removeprefix("Value error, ")
        return f"{where}: `{field}`: {message} (got {problem.get('input')!r})."


def read_yaml(path: Path, error: type[CxloopError]) -> YamlDocument:
    """`path` parsed; raises `error` on unreadable or invalid YAML, repeated keys, bad dates."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"{path}: cannot read the file ({exc.strerror}).") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        problems = sorted(problem for loc, node in _nodes(root) for problem in _check(loc, node))
        if problems:
            raise error("\n".join(f"{path}:{line}: {message}" for line, message in problems))
        data = yaml.SafeLoader("").construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise error(
            f"{where}: not valid YAML ({problem}); check indentation and quoting."
        ) from None
    return YamlDocument(path, data, root)


def load_yaml_model(path: Path, model: type[Model], error: type[CxloopError]) -> Model:
    """`path` parsed and validated as `model`; raises `error` listing every problem found."""
    return read_yaml(path, error).validate(model, error)


def _nodes(root: yaml.Node | None) -> Iterator[tuple[tuple, yaml.Node]]:
    """Every node under `root` with its path of keys and indices; an alias is visited once."""
    seen: set[int] = set()
    pending: list[tuple[tuple, yaml.Node]] = [((), root)] if root is not None else []
    while pending:
        loc, node = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield loc, node
        if isinstance(node, yaml.MappingNode):
            pending.extend(((*loc, key.value), value) for key, value in reversed(node.value))
        elif isinstance(node, yaml.SequenceNode):
            pending.extend(((*loc, i), item) for i, item in reversed(list(enumerate(node.value))))


def _check(loc: tuple, node: yaml.Node) -> list[tuple[int, str]]:
    """(line, problem) for what plain YAML would get silently wrong or crash on at `node`."""
    if isinstance(node, yaml.MappingNode):
        return _repeated_keys(loc, node)
    if isinstance(node, yaml.ScalarNode) and node.tag == TIMESTAMP:
        try:
            yaml.SafeLoader("").construct_yaml_timestamp(node)
        except ValueError as exc:
            return [(
                node.start_mark.line + 1,
                f"`{_field(loc)}`: {node.value} is not a calendar date ({exc}); write a date "
                "that exists, as YYYY-MM-DD.",
            )]  # fmt: skip
    return []


def _repeated_keys(loc: tuple, node: yaml.MappingNode) -> list[tuple[int, str]]:
    """(line, problem) for each key of the mapping given again, naming both lines."""
    first: dict[tuple[str, str], int] = {}
    problems = []
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == MERGE:
            continue
        line, mark = key.start_mark.line + 1, (key.tag, key.value)
        if mark not in first:
            first[mark] = line
            continue
        lines = f"line {line}" if first[mark] == line else f"lines {first[mark]} and {line}"
        problems.append(
            (line, f"`{_field((*loc, key.value))}` is given twice, on {lines}; keep one of them.")
        )
    return problems


def _field(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _line_of(node: Any, loc: tuple) -> int | None:
    """1-based line of the deepest YAML node on `loc` that exists."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if k.value == str(part)]
            if not match:
                return line
            key, node = match[0]
            line = key.start_mark.line + 1
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _did_you_mean(model: type[BaseModel], loc: tuple) -> str:
    """`; did you mean `x`?` from the field names of the sub-model at `loc`, if one is close."""
    current: Any = model
    for part in loc[:-1]:
        fields = getattr(current, "model_fields", None)
        if fields is None or str(part) not in fields:
            if isinstance(part, int):
                continue
            return ""
        current = _model_in(fields[str(part)].annotation)
    names = list(getattr(current, "model_fields", {}))
    close = difflib.get_close_matches(str(loc[-1]), names, n=1)
    return f" (did you mean `{close[0]}`?)" if close else ""


def _model_in(annotation: Any) -> Any:
    """The pydantic model inside an annotation such as `Foo`, `list[Foo]` or `Foo | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
