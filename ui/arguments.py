"""An endpoint's arguments are checked against its type hints before it runs: a client may send
any JSON in any argument, and what follows the boundary may rely on the hints being true."""

from __future__ import annotations

import functools
import inspect

import gradio as gr
from pydantic import ConfigDict, TypeAdapter, ValidationError

from engine.config import shorten

# JSON types as they are: "5" is not a number and 1 is not true (no guessing at a caller's intent).
STRICT = ConfigDict(strict=True)


def checked_arguments(fn):
    """Wrap an endpoint: an argument of the wrong type is a gr.Error naming it, what it must be
    and what came; the endpoint runs only with arguments its hints allow."""
    signature = inspect.signature(fn)
    adapters = {name: TypeAdapter(parameter.annotation, config=STRICT)
                for name, parameter in signature.parameters.items()
                if parameter.annotation not in (gr.Request, inspect.Parameter.empty)}

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        for name, value in signature.bind(*args, **kwargs).arguments.items():
            if name in adapters:
                try:
                    adapters[name].validate_python(value)
                except ValidationError as exc:
                    raise gr.Error(f"{name}: {expected(exc)}, got {shorten(value)}",
                                   print_exception=False) from None
        return fn(*args, **kwargs)

    return wrapper


def expected(exc: ValidationError) -> str:
    """What the argument must be, in pydantic's words ("input should be a valid string"); for a
    value that may be null, its other type (null is plainly not what was wrong)."""
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    reasons = [e["msg"] for e in errors if e["type"] != "none_required"] or [errors[0]["msg"]]
    return " or ".join(dict.fromkeys(reason[0].lower() + reason[1:] for reason in reasons))
