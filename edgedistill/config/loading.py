"""YAML loading (safe_load only) and pydantic validation errors turned into one line.

A line names the file (with the line number of the field when the YAML has it), the field as a dotted
path, the bad value, and what would be valid, with the nearest valid key for a misspelt one.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from edgedistill.errors import UserError, unknown_choice

Model = TypeVar("Model", bound=BaseModel)


def read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """Parse a YAML file with the safe loader; return the data and its node tree (for line numbers)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read ({exc})") from None
    try:
        # SafeLoader never constructs Python objects: tags like !!python/object are rejected.
        data = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}{where}: not valid YAML ({problem})") from None
    return data, node


def validate(model: type[Model], data: Any, path: Path, node: yaml.Node | None = None,
             context: dict | None = None) -> Model:
    """Validate `data` against `model`; raise UserError naming file, line, field, value and choices."""
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of {model.__name__} fields, got {type(data).__name__}")
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise UserError(describe_error(model, exc, path, node)) from None


def describe_error(model: type[BaseModel], exc: ValidationError, path: Path, node: yaml.Node | None) -> str:
    """The first validation error as one line (the count of the others is appended)."""
    errors = exc.errors(include_url=False)
    err = errors[0]
    loc = tuple(err["loc"])
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if err["type"] == "union_tag_invalid":
        # Point at the `kind` key itself, and list the kinds.
        loc, value = loc + ("kind",), ctx.get("tag")
        message = unknown_choice("value", value, _split_choices(ctx.get("expected_tags", "")))
    elif err["type"] == "extra_forbidden":
        message = unknown_choice("key", loc[-1], _fields_at(model, loc[:-1]))
    elif err["type"] == "missing":
        message = "required field is missing"
    elif err["type"] in ("literal_error", "enum"):
        message = unknown_choice("value", value, _split_choices(ctx.get("expected", "")))
    elif err["type"] == "value_error":
        message = _clean(err["msg"])  # our validators name the value themselves
    else:
        message = f"{_clean(err['msg'])}, got {value!r}"
    # A key with a newline or other control character is shown escaped: the error stays one line.
    field = ".".join(str(p) if str(p).isprintable() else repr(str(p))
                     for i, p in enumerate(loc) if not _is_union_tag(model, loc, i)) or "(top level)"
    line = _line_of(node, loc)
    where = f"{path}:{line}" if line else f"{path}"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {field}: {message}{more}"


def _split_choices(expected: str) -> list[str]:
    """pydantic's "'a', 'b' or 'c'" as ['a', 'b', 'c']."""
    return [c.strip(" '\"") for c in expected.replace(" or ", ",").split(",") if c.strip(" '\"")]


def _clean(msg: str) -> str:
    return msg.removeprefix("Value error, ").rstrip(".")


def _unwrap(annotation: Any) -> list[Any]:
    """The concrete types inside Optional/Union/Annotated/list/dict annotations."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [t for arg in typing.get_args(annotation) for t in _unwrap(arg)]
    return [annotation]


def _types_at(model: type[BaseModel], loc: tuple) -> list[Any]:
    """Every type that can sit at `loc`; a discriminated union's tag in `loc` narrows to its member."""
    current: list[Any] = [model]
    for part in loc:
        tagged = [c for c in current if _is_model(c) and _tag_of(c) == part]
        if tagged and len(current) > 1:
            current = tagged
            continue
        nxt: list[Any] = []
        for cls in current:
            if _is_model(cls) and part in cls.model_fields:
                nxt.extend(_unwrap(cls.model_fields[part].annotation))
            elif typing.get_origin(cls) in (list, tuple, dict):
                nxt.extend(_unwrap(typing.get_args(cls)[-1]))
        current = nxt
    return current


def _is_model(cls: Any) -> bool:
    return isinstance(cls, type) and issubclass(cls, BaseModel)


def _tag_of(cls: type[BaseModel]) -> str | None:
    field = cls.model_fields.get("kind")
    args = typing.get_args(field.annotation) if field else ()
    return args[0] if len(args) == 1 else None


def _is_union_tag(model: type[BaseModel], loc: tuple, index: int) -> bool:
    candidates = _types_at(model, loc[:index])
    return len(candidates) > 1 and any(_is_model(c) and _tag_of(c) == loc[index] for c in candidates)


def _fields_at(model: type[BaseModel], loc: tuple) -> set[str]:
    return {name for cls in _types_at(model, loc) if _is_model(cls) for name in cls.model_fields}


def _line_of(node: yaml.Node | None, loc: tuple) -> int | None:
    """1-based line of the deepest YAML node on `loc` that exists in the file."""
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if k.value == str(part)]
            if not match:
                continue  # a union tag or a default: stay at the enclosing node
            key, node = match[0]
            line = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
    return line


def load_model(model: type[Model], path: Path, context: dict | None = None) -> Model:
    """Read `path` as YAML and validate it as `model`."""
    data, node = read_yaml(path)
    return validate(model, data, path, node, context)
