"""pvcapid's token config: hash-token's line is a config that authenticates that token only;
a malformed hash or a token in clear is refused or warned about without printing it."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import pytest

from api import server
from api.config import SettingsError, load_settings
from api.tokens import TokenTable
from schemas.daemon_logging import setup_logging

TOKEN = "7f3a9c1e5b2d4f6a8c0e2b4d6f8a0c2e"


def hashed_config(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    monkeypatch.setattr("sys.stdin", io.StringIO(TOKEN + "\n"))
    assert server.main(["hash-token", "--name", "ci-bot", "--role", "readonly"]) == 0
    return capsys.readouterr().out


def test_hash_token_prints_a_line_that_authenticates_that_token_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    line = hashed_config(monkeypatch, capsys)
    assert TOKEN not in line and line.startswith("- {name: ci-bot, role: readonly, hash: ")
    config = tmp_path / "pvcapid.yaml"
    config.write_text("tokens:\n  " + line)
    table = TokenTable(load_settings(config).tokens)
    caller = table.identify(TOKEN.encode())
    assert caller is not None and (caller.name, caller.role) == ("ci-bot", "readonly")
    assert table.identify(TOKEN[:-1].encode()) is None
    assert table.identify(b"") is None


def test_hash_token_refuses_a_short_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert server.main(["hash-token"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "at least 16 characters" in captured.err


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"hash": "sha256:" + "ab" * 31}, "sha256: and 64 lowercase hex digits"),
        ({"hash": "md5:" + "ab" * 32}, "sha256: and 64 lowercase hex digits"),
        ({"hash": "sha256:" + "ab" * 32, "token": TOKEN}, "either hash (preferred) or token"),
        ({"role": "admin"}, "either hash (preferred) or token"),
        ({"token": TOKEN, "name": "two words"}, "tokens.0.name"),
    ],
)
def test_bad_token_entries_are_refused_without_the_secret(
    tmp_path: Path, entry: dict[str, str], message: str
) -> None:
    config = tmp_path / "pvcapid.yaml"
    config.write_text("tokens:\n  - {" + ", ".join(f'{k}: "{v}"' for k, v in entry.items()) + "}\n")
    with pytest.raises(SettingsError, match=re.escape(message)) as caught:
        load_settings(config)
    assert "ab" * 31 not in str(caught.value) and TOKEN not in str(caught.value)


def test_a_token_in_clear_still_works_and_is_warned_about_at_start(tmp_path: Path) -> None:
    config = tmp_path / "pvcapid.yaml"
    config.write_text(f"tokens:\n  - {{name: old, role: admin, token: {TOKEN}}}\n")
    settings = load_settings(config)
    caller = TokenTable(settings.tokens).identify(TOKEN.encode())
    assert caller is not None and caller.name == "old"
    out = io.StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        setup_logging("info", "never", out)  # as pvcapid's main sets it up
        server.warn_of_clear_tokens(settings)
    finally:  # setup_logging replaces the root logger's handlers: put them back
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
    logged = out.getvalue()
    assert "event=clear_token name=old" in logged and TOKEN not in logged
