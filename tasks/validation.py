"""YAML files into pydantic models, with errors that name the file, line, field and fix."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from tasks.errors import CxloopError

Model = TypeVar("Model", bound=BaseModel)


def load_yaml_model(path: Path, model: type[Model], error: type[CxloopError]) -> Model:
    """`path` parsed and validated as `model`; raises `error` listing every problem found."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"{path}: cannot read the file ({exc.strerror}).") from None
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise error(
            f"{where}: not valid YAML ({problem}); check indentation and quoting."
        ) from None
    if not isinstance(data, dict):
        raise error(
            f"{path}: expected a mapping of keys at the top level, found {type(data).__name__}."
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(path, root, problem, model) for problem in exc.errors()]
        raise error("\n".join(lines)) from None


def _describe(path: Path, root: Any, problem: dict, model: type[BaseModel]) -> str:
    loc = tuple(problem["loc"])
    field = ".".join(str(part) for part in loc) or "(top level)"
    line = _line_of(root, loc)
    where = f"{path}:{line}" if line else str(path)
    if problem["type"] == "extra_forbidden":
        hint = _did_you_mean(model, loc)
        return f"{where}: unknown key `{field}`{hint}; remove it or fix its spelling."
    if problem["type"] == "missing":
        return f"{where}: `{field}` is required; add it."
    message = problem["msg"].removeprefix("Value error, ")
    return f"{where}: `{field}`: {message} (got {problem.get('input')!r})."


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
