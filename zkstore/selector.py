"""Label selectors as kubectl writes them: ``app=web,tier!=db,env``."""

from __future__ import annotations

from dataclasses import dataclass


class InvalidSelector(ValueError):
    pass


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "exists", "!exists"
    value: str = ""

    def matches(self, labels: dict[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!exists":
            return self.key not in labels
        if self.op == "=":
            return labels.get(self.key) == self.value
        return labels.get(self.key) != self.value


@dataclass(frozen=True)
class Selector:
    requirements: tuple[Requirement, ...]

    def matches(self, labels: dict[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


def parse_selector(text: str) -> Selector:
    reqs: list[Requirement] = []
    for raw in text.split(","):
        term = raw.strip()
        if not term:
            continue
        if "!=" in term:
            key, value = term.split("!=", 1)
            reqs.append(Requirement(key.strip(), "!=", value.strip()))
        elif "==" in term or "=" in term:
            key, value = term.split("==", 1) if "==" in term else term.split("=", 1)
            reqs.append(Requirement(key.strip(), "=", value.strip()))
        elif term.startswith("!"):
            reqs.append(Requirement(term[1:].strip(), "!exists"))
        else:
            reqs.append(Requirement(term, "exists"))
        if not reqs[-1].key:
            raise InvalidSelector(f"invalid label selector {text!r}: empty key in {term!r}")
    return Selector(tuple(reqs))
