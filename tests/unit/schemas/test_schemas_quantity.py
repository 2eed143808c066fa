"""Sizes (``512Mi``) and durations (``5s``) as users write them in specs."""

from __future__ import annotations

import pytest

from schemas import (
    InvalidResource,
    approx_bytes,
    format_bytes,
    parse_resource,
    to_bytes,
    to_mib,
    to_seconds,
)


def vm_with(**spec: object) -> dict[str, object]:
    return {
        "apiVersion": "pvc/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "web"},
        "spec": {"memory": "1Gi", **spec},
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512Mi", 512 * 2**20),
        ("2Gi", 2 * 2**30),
        ("1Ti", 2**40),
        ("4Ki", 4096),
        ("1048576", 1048576),
        ("3G", 3 * 10**9),
        ("5M", 5 * 10**6),
    ],
)
def test_to_bytes_reads_binary_decimal_and_plain_sizes(text: str, expected: int) -> None:
    assert to_bytes(text) == expected


@pytest.mark.parametrize("text", ["-1Gi", "1.5Gi", "abc", "", "Gi", "2gi", "2GiB", "2 Gi"])
def test_to_bytes_rejects_what_is_not_a_whole_size(text: str) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        to_bytes(text)


@pytest.mark.parametrize("memory", ["-1Gi", "0", "0Mi", "1.5Gi", "abc"])
def test_vm_memory_rejects_negative_zero_fractional_and_garbage(memory: str) -> None:
    with pytest.raises(InvalidResource) as info:
        parse_resource(vm_with(memory=memory))
    assert [e.field for e in info.value.errors] == ["spec.memory"]


def test_zero_memory_error_says_it_must_be_positive() -> None:
    with pytest.raises(InvalidResource, match="must be greater than zero"):
        parse_resource(vm_with(memory="0"))


@pytest.mark.parametrize("memory", ["512Mi", "2Gi", "1073741824"])
def test_vm_memory_keeps_the_users_text(memory: str) -> None:
    # Re-applying the same manifest must be a no-op, so the spec keeps "2Gi", not bytes.
    vm = parse_resource(vm_with(memory=memory))
    assert vm.spec.memory == memory
    assert vm.wire()["spec"]["memory"] == memory


@pytest.mark.parametrize(
    ("text", "mib"), [("1Gi", 1024), ("512Mi", 512), ("1", 1), ("1025Ki", 2), ("1M", 1)]
)
def test_to_mib_rounds_up(text: str, mib: int) -> None:
    assert to_mib(text) == mib


@pytest.mark.parametrize(
    ("value", "text"),
    [(512 * 2**20, "512Mi"), (2 * 2**30, "2Gi"), (3 * 2**40, "3Ti"), (1536, "1536"), (0, "0")],
)
def test_format_bytes_is_the_shortest_exact_binary_form(value: int, text: str) -> None:
    assert format_bytes(value) == text
    assert to_bytes(text) == value


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (83053731840, "77.3Gi"),
        (2**30, "1.0Gi"),
        (1536, "1.5Ki"),
        (999, "999"),
        (5 * 2**40, "5.0Ti"),
    ],
)
def test_approx_bytes_reads_as_a_person_would_say_it(value: int, text: str) -> None:
    assert approx_bytes(value) == text


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("5s", 5.0), ("1.5s", 1.5), ("2m", 120.0), ("1h", 3600.0), ("0s", 0.0)],
)
def test_to_seconds(text: str, seconds: float) -> None:
    assert to_seconds(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5", "-5s", "5d", "abc", "", "s", "1.s"])
def test_to_seconds_rejects_missing_or_unknown_units(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        to_seconds(text)


def test_bad_duration_in_a_spec_names_the_field() -> None:
    with pytest.raises(InvalidResource) as info:
        parse_resource(vm_with(shutdownTimeout="3 minutes"))
    assert [e.field for e in info.value.errors] == ["spec.shutdownTimeout"]
    assert "invalid duration" in info.value.errors[0].message


def test_duration_keeps_the_users_text() -> None:
    vm = parse_resource(vm_with(shutdownTimeout="2m"))
    assert vm.spec.shutdown_timeout == "2m"
