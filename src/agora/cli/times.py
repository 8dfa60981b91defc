"""Moments typed on the command line: '30d', '12h', '2027-01-31' or a full ISO 8601 time."""

from __future__ import annotations

import datetime as dt
import re

import typer

_DURATION = re.compile(r"^\s*(\d{1,6})\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_FORMS = "'30d', '12h', '2w', '2027-01-31' or '2027-01-31T12:00:00Z'"


def _duration(text: str) -> dt.timedelta | None:
    match = _DURATION.match(text)
    if not match:
        return None
    amount, unit = match.groups()
    return dt.timedelta(**{_UNITS[unit]: int(amount)})


def _absolute(text: str, option: str) -> dt.datetime:
    """A date is midnight UTC; a time without a zone is taken in this machine's zone."""
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
            return dt.datetime.fromisoformat(text.strip()).replace(tzinfo=dt.UTC)
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise typer.BadParameter(
            f"{text!r} is not a time: use {_FORMS}", param_hint=option
        ) from exc
    return moment if moment.tzinfo is not None else moment.astimezone()


def future(text: str, option: str = "--expires") -> dt.datetime:
    """'30d' is 30 days from now; a date or time is taken as given."""
    delta = _duration(text)
    if delta is not None:
        return dt.datetime.now(dt.UTC) + delta
    return _absolute(text, option)


def past(text: str, option: str) -> dt.datetime:
    """'7d' is seven days ago; a date or time is taken as given."""
    delta = _duration(text)
    if delta is not None:
        return dt.datetime.now(dt.UTC) - delta
    return _absolute(text, option)


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
