"""Turning errors into messages on the page.

A :class:`compression.errors.CompressionError` is something the visitor can fix: its message (which
says what to do) is shown with ``gr.Error``. Anything else is a bug or an environment failure: it is
logged with its traceback on the server and the page shows a short generic message, never a
traceback. Either way the page stays usable.
"""

from __future__ import annotations

import functools
import inspect
import logging

import gradio as gr

from compression.errors import CompressionError

logger = logging.getLogger("dashboard")

GENERIC = ("Something went wrong on the server ({kind}). The page is still usable; the details are in "
           "the server log. Try again, or change the settings")


def as_gr_error(error: BaseException) -> gr.Error:
    """The ``gr.Error`` to raise for ``error`` (logged with traceback unless it is a user error)."""
    if isinstance(error, gr.Error):
        return error
    if isinstance(error, CompressionError):
        return gr.Error(str(error))
    logger.error("dashboard handler failed", exc_info=(type(error), error, error.__traceback__))
    return gr.Error(GENERIC.format(kind=type(error).__name__))


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
