"""Turning errors into messages on the page.

A :class:`compression.errors.CompressionError` is something the visitor can fix: its message (which
says what to do) is shown. Anything else is a bug or an environment failure: it is logged with its
traceback on the server and the page shows a short generic message, never a traceback. Either way
the page stays usable.

Two layers: handlers decorated with :func:`user_errors` raise a readable ``gr.Error`` (what the
handler tests and API clients see); :func:`as_toast` wraps a handler where it is wired to the page so
that the message appears as a warning toast (and, where the event has one, on its status line) while
every other output keeps its value (``gr.skip()``): no red "Error" pill replaces a widget.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
from pathlib import Path

import gradio as gr

from compression.errors import CompressionError

logger = logging.getLogger("dashboard")

GENERIC = ("Something went wrong on the server ({kind}). The page is still usable; the details are in "
           "the server log. Try again, or change the settings")


def as_gr_error(error: BaseException) -> gr.Error:
    """The ``gr.Error`` to raise for ``error`` (logged with traceback unless it is a user error); a
    user error's message shows file and folder names, not their server paths (:func:`hide_paths`)."""
    if isinstance(error, gr.Error):
        return error
    if isinstance(error, CompressionError):
        return gr.Error(hide_paths(str(error)))
    logger.error("dashboard handler failed", exc_info=(type(error), error, error.__traceback__))
    return gr.Error(GENERIC.format(kind=type(error).__name__))


def message_for(error: BaseException) -> str:
    """The text shown for ``error`` (see :func:`as_gr_error`), with server folders reduced to their
    last part so that no message shows where files live on the server."""
    return str(as_gr_error(error).message)


def hide_paths(text: str) -> str:
    """``text`` with absolute paths (``/a/b/c.jsonl``) shortened to their file or folder name."""
    return _ABSOLUTE.sub(lambda m: m.group(1) + Path(m.group(2)).name, text)


_ABSOLUTE = re.compile(r"(^|[\s`'\"(=])((?:/[^/\s`'\"():,]+){2,})")


def as_toast(fn, outputs: int = 1, status: int | None = None):
    """Wrap handler ``fn`` (a function or a generator) for the page: an exception becomes a warning
    toast with :func:`message_for`'s text; the outputs are left unchanged (``gr.skip()``), except
    output number ``status`` (a status line, when given), which shows ``"⚠ <message>"``.

    ``outputs``: how many outputs the event has. Returns the wrapped callable (same signature, so
    gradio still injects ``gr.Request``).
    """
    def fallback(error):
        message = message_for(error)
        gr.Warning(message)
        if status is None:
            return gr.skip()
        values = [gr.skip()] * outputs
        values[status] = f"⚠ {message}"
        return tuple(values) if outputs > 1 else values[0]

    if inspect.isgeneratorfunction(fn) or inspect.isgeneratorfunction(getattr(fn, "func", None)):
        @functools.wraps(fn)
        def generator(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - shown as a toast, the page stays as it was
                yield fallback(error)
        return generator

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - shown as a toast, the page stays as it was
            return fallback(error)
    return wrapper


def user_errors(fn):
    """Decorator for event handlers (plain functions and generators): every exception leaves as a
    readable ``gr.Error`` (see :func:`as_gr_error`)."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - every failure becomes a message on the page
                raise as_gr_error(error) from None
        return generator

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - every failure becomes a message on the page
            raise as_gr_error(error) from None
    return wrapper


def positive_int(value, what: str, *, allow_none: bool = False) -> int | None:
    """``value`` from a form field (a number, a numeric string, or empty) as a positive ``int``.

    ``what`` names the field in the message, e.g. ``"batch size"``. Whole floats such as ``8.0``
    (what ``gr.Number`` and ``gr.Slider`` send) are accepted. An empty field (``None`` or ``""``)
    gives ``None`` when ``allow_none`` is true.

    Raises:
        CompressionError: the field is empty (and ``allow_none`` is false), not a number, not whole,
            or not positive; the message names the field and says what to type.
    """
    if value is None or value == "":
        if allow_none:
            return None
        raise CompressionError(f"{what} is empty: give a positive whole number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise CompressionError(f"{what} must be a positive whole number (got {value!r})") from None
    if not number.is_integer() or number <= 0:
        raise CompressionError(f"{what} must be a positive whole number (got {value})")
    return int(number)
