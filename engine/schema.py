"""Refusals a person can act on, from pydantic's validation errors: the one place that puts them
into words, for the job config and for every file and record that a pydantic model checks.

`ConfigError` is what every bad config, record or settings file raises: one line per problem,
each naming the field, the problem and what is allowed, and `fields` saying which fields they
are about (the form outlines those, without reading the words). What a field accepts is read off
the field itself (its type, `Literal` choices, `ge`/`le` bounds, or its `description`), so it is
declared once.

- `refusal`: a job config's errors (a flat pydantic dataclass), one problem per field.
- `validated` / `describe_errors`: a file's or record's errors (nested models), one line per
  problem naming the place and the field as a dotted path (`users.bob.quotas.max_gpus`,
  `sbatch_extra[1]`).
"""

from __future__ import annotations

import difflib
import types
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

AUTO = "auto"


@dataclass(frozen=True)
class Problem:
    """One thing wrong, and the fields it is about (empty: the config as a whole)."""

    message: str
    fields: tuple[str, ...] = ()


class ConfigError(ValueError):
    """One or more problems with a submitted config; str() lists them all, one per line.
    `fields`: the fields they are about, in the order first named."""

    def __init__(self, problems: list[str | Problem] | str | Problem,
                 fields: tuple[str, ...] = ()):
        items = [problems] if isinstance(problems, (str, Problem)) else list(problems)
        self.problems = [p.message if isinstance(p, Problem) else p for p in items]
        named = [*fields, *(f for p in items if isinstance(p, Problem) for f in p.fields)]
        self.fields = tuple(dict.fromkeys(named))
        super().__init__("\n".join(self.problems))


def shorten(value: Any, limit: int = 60) -> str:
    """repr() of a submitted value, cut short: error messages must not echo a megabyte back."""
    try:
        text = repr(value)
    except ValueError:  # an int past Python's digit limit
        return f"an integer of {value.bit_length()} bits"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def number_text(value: float) -> str:
    """A number as a person reads it: whole numbers exactly (up to 18 digits), others short."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e18:
        value = int(value)
    if isinstance(value, int):
        if abs(value) < 10**18:
            return str(value)
        try:
            return f"{float(value):.3g}"
        except OverflowError:
            return f"an integer of {value.bit_length()} bits"
    return f"{value:g}"


def closest_name(name: Any, known: list[str]) -> str:
    """' (did you mean x?)' for a misspelt field name, or nothing."""
    near = difflib.get_close_matches(str(name)[:64], known, n=1, cutoff=0.75)
    return f" (did you mean {near[0]}?)" if near else ""


# ---- what a field's annotation admits ----------------------------------------------------------

def _members(annotation: Any) -> list[Any]:
    """The alternatives of an annotation, Annotated wrappers removed."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):
        return [m for arg in get_args(annotation) for m in _members(arg)]
    return [annotation]


def choices_of(annotation: Any) -> tuple[Any, ...]:
    """The values of a choice field (every alternative a `Literal`); () for any other field,
    "auto" of a number or flag included."""
    members = _members(annotation)
    if not all(get_origin(m) is Literal for m in members):
        return ()
    return tuple(value for member in members for value in get_args(member))


def admits_auto(annotation: Any) -> bool:
    """A number or flag that may also be "auto" (resolved at submit from the machine)."""
    return not choices_of(annotation) and any(
        get_origin(m) is Literal and AUTO in get_args(m) for m in _members(annotation))


def admits_none(annotation: Any) -> bool:
    return type(None) in _members(annotation)


def kind_of(annotation: Any) -> type:
    """The field's value type: str for a choice, else its first plain type (object if none)."""
    if choices_of(annotation):
        return str
    plain = [m for m in _members(annotation) if m in (str, int, float, bool)]
    return plain[0] if plain else object


KIND_WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


def allowed_words(annotation: Any) -> str:
    words = KIND_WORDS.get(kind_of(annotation), "a valid value")
    if admits_auto(annotation):
        words += ' or "auto"'
    if admits_none(annotation):
        words += " or null"
    return words


# ---- pydantic's errors in plain words ----------------------------------------------------------

UNKNOWN = ("extra_forbidden", "unexpected_keyword_argument")
BOUNDS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="),
          "less_than": ("lt", "<"), "less_than_equal": ("le", "<=")}


def refusal(exc: ValidationError, model: Any) -> ConfigError:
    """`exc` as a ConfigError: one problem per field named in it, each carrying that field.
    `model`: the pydantic model or dataclass validated (its fields say what is allowed)."""
    fields = model.__pydantic_fields__
    by_field: dict[str, list[dict[str, Any]]] = {}
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else ""
        by_field.setdefault(name, []).append(error)
    problems = []
    for name, errors in by_field.items():
        if name in fields:
            message = field_problem(name, fields[name].annotation, errors)
        elif errors[0]["type"] in UNKNOWN:
            message = f"unknown field {shorten(name)}{closest_name(name, list(fields))}"
        else:
            message = f"{name or 'config'}: {errors[0]['msg']}"
        problems.append(Problem(message, (name,) if name else ()))
    return ConfigError(problems)


def field_problem(name: str, annotation: Any, errors: list[dict[str, Any]]) -> str:
    """The one problem to tell about a field: a broken bound or rule says more than a type
    mismatch (a union field reports one error per alternative it tried)."""
    for error in errors:
        kind, ctx, value = error["type"], error.get("ctx") or {}, error["input"]
        if kind in BOUNDS:
            key, sign = BOUNDS[kind]
            return f"{name} must be {sign} {number_text(ctx[key])}, got {number_text(value)}"
        if kind == "string_too_long":
            return f"{name} must be at most {ctx['max_length']} characters, got {len(value)}"
        if kind == "string_unicode":
            return f"{name} must be Unicode text; it holds a lone surrogate"
        if kind == "missing":
            return f"{name} is required"
        if ctx.get("rule"):  # a PydanticCustomError of ours: its message says it all
            return f"{name} {error['msg']}"
    value = errors[0]["input"]
    if choices := choices_of(annotation):
        return f"{name} must be one of {', '.join(map(str, choices))}; got {shorten(value)}"
    return f"{name} must be {allowed_words(annotation)}, got {shorten(value)}"


# ---- a file's or record's errors, by dotted path ------------------------------------------------

_CONTAINERS = (dict, list, tuple)
Model = TypeVar("Model", bound=BaseModel)


def validated(model: type[Model], data: Any, where: str) -> Model:
    """`data` read into `model`, or a ConfigError with every problem in plain words."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, where, model)) from None


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
    got = f", got {shorten(item.get('input'))}"
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
    if kind in KIND_WORDS:
        return KIND_WORDS[kind] + (_bounds(metadata) if kind in (int, float) else "")
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
