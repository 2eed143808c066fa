"""localcluster/observe.py: whose socket listens on a port (the local cluster's check
that the API answering on its port is its own)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from localcluster.observe import listens_on


def test_a_process_listening_on_a_port_is_told_from_one_that_is_not() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    try:
        assert not listens_on(os.getpid(), port)  # bound, not listening yet
        server.listen()
        assert listens_on(os.getpid(), port)
        other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            assert not listens_on(other.pid, port)  # the port answers, but not for it
        finally:
            other.kill()
            other.wait()
    finally:
        server.close()
    assert not listens_on(os.getpid(), port)
