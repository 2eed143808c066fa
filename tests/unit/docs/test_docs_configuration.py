"""docs/configuration.md lists every key pvcnoded and pvcapid accept and every global
option of pvcctl, and nothing they do not accept: compared with the config models (their
camelCase aliases) and click's options, both ways."""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path

import click
import pytest
from pydantic import BaseModel

import controllers.config
from api.config import Settings
from cli.main import cli
from controllers.config import DaemonConfig

DOC = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"


def section_keys(heading: str) -> set[str]:
    """The backticked names in the first column of the tables under ``## heading``."""
    text = DOC.read_text()
    match = re.search(rf"^## {re.escape(heading)}\b.*?$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"no '## {heading}' section in {DOC}"
    keys: set[str] = set()
    for line in match.group(1).splitlines():
        cells = line.split("|")
        if line.startswith("|") and len(cells) > 2 and not set(cells[1].strip()) <= {"-"}:
            keys.update(re.findall(r"`([^`]+)`", cells[1]))
    return keys


def nested_model(annotation: object) -> type[BaseModel] | None:
    """The model a field holds (also when optional), if any; None for values and lists."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        return models[0] if len(models) == 1 else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def accepted_keys(model: type[BaseModel], module: types.ModuleType, prefix: str = "") -> set[str]:
    """Every key ``model`` reads, dotted. A section the daemon's own config module defines
    is documented key by key; a resource type used as it is (``fence``, the Node's
    FenceConfig, documented in resources.md) and a list are one key each."""
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        key = prefix + (field.alias or name)
        inner = nested_model(field.annotation)
        if inner is not None and inner.__module__ == module.__name__:
            keys |= accepted_keys(inner, module, key + ".")
        else:
            keys.add(key)
    return keys


@pytest.mark.parametrize(
    ("heading", "model", "module"),
    [
        ("pvcnoded", DaemonConfig, controllers.config),
        ("pvcapid", Settings, __import__("api.config").config),
    ],
)
def test_daemon_tables_match_the_config_models(
    heading: str, model: type[BaseModel], module: types.ModuleType
) -> None:
    documented, accepted = section_keys(heading), accepted_keys(model, module)
    assert accepted - documented == set(), f"accepted by {heading} but not documented"
    assert documented - accepted == set(), f"documented for {heading} but not accepted"


def test_pvcctl_table_matches_its_global_options() -> None:
    with click.Context(cli, **cli.context_settings) as ctx:
        options = {
            opt
            for param in cli.get_params(ctx)
            if isinstance(param, click.Option)
            for opt in (*param.opts, *param.secondary_opts)
        }
    documented = {k.split()[0] for k in section_keys("pvcctl") if k.startswith("-")}
    assert options - documented == set(), "pvcctl options not documented"
    assert documented - options == set(), "documented options pvcctl does not have"


def test_the_accepted_log_levels_are_the_documented_ones() -> None:
    from schemas.daemon_logging import LOG_LEVELS

    text = DOC.read_text()
    listed = ", ".join(f"`{level}`" for level in LOG_LEVELS[:-1]) + f", `{LOG_LEVELS[-1]}`"
    assert listed in text


def test_every_environment_variable_pvcapid_reads_is_documented() -> None:
    from api.config import _ENV

    text = DOC.read_text()
    section = text[text.index("## pvcapid") : text.index("## pvcctl")]
    assert [env for env in _ENV if f"`{env}`" not in section] == []
