"""pvcctl starts fast enough for shell completion: building its command tree imports none of
the heavy libraries, and the kind words it completes from are the schemas' own."""

from __future__ import annotations

import subprocess
import sys

from cli.kindwords import KIND_WORDS, kind_words_for
from schemas import KINDS, kind_for

HEAVY = ("httpx", "rich", "yaml", "pydantic", "jsonpath_ng", "schemas", "ssl", "difflib")


def test_the_command_tree_imports_nothing_heavy() -> None:
    probe = f"import sys, cli.main\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=30
    ).stdout.split()
    assert loaded == [], f"imported while building the command tree: {loaded}"


def test_kind_words_are_the_schemas_own() -> None:
    assert [(k.kind, k.plural, k.short_names) for k in KIND_WORDS] == [
        (cls.KIND, cls.PLURAL, cls.SHORT_NAMES) for cls in KINDS
    ]
    for cls in KINDS:
        for word in (cls.KIND, cls.KIND.upper(), cls.PLURAL, *cls.SHORT_NAMES):
            found = kind_words_for(word)
            assert found is not None and found.kind == kind_for(word).KIND
    assert kind_words_for("flavour") is None
