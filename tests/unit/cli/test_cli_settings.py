"""Where pvcctl finds the API: flags, environment, contexts, the file's top level, default."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner, Result

from cli.errors import InputError
from cli.settings import DEFAULT_SERVER, read_config, resolve, write_config


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


def pvcctl_config(tmp_path: Path, *args: str) -> Result:
    from cli.main import cli

    path = tmp_path / "pvc" / "config.yaml"
    return CliRunner().invoke(cli, ["--config", str(path), "config", *args])


def test_config_contexts_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "pvc" / "config.yaml"
    created = pvcctl_config(tmp_path, "set-context", "prod", "--server", "https://p:7370")
    assert created.exit_code == 0 and created.output == 'Context "prod" created.\n'
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert pvcctl_config(tmp_path, "set-context", "lab", "--server", "http://l:1").exit_code == 0
    changed = pvcctl_config(tmp_path, "set-context", "prod", "--token", "s3cret")
    assert changed.output == 'Context "prod" modified.\n'
    switched = pvcctl_config(tmp_path, "use-context", "prod")
    assert switched.output == 'Switched to context "prod".\n'
    listed = pvcctl_config(tmp_path, "get-contexts")
    assert [line.split() for line in listed.output.splitlines()] == [
        ["CURRENT", "NAME", "SERVER", "TOKEN"],
        ["lab", "http://l:1", "no"],
        ["*", "prod", "https://p:7370", "yes"],
    ]
    chosen = resolve(None, str(path))
    assert (chosen.server, chosen.token, chosen.context) == ("https://p:7370", "s3cret", "prod")
    assert pvcctl_config(tmp_path, "set-context", "prod", "--token", "").exit_code == 0
    assert resolve(None, str(path)).token is None
    assert not [p for p in path.parent.iterdir() if p.name != "config.yaml"]  # no temp left


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("use-context", "nope"), "no context 'nope'"),
        (("set-context", "new"), "is new: give --server URL"),
        (("set-context", "x", "--server", "ftp://x"), "must be an http:// or https:// URL"),
    ],
)
def test_config_bad_input_changes_nothing(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    assert pvcctl_config(tmp_path, "set-context", "a", "--server", "http://a:1").exit_code == 0
    path = tmp_path / "pvc" / "config.yaml"
    before = path.read_text()
    result = pvcctl_config(tmp_path, *args)
    assert result.exit_code == 2 and message in result.output
    assert path.read_text() == before


def test_write_config_is_atomic_and_private(tmp_path: Path) -> None:
    path = tmp_path / "new" / "config.yaml"
    write_config(path, {"current-context": "a", "contexts": {"a": {"server": "http://a:1"}}})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_config(str(path))[1]["current-context"] == "a"
    # A folder that cannot be made (a file is in the way): an InputError, nothing half-written.
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot write the config file"):
        write_config(blocker / "config.yaml", {})
    assert blocker.read_text() == "x"


def test_version_says_unknown_for_a_server_without_the_version_route() -> None:
    from cli.client import ApiClient
    from cli.common import Context
    from cli.config_commands import version

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/nodes":
            return httpx.Response(200, json={"items": []})
        return httpx.Response(404, json={"message": "Not Found", "reason": "NotFound"})

    client = ApiClient("http://old:7370")
    client._http = httpx.Client(base_url="http://old:7370", transport=httpx.MockTransport(answer))
    context = Context(None, None, None, None)
    context._client = client
    result = CliRunner().invoke(version, [], obj=context)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1].startswith("Server: unknown (Not Found (404 NotFound)")
