"""The kinds /api/v1/names/{plural} takes are exactly the kinds there are."""

from __future__ import annotations

import typing

from api.routes.names import Plural
from schemas import KINDS


def test_the_names_path_takes_every_kind_by_its_plural() -> None:
    assert list(typing.get_args(Plural)) == [cls.PLURAL for cls in KINDS]
