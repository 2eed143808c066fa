"""Label selectors as kubectl writes them: ``app=web,tier!=db,env,!legacy``."""

from __future__ import annotations

import pytest

from zkstore import InvalidSelector, parse_selector
from zkstore.selector import Requirement


def test_parse_each_kind_of_term() -> None:
    selector = parse_selector("a=b,c!=d,e,!f")
    assert selector.requirements == (
        Requirement("a", "=", "b"),
        Requirement("c", "!=", "d"),
        Requirement("e", "exists"),
        Requirement("f", "!exists"),
    )


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"a": "b", "e": "1"}, True),
        ({"a": "b", "c": "x", "e": ""}, True),
        ({"a": "b", "c": "d", "e": "1"}, False),  # c!=d fails
        ({"a": "z", "e": "1"}, False),  # a=b fails
        ({"e": "1"}, False),  # a missing
        ({"a": "b"}, False),  # e missing
        ({"a": "b", "e": "1", "f": "1"}, False),  # !f fails
    ],
)
def test_matches_requires_every_term(labels: dict[str, str], expected: bool) -> None:
    assert parse_selector("a=b,c!=d,e,!f").matches(labels) is expected


def test_double_equals_means_equals() -> None:
    selector = parse_selector("app==web")
    assert selector.requirements == (Requirement("app", "=", "web"),)
    assert selector.matches({"app": "web"})
    assert not selector.matches({"app": "db"})


def test_not_equal_matches_when_the_label_is_absent() -> None:
    # As in Kubernetes: tier!=db selects objects with no tier label at all.
    assert parse_selector("tier!=db").matches({})


def test_whitespace_and_empty_terms_are_ignored() -> None:
    selector = parse_selector(" app = web , ,tier != db ,")
    assert selector.requirements == (
        Requirement("app", "=", "web"),
        Requirement("tier", "!=", "db"),
    )


def test_empty_selector_matches_everything() -> None:
    assert parse_selector("").requirements == ()
    assert parse_selector("").matches({"any": "thing"})
    assert parse_selector("").matches({})


def test_value_may_contain_an_equals_sign() -> None:
    assert parse_selector("k=a=b").matches({"k": "a=b"})


def test_empty_value_matches_an_empty_label() -> None:
    selector = parse_selector("k=")
    assert selector.matches({"k": ""})
    assert not selector.matches({})


@pytest.mark.parametrize("text", ["=web", "!=db", "!", "app=web,=x"])
def test_an_empty_key_is_invalid(text: str) -> None:
    with pytest.raises(InvalidSelector, match="empty key"):
        parse_selector(text)
