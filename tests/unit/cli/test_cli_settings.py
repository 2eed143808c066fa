"""Where pvcctl finds the API: flags, environment, contexts, the file's top level, default."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cli.errors import InputError
from cli.settings import DEFAULT_SERVER, resolve


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("PVC_SERVER", "PVC_TOKEN", "PVC_CONTEXT", "PVC_CA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "empty"))


def config(tmp_path: Path, doc: object) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_defaults_without_a_config_file() -> None:
    assert resolve(None, None).server == DEFAULT_SERVER


def test_precedence_flag_env_context_top(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    path = config(
        tmp_path,
        {
            "server": "http://top:1",
            "token": "top-token",
            "current-context": "a",
            "contexts": {
                "a": {"server": "https://a:1", "ca": str(ca)},
                "b": {"server": "https://b:1", "token": "b-token"},
            },
        },
    )
    chosen = resolve(None, path)
    assert (chosen.server, chosen.token, chosen.ca, chosen.context) == (
        "https://a:1",
        "top-token",
        str(ca),
        "a",
    )
    assert resolve(None, path, "b").token == "b-token"
    monkeypatch.setenv("PVC_CONTEXT", "b")
    assert resolve(None, path).server == "https://b:1"
    assert resolve(None, path, "a").server == "https://a:1"  # the flag beats the env
    monkeypatch.setenv("PVC_SERVER", "http://env:1")
    monkeypatch.setenv("PVC_TOKEN", "env-token")
    assert (resolve(None, path).server, resolve(None, path).token) == ("http://env:1", "env-token")
    assert resolve("http://flag:1", path, token="t").server == "http://flag:1"
    assert resolve("http://flag:1", path, token="t").token == "t"


@pytest.mark.parametrize(
    ("doc", "context", "message"),
    [
        ({"contexts": {"a": {}}}, "nope", "context 'nope' is not in"),
        ({"contexts": ["a"]}, None, "'contexts' must be a mapping"),
        ({"server": "ftp://x"}, None, "must be an http:// or https:// URL"),
        ({"server": "http://x", "ca": "/no/such/ca.pem"}, None, "CA file"),
        (["not", "a", "mapping"], None, "expected a mapping"),
    ],
)
def test_bad_configs_are_input_errors(
    tmp_path: Path, doc: object, context: str | None, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        resolve(None, config(tmp_path, doc), context)


def test_progress_is_silent_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    from cli.progress import progress

    with progress("waiting") as update:
        update("still")
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "")
