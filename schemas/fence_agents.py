"""What a ``fence-agents`` fence config may name and pass: the agent (``fence_<name>`` on
PATH or under /usr/sbin) and its stdin options. Shared by the schema's validation, the API's
check that the agent is installed, and the agent itself (hypervisor.fence.fenceagents)."""

from __future__ import annotations

import os
import re
import shutil

AGENT_NAME = re.compile(r"^fence_[a-z0-9_]+$")
AGENT_DIR = "/usr/sbin"
OPTION_KEY = re.compile(r"^[a-z][a-z0-9_]*$")

RESERVED_OPTIONS = frozenset(
    {
        # what PVC writes itself, from the action and spec.fence's address, user and password
        "action",
        "ip",
        "ipaddr",
        "ipport",
        "username",
        "login",
        "password",
        "passwd",
        # would copy the stdin (and so the password) into a file or the agent's output
        "debug_file",
        "debug",
        "verbose",
        "verbose_level",
    }
)


def agent_name_problem(agent: str) -> str | None:
    """Why ``agent`` is not an acceptable fence agent, or None. Pure: no file access."""
    if AGENT_NAME.match(agent):
        return None
    if agent.startswith("/"):
        head, _, name = agent.rpartition("/")
        if head == AGENT_DIR and AGENT_NAME.match(name):
            return None
        return f"an absolute fence agent path must be {AGENT_DIR}/fence_<name>, got {agent!r}"
    return f"a fence agent is named fence_<lowercase letters, digits, _>, got {agent!r}"


def resolve_agent(agent: str) -> str | None:
    """The executable of ``agent`` (a name on PATH, /usr/sbin included, or an absolute path
    under /usr/sbin), or None when there is none."""
    if agent_name_problem(agent) is not None:
        return None
    if agent.startswith("/"):
        return agent if os.path.isfile(agent) and os.access(agent, os.X_OK) else None
    path = os.environ.get("PATH", os.defpath)
    if AGENT_DIR not in path.split(os.pathsep):
        path = f"{path}{os.pathsep}{AGENT_DIR}"
    return shutil.which(agent, path=path)


def option_problem(key: str, value: str) -> str | None:
    """Why ``key=value`` cannot go to a fence agent's stdin, or None."""
    if not OPTION_KEY.match(key):
        return f"option {key!r}: a key is lowercase letters, digits and _ (e.g. power_timeout)"
    if key in RESERVED_OPTIONS:
        return (
            f"option {key!r} is not allowed: PVC writes action, ip, ipport, username and "
            "password itself, and debug/verbose output could hold the password"
        )
    if not one_line(value):
        return f"option {key!r}: the value must be one line"
    return None


def one_line(value: str) -> bool:
    """Whether ``value`` fits on one stdin line: a newline would start another setting."""
    return not any(c in value for c in "\n\r\0")


def split_address(address: str) -> tuple[str, str | None]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address -> (host, port or None)."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") and rest[1:] else None
    if address.count(":") == 1:
        host, _, port = address.partition(":")
        return host, port or None
    return address, None


def address_problem(address: str) -> str | None:
    """Why a BMC address (host, host:port, [v6]:port or a bare IPv6 address) is unusable."""
    host, port = split_address(address)
    if not host:
        return f"address {address!r} has no host"
    if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
        return f"address {address!r}: the port must be a number from 1 to 65535"
    return None
