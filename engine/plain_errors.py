"""Plain-words errors for the files and records that pydantic models check.

`describe_errors` turns a `ValidationError` into one line per problem that names the place
(the file or record), the field as a dotted path (`users.bob.quotas.max_gpus`, `sbatch_extra[1]`),
what is wrong and what is allowed. What a field accepts is read off the field itself (its type,
`Literal` choices, `ge`/`le` bounds, or its `description`), so it is declared once.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from enum import Enum
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

_CONTAINERS = (dict, list, tuple)
Model = TypeVar("Model", bound=BaseModel)


def validated(model: type[Model], data: Any, where: str,
              refusal: Callable[[list[str]], Exception]) -> Model:
    """`data` read into `model`, or `refusal` raised with every problem in plain words (the
    caller's error type, such as engine.config.ConfigError, which takes a list of problems)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise refusal(describe_errors(exc, where, model)) from None


def describe_errors(error: ValidationError, where: str | None,
                    model: type[BaseModel]) -> list[str]:
    """One line per problem: `where: field.path: problem` (without `where` when None)."""
    lines = []
    for item in error.errors(include_url=False):
        loc = item["loc"]
        field, holder, inside = field_at(model, loc)
        path = dotted(loc) or "(the whole document)"
        line = f"{path}: {_problem(item, field, holder, inside)}"
        lines.append(f"{where}: {line}" if where else line)
    return lines


def dotted(loc: tuple[int | str, ...]) -> str:
    """`("users", "bob", "quotas")` -> `users.bob.quotas`; list positions as `[1]`."""
    path = ""
    for part in loc:
        if part != "[key]":  # pydantic's mark for an error in a mapping's key, not its value
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def field_at(model: type[BaseModel], loc: tuple[int | str, ...]
             ) -> tuple[FieldInfo | None, type[BaseModel], Any]:
    """The field a location names (None: no field, or a whole model inside a list or mapping),
    the model whose fields its last step chose among, and the type of the item it names inside
    the field's list or mapping (None: the location is the field itself)."""
    holder, field, kind, item = model, None, model, None
    for part in loc:
        kind = _bare(kind)
        if _is_model(kind):
            holder, field, item = kind, kind.model_fields.get(str(part)), None
            if field is None:
                return None, holder, None
            kind = field.annotation
        elif get_origin(kind) in _CONTAINERS and get_args(kind):
            arguments = get_args(kind)
            kind = item = arguments[-1] if get_origin(kind) is dict else arguments[0]
            if _is_model(_bare(kind)):
                field = None  # the error is about the whole item, not the field holding it
        else:
            break
    return field, holder, item


def expected(field: FieldInfo | None) -> str | None:
    """What a field accepts, in words: its description, else its type, choices and bounds."""
    if field is None:
        return None
    metadata = list(field.metadata) + _metadata(field.annotation)
    described = [m.description for m in [field, *metadata]
                 if isinstance(m, FieldInfo) and m.description]
    if described:
        return described[0]
    words = _kind_words(_bare(field.annotation), metadata)
    return f"{words} or null" if words and _nullable(field.annotation) else words


def _problem(item: dict[str, Any], field: FieldInfo | None, holder: type[BaseModel],
             inside: Any) -> str:
    kind = item["type"]
    if kind == "extra_forbidden":
        noun = holder.model_config.get("title") or "field"
        return f"unknown {noun}; allowed: {', '.join(holder.model_fields)}"
    if kind == "value_error":  # the validator's own words (the value may be a secret: not shown)
        return str(item["ctx"]["error"])
    accepted = expected(field)
    if inside is not None and not (field and field.description):  # one item of a list field
        accepted = _kind_words(_bare(inside), _metadata(inside))
    if kind == "missing":
        return f"is required: {accepted}" if accepted else "is required"
    got = f", got {_short(item.get('input'))}"
    if item["loc"][-1:] == ("[key]",):
        return f"names must be text{got}"
    if accepted:
        return f"must be {accepted}{got}"
    if kind in ("model_type", "dict_type"):
        return f"must be a mapping of name: value{got}"
    return f"{item['msg'][:1].lower()}{item['msg'][1:]}{got}"


def _kind_words(kind: Any, metadata: list[Any]) -> str | None:
    if get_origin(kind) is Literal:
        return "one of " + ", ".join(str(choice) for choice in get_args(kind))
    if isinstance(kind, type) and issubclass(kind, Enum):
        return "one of " + ", ".join(str(member.value) for member in kind)
    if kind is bool:
        return "true or false"
    if kind in (int, float):
        return ("a whole number" if kind is int else "a number") + _bounds(metadata)
    if kind is str:
        return "text"
    if _is_model(kind) or get_origin(kind) is dict:
        return "a mapping of name: value"
    if get_origin(kind) in (list, tuple):
        return "a list"
    return None


def _bounds(metadata: list[Any]) -> str:
    low = next((m.ge for m in metadata if isinstance(m, Ge)), None)
    high = next((m.le for m in metadata if isinstance(m, Le)), None)
    above = next((m.gt for m in metadata if isinstance(m, Gt)), None)
    below = next((m.lt for m in metadata if isinstance(m, Lt)), None)
    if low is not None and high is not None:
        return f" from {low} to {high}"
    parts = [f"{sign} {value}" for sign, value in ((">=", low), (">", above), ("<=", high),
                                                   ("<", below)) if value is not None]
    return " " + " and ".join(parts) if parts else ""


def _bare(kind: Any) -> Any:
    """The type under `Annotated[...]` and `X | None`."""
    while True:
        if get_origin(kind) is Annotated:
            kind = get_args(kind)[0]
        elif _nullable(kind):
            kind = next(arg for arg in get_args(kind) if arg is not type(None))
        else:
            return kind


def _metadata(kind: Any) -> list[Any]:
    """What is written inside `Annotated[...]` (bounds, `Field(...)`), also under `| None`."""
    found: list[Any] = []
    while True:
        if get_origin(kind) is Annotated:
            for extra in get_args(kind)[1:]:
                found += [extra, *extra.metadata] if isinstance(extra, FieldInfo) else [extra]
            kind = get_args(kind)[0]
        elif _nullable(kind):
            kind = next(arg for arg in get_args(kind) if arg is not type(None))
        else:
            return found


def _nullable(kind: Any) -> bool:
    origin = get_origin(kind)
    return (origin is Union or origin is types.UnionType) and type(None) in get_args(kind) \
        and len(get_args(kind)) == 2


def _is_model(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, BaseModel)


def _short(value: Any, limit: int = 60) -> str:
    """repr() of a value cut short: a message must not echo a megabyte back."""
    try:
        text = repr(value)
    except ValueError:  # an integer beyond Python's digit limit for str()
        return "an integer too long to show"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
