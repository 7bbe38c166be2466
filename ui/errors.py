"""Engine errors become gr.Error, whose message reaches the browser and the API client as is."""

from __future__ import annotations

import errno
import functools
import logging

import gradio as gr

from engine.config import ConfigError
from engine.console.people.users import NotYourJob
from engine.console.records.job import IllegalTransition
from engine.console.records.store import JobNotFound

log = logging.getLogger("traindeck.ui")
USER_ERRORS = (ConfigError, IllegalTransition, JobNotFound, NotYourJob, ValueError, KeyError)
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # the workspace's disk (or the user's quota) is full


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
        except OSError as exc:
            if exc.errno not in NO_SPACE:
                raise internal_error(fn.__name__, exc) from None
            raise gr.Error(f"{fn.__name__}: the workspace's disk is full ({exc.strerror}); "
                           f"this could not be recorded. Free some space and try again.",
                           print_exception=False) from None
        except Exception as exc:
            raise internal_error(fn.__name__, exc) from None

    return wrapper


def internal_error(name: str, exc: Exception) -> gr.Error:
    """A bug: logged with its traceback, reported without internals."""
    log.exception("%s failed", name)
    return gr.Error(f"internal error in {name}: {type(exc).__name__}: {exc}",
                    print_exception=False)
