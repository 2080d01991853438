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


MAX_YAML_BYTES = 1 << 20  # a pipeline or profile is a few kB
MAX_YAML_NODES = 100_000  # after aliases are expanded: a few nested aliases can stand for billions
MAX_YAML_DEPTH = 50


def read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """Parse a YAML file with the safe loader; return the data and its node tree (for line numbers).

    Only a regular file of at most MAX_YAML_BYTES is read (not /dev/zero, not a FIFO that never ends), and its
    node tree, aliases expanded, must stay within MAX_YAML_NODES and MAX_YAML_DEPTH before anything is built.
    """
    text = read_text_file(path, MAX_YAML_BYTES, "YAML")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        check_yaml_size(node, path)
        # SafeLoader never constructs Python objects: tags like !!python/object are rejected.
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}{where}: not valid YAML ({problem})") from None
    except RecursionError:
        raise UserError(f"{path}: nested deeper than YAML can be read here; a pipeline is a few levels deep") from None
    return data, node


def read_text_file(path: Path, max_bytes: int, what: str) -> str:
    """A regular UTF-8 file of at most `max_bytes`; one line naming the file otherwise."""
    import stat

    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        raise UserError(f"{path}: not a regular file (a device, pipe or folder); expected a {what} file")
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
        if len(raw) > max_bytes:
            raise UserError(f"{path}: larger than {max_bytes >> 10} kB; a {what} file is much smaller")
        return raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read ({exc})") from None


def check_yaml_size(root: yaml.Node | None, path: Path) -> None:
    """Refuse a node tree whose alias-expanded size or depth is past the limits (a 'billion laughs' file),
    or that refers to itself, counting each shared node once per use without expanding anything."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node, depth: int) -> int:
        if depth > MAX_YAML_DEPTH:
            raise UserError(f"{path}:{node.start_mark.line + 1}: nested more than {MAX_YAML_DEPTH} levels deep")
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise UserError(f"{path}:{node.start_mark.line + 1}: an alias refers to the node that holds it")
        open_nodes.add(key)
        children = node.value if isinstance(node, yaml.SequenceNode) else \
            [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else []
        total = 1
        for child in children:
            total += size(child, depth + 1)
            if total > MAX_YAML_NODES:
                raise UserError(f"{path}: expands to more than {MAX_YAML_NODES:,} values through its aliases; "
                                "a pipeline has a few hundred")
        open_nodes.discard(key)
        sizes[key] = total
        return total

    if root is not None:
        size(root, 0)


def validate(model: type[Model], data: Any, path: Path, node: yaml.Node | None = None,
             context: dict | None = None) -> Model:
    """Validate `data` against `model`; raise UserError naming file, line, field, value and choices."""
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of {model.__name__} fields, got {type(data).__name__}")
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise UserError(describe_error(model, exc, path, node)) from None


MAX_PROBLEMS = 20  # shown one per line; a file with more is likely not a pipeline at all


def describe_error(model: type[BaseModel], exc: ValidationError, path: Path, node: yaml.Node | None) -> str:
    """Every validation error, one line each (as ruff and mypy print them), so all can be fixed in one go."""
    errors = exc.errors(include_url=False)
    lines = [_describe_one(model, err, path, node) for err in errors[:MAX_PROBLEMS]]
    if len(errors) > MAX_PROBLEMS:
        lines.append(f"{path}: {len(errors) - MAX_PROBLEMS} more problems not shown")
    return "\n".join(lines)


def _describe_one(model: type[BaseModel], err: dict, path: Path, node: yaml.Node | None) -> str:
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
        if isinstance(value, bool):  # YAML 1.1 reads unquoted off/on/no/yes as booleans
            message += "; YAML reads unquoted off, on, no and yes as true/false: quote the word ('off')"
    elif err["type"] == "value_error":
        message = _clean(err["msg"])  # our validators name the value themselves
    else:
        shown = repr(value)
        message = f"{_clean(err['msg'])}, got {shown if len(shown) <= 200 else shown[:200] + '...'}"
    # A key with a newline or other control character is shown escaped: the error stays one line.
    field = ".".join(str(p) if str(p).isprintable() else repr(str(p))
                     for i, p in enumerate(loc) if not _is_union_tag(model, loc, i)) or "(top level)"
    line = _line_of(node, loc)
    where = f"{path}:{line}" if line else f"{path}"
    return f"{where}: {field}: {message}"


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
        # pydantic names a plain union's member in `loc` ("list[Phase]"): narrow to the containers it names
        tagged = tagged or [c for c in current if isinstance(part, str) and typing.get_origin(c) in (list, tuple, dict)
                            and part.startswith(typing.get_origin(c).__name__ + "[")]
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
