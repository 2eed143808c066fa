"""The daemons' log lines: logfmt quoting, journald priorities, and the accepted levels."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from api.config import Settings
from controllers.config import DaemonConfig
from schemas.daemon_logging import LOG_LEVELS, quote, render, setup_logging, stderr_is_journal


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_values_with_spaces_quotes_or_equals_are_quoted() -> None:
    line = render(
        "event=fence_failed node=%s error=%r retry_in=%.2fs note=%s empty=%s n=%d",
        ("n1", OSError('no "route"'), 1.5, "a=b", "", 3),
    )
    assert line == (
        'event=fence_failed node=n1 error="OSError(\'no \\"route\\"\')" retry_in=1.50s '
        'note="a=b" empty="" n=3'
    )
    assert quote("plain") == "plain" and quote("two\nlines") == '"two\\nlines"'
    # A string's repr is quoted as logfmt quotes, not as Python does.
    assert render("event=fence_start agent=%r", ("ipmi 10.0.1.2",)) == (
        'event=fence_start agent="ipmi 10.0.1.2"'
    )
    assert render("why=%r", ("libvirt's driver",)) == 'why="libvirt\'s driver"'


def test_a_template_it_cannot_read_falls_back_to_percent_formatting(
    restore_root_logger: None,
) -> None:
    out = io.StringIO()
    setup_logging("info", "never", stream=out)
    logging.getLogger("t").info("event=x %(who)s", {"who": "me"})
    logging.getLogger("t").info("event=y 100%% done=%s", "yes")
    assert out.getvalue().splitlines()[0].endswith("INFO t event=x me")
    assert out.getvalue().splitlines()[1].endswith("INFO t event=y 100% done=yes")


def test_priority_prefix_on_every_line_when_asked(restore_root_logger: None) -> None:
    out = io.StringIO()
    setup_logging("debug", "always", stream=out)
    log = logging.getLogger("pvcnoded")
    log.debug("event=a")
    log.warning("event=b")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("event=c")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("<7>") and lines[1].startswith("<4>")
    # The traceback's lines carry the error's priority too (each is a journal entry).
    assert all(line.startswith("<3>") for line in lines[2:]) and len(lines) > 4
    assert "ValueError: boom" in lines[-1]


def test_level_filters_and_plain_lines_keep_the_timestamp(restore_root_logger: None) -> None:
    out = io.StringIO()
    setup_logging("WARNING", "auto", stream=out)  # a StringIO is not the journal
    logging.getLogger("p").info("event=hidden")
    logging.getLogger("p").error("event=shown")
    (line,) = out.getvalue().splitlines()
    # The format bench/daemonlogs.py parses: date, time, LEVEL, logger, message.
    assert line[:4].isdigit() and line.split(" ", 2)[2] == "ERROR p event=shown"


def test_journal_stream_is_recognised_by_device_and_inode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_root_logger: None
) -> None:
    with (tmp_path / "stderr").open("w") as stream:
        info = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino + 1}")
        assert not stderr_is_journal(stream)  # another file
        monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
        assert stderr_is_journal(stream)
        setup_logging("info", "auto", stream=stream)
        logging.getLogger("pvcnoded").warning("event=journal")
    # The journal: the priority, and no timestamp (journald records the time itself).
    assert (tmp_path / "stderr").read_text() == "<4>WARNING pvcnoded event=journal\n"
    assert not stderr_is_journal(io.StringIO())


@pytest.mark.parametrize("model", [DaemonConfig, Settings])
def test_every_documented_level_is_accepted_and_others_refused(
    model: type[DaemonConfig | Settings],
) -> None:
    for level in (*LOG_LEVELS, "INFO", "Debug"):
        assert model.model_validate({"logLevel": level}).log_level == level.lower()
    with pytest.raises(ValidationError) as err:
        model.model_validate({"logLevel": "verbose"})
    assert "'debug', 'info', 'warning', 'error' or 'critical'" in str(err.value)
