"""The words users type for kinds (``vm``, ``vms``, ``VirtualMachine``), without the models.

Shell completion and ``--help`` need only these words, and importing ``schemas`` (pydantic
models of every kind) costs more than the rest of pvcctl's start together. The same words
are on the model classes (``KIND``, ``PLURAL``, ``SHORT_NAMES``); a unit test keeps the two
equal, and commands that act on objects still resolve kinds through ``schemas``.
"""

from __future__ import annotations

from typing import NamedTuple


class KindWords(NamedTuple):  # not a dataclass: dataclasses (and copy) cost each <TAB> ~3 ms
    kind: str
    plural: str
    short_names: tuple[str, ...]

    # As on the model classes: commands that only name a kind (get) take either.
    @property
    def KIND(self) -> str:
        return self.kind

    @property
    def PLURAL(self) -> str:
        return self.plural


KIND_WORDS: tuple[KindWords, ...] = (
    KindWords("VirtualMachine", "vms", ("vm", "vms", "virtualmachine", "virtualmachines")),
    KindWords("Node", "nodes", ("node", "nodes", "no")),
    KindWords("Network", "networks", ("net", "nets", "network", "networks")),
    KindWords(
        "StoragePool", "storagepools", ("storagepool", "storagepools", "pool", "pools", "sp")
    ),
    KindWords("Cluster", "clusters", ("cluster", "clusters")),
)


def unknown_kind(word: str) -> str:
    """The message for a kind nobody knows (as ``schemas.kind_for`` words it)."""
    known = ", ".join(f"{k.plural} ({k.kind})" for k in KIND_WORDS)
    return f"unknown kind {word!r}; known kinds: {known}"


def kind_words_for(word: str) -> KindWords | None:
    """The kind a user typed (any case), or None; as ``schemas.kind_for`` resolves it."""
    lowered = word.lower()
    for kind in KIND_WORDS:
        if lowered in (kind.kind.lower(), kind.plural, *kind.short_names):
            return kind
    return None
