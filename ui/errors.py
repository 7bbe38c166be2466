"""Engine errors become gr.Error, whose message reaches the browser and the API client as is."""

from __future__ import annotations

import functools
import logging

import gradio as gr

from engine.config import ConfigError
from engine.console.job import IllegalTransition
from engine.console.store import JobNotFound
from engine.console.users import NotYourJob

log = logging.getLogger("traindeck.ui")
USER_ERRORS = (ConfigError, IllegalTransition, JobNotFound, NotYourJob, ValueError, KeyError)


def as_gradio_errors(fn):
    """Wrap an engine call: a problem the caller can fix is a gr.Error with its message; anything
    else is logged with its traceback and reported without internals."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except USER_ERRORS as exc:
            message = str(exc) if not isinstance(exc, KeyError) or isinstance(exc, JobNotFound) \
                else f"missing {exc}"
            raise gr.Error(message, print_exception=False) from None
        except Exception as exc:
            log.exception("%s failed", fn.__name__)
            raise gr.Error(f"internal error in {fn.__name__}: {type(exc).__name__}: {exc}",
                           print_exception=False) from None

    return wrapper
