"""Refusals a person can act on, from pydantic's validation errors.

`ConfigError` is what every bad config, record or settings file raises: one line per problem,
each naming the field, the problem and what is allowed, and `fields` saying which fields they
are about (the form outlines those, without reading the words). `refusal` turns a pydantic
`ValidationError` into one, for any pydantic model or dataclass whose fields carry their types,
bounds and `Literal` choices.
"""

from __future__ import annotations

import difflib
import types
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import ValidationError

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


def allowed_words(annotation: Any) -> str:
    words = {bool: "true or false", int: "a whole number", float: "a number",
             str: "text"}.get(kind_of(annotation), "a valid value")
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
