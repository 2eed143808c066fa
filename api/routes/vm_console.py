"""What a VM's node saw of it: its serial console output (``pvcctl vm logs``) and the libvirt
XML its node defined (``pvcctl vm dumpxml``), both carried through the store
(zkstore/console.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from api.deps import NameParam, StoreDep
from api.errors import ApiError
from api.routes.resources import API_PREFIX, error_responses
from schemas import VirtualMachine
from zkstore.console import CONSOLE_LIMIT, VMOutputs

router = APIRouter()

_HEADERS: dict[str, Any] = {
    "X-Console-End": {
        "description": "bytes the console wrote up to the end of this answer: pass it as "
        "`since` to get only what follows",
        "schema": {"type": "integer"},
    },
    "X-Console-Start": {
        "description": "the offset of this answer's first byte (output before the newest "
        f"{CONSOLE_LIMIT} bytes is not kept)",
        "schema": {"type": "integer"},
    },
    "X-Console-Node": {
        "description": "the node whose console this is ('' when none was recorded)",
        "schema": {"type": "string"},
    },
}


@router.get(
    f"{API_PREFIX}/vms/{{name}}/console",
    tags=["vms"],
    response_class=Response,
    responses={
        200: {
            "description": "the newest serial console output, as the guest wrote it",
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "headers": _HEADERS,
        },
        **error_responses(401, 404, 422, 503),
    },
)
def vm_console(
    name: NameParam,
    store: StoreDep,
    tail: Annotated[
        int | None, Query(ge=0, le=100_000, description="only the last N lines")
    ] = None,
    since: Annotated[
        int | None,
        Query(ge=0, description="only the output after this offset (an earlier X-Console-End)"),
    ] = None,
) -> Response:
    """The VM's serial console output as its node last published it (at most every second
    while it changes; the newest 64 KiB). Empty until its node published any: the test
    driver runs no guest (its console is a line per boot)."""
    store.get(VirtualMachine, name)  # 404 for a VM that does not exist
    log = VMOutputs(store).read_console(name)
    if log is None:
        return _console(b"", 0, 0, "")
    data, start = log.data, log.start
    if since is not None and start <= since <= log.end:
        data, start = data[since - start :], since
    if tail is not None:
        lines = data.splitlines(keepends=True)
        kept = b"".join(lines[len(lines) - tail :]) if tail else b""
        data, start = kept, start + len(data) - len(kept)
    return _console(data, start, log.end, log.node)


def _console(data: bytes, start: int, end: int, node: str) -> Response:
    return Response(
        content=data,
        media_type="text/plain; charset=utf-8",
        headers={"X-Console-Start": str(start), "X-Console-End": str(end), "X-Console-Node": node},
    )


@router.get(
    f"{API_PREFIX}/vms/{{name}}/domainxml",
    tags=["vms"],
    response_class=Response,
    responses={
        200: {
            "description": "the domain XML as libvirt holds it on the VM's node",
            "content": {"application/xml": {"schema": {"type": "string"}}},
        },
        **error_responses(401, 404, 503),
    },
)
def vm_domain_xml(name: NameParam, store: StoreDep) -> Response:
    """The libvirt domain XML the VM's node last defined (its persistent definition, without
    secrets); 404 while no node has defined it yet."""
    store.get(VirtualMachine, name)
    xml = VMOutputs(store).read_domain_xml(name)
    if xml is None:
        raise ApiError(
            404,
            f"VirtualMachine {name!r} has no domain XML yet: no node has defined its domain "
            "(a node publishes it within a second of the define)",
        )
    return Response(content=xml, media_type="application/xml")
