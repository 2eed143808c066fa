"""How pvcnoded and pvcapid log: one event per line, ``key=value`` (logfmt), on stderr.

- A value that contains a space, a quote, ``=`` or nothing at all is written in double
  quotes, with ``\\`` and ``"`` escaped (``error="no route to host"``), so a line splits
  into fields the same way every time. A string given as ``%r`` is quoted that way too,
  not with Python's quotes.
- Each line starts with ``<N>``, its syslog priority (sd-daemon(3): ``<3>`` error, ``<4>``
  warning, ``<6>`` info, ``<7>`` debug), when stderr is the systemd journal (systemd sets
  ``JOURNAL_STREAM`` to the device and inode of that stream) or when ``logPriority`` is
  ``always``. journald then stores each line with its priority (``journalctl -p warning``)
  and adds its own timestamp, so the line leaves the time out when it goes to the journal.
- ``logLevel`` is one of :data:`LOG_LEVELS`; any other value is refused when the config is
  read, before anything starts.

This module lives in ``schemas`` because it is the one package both daemons may import
(DESIGN.md's layers); it imports nothing of ours.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Annotated, Any, Literal, TextIO

from pydantic import BeforeValidator

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
"""Every ``logLevel`` the daemons accept (case-insensitive), least severe first."""

LogLevelName = Literal["debug", "info", "warning", "error", "critical"]


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


LogLevel = Annotated[LogLevelName, BeforeValidator(_lower)]
"""A config field holding a log level: ``INFO`` is read as ``info``; anything else is an
error naming the accepted values."""

LogPriority = Literal["auto", "always", "never"]
"""``logPriority``: prefix each line with ``<N>`` when stderr is the journal (auto), on
every line (always, for another collector that reads sd-daemon prefixes), or never."""

# sd-daemon(3) / syslog(3) priorities.
_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}

_NEEDS_QUOTES = re.compile(r'[\s"=\\]')
_KEY = re.compile(r"^[A-Za-z_][\w.\-]*=")
_SPEC = re.compile(r"%(?:%|[#0\- +]*(?:\d+|\*)?(?:\.\d+)?[diouxXeEfFgGcrsa])")

QUIET_LOGGERS = ("kazoo",)
"""Libraries whose INFO lines say nothing an operator needs: kept at WARNING."""


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a logging level (a level between two takes the lower's)."""
    for level in sorted(_PRIORITY, reverse=True):
        if levelno >= level:
            return _PRIORITY[level]
    return 7


def quote(value: str) -> str:
    """A logfmt value: as it is, or in double quotes when it would not split cleanly."""
    if value and not _NEEDS_QUOTES.search(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def render(template: str, args: tuple[Any, ...]) -> str:
    """``template % args``, with every ``key=%s``-style value quoted as logfmt wants.

    The template's words (split on spaces) are formatted one by one: a word ``key=...``
    whose text comes (partly) from arguments becomes ``key=<quoted value>``; a literal
    word stays as written. Raises TypeError/ValueError as ``%`` does on a mismatch."""
    words = template.split(" ")
    out: list[str] = []
    rest = list(args)
    for word in words:
        specs = [m for m in _SPEC.findall(word) if m != "%%"]
        if not specs:
            out.append(word.replace("%%", "%"))
            continue
        if any("*" in spec for spec in specs):
            raise TypeError("'*' widths are not supported")
        if len(rest) < len(specs):
            raise TypeError("not enough arguments for format string")
        mine, rest = rest[: len(specs)], rest[len(specs) :]
        key = _KEY.match(word)
        if key is None:
            out.append(word % tuple(mine))
        else:
            value = _str_not_repr(word[key.end() :], mine) % tuple(mine)
            out.append(key.group(0) + quote(value))
    if rest:
        raise TypeError("not all arguments converted during string formatting")
    return " ".join(out)


def _str_not_repr(template: str, args: list[Any]) -> str:
    """``%r`` of a string becomes ``%s``: logfmt's double quotes replace Python's quotes
    (``agent="ipmi 10.0.1.2"``, not ``agent="'ipmi 10.0.1.2'"``)."""
    position = iter(range(len(args)))

    def spec(match: re.Match[str]) -> str:
        if match.group(0) == "%%":
            return "%%"
        index = next(position)
        return "%s" if match.group(0) == "%r" and isinstance(args[index], str) else match.group(0)

    return _SPEC.sub(spec, template)


class LogfmtFormatter(logging.Formatter):
    """``[<N>][time ]LEVEL logger message``, the message's values quoted (logfmt)."""

    def __init__(self, *, priority_prefix: bool, timestamps: bool) -> None:
        fmt = "%(levelname)s %(name)s %(message)s"
        super().__init__(f"%(asctime)s {fmt}" if timestamps else fmt)
        self.priority_prefix = priority_prefix

    def format(self, record: logging.LogRecord) -> str:
        record.message = self._message(record)
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        text = self.formatMessage(record)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text = f"{text}\n{record.exc_text}"
        if record.stack_info:
            text = f"{text}\n{self.formatStack(record.stack_info)}"
        if not self.priority_prefix:
            return text
        # Every line of a traceback too: journald reads each line as an entry of its own.
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in text.split("\n"))

    @staticmethod
    def _message(record: logging.LogRecord) -> str:
        template = record.msg
        args = record.args
        if not isinstance(template, str) or not isinstance(args, tuple) or not args:
            return record.getMessage()
        try:
            return render(template, args)
        except (TypeError, ValueError):
            return record.getMessage()


def stderr_is_journal(stream: TextIO | None = None) -> bool:
    """True when ``stream`` (stderr) is the journal stream systemd connected: its device
    and inode are the ones in ``JOURNAL_STREAM`` (systemd.exec(5))."""
    wanted = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = wanted.partition(":")
    if not device.isdigit() or not inode.isdigit():
        return False
    try:
        info = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (info.st_dev, info.st_ino) == (int(device), int(inode))


def setup_logging(
    level: str, priority: LogPriority = "auto", stream: TextIO | None = None
) -> logging.Handler:
    """Log everything at ``level`` and above to ``stream`` (stderr), replacing the root
    logger's handlers. Returns the handler (tests read its formatter)."""
    out = stream or sys.stderr
    journal = stderr_is_journal(out)
    prefix = priority == "always" or (priority == "auto" and journal)
    handler = logging.StreamHandler(out)
    handler.setFormatter(LogfmtFormatter(priority_prefix=prefix, timestamps=not journal))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler
