"""localcluster/process.py: a started process that ended is told apart by how it ended
(a start that fails says "api (killed by SIGKILL)", not only "api exited")."""

from __future__ import annotations

from pathlib import Path

from localcluster.process import how_it_ended, pid_alive, spawn, wait_until


def ended(tmp_path: Path, script: str) -> str:
    pid = spawn(["sh", "-c", script], tmp_path / "out.log")
    assert how_it_ended(pid) == ""  # running, or not reaped yet
    wait_until(lambda: not pid_alive(pid), 10.0, f"sh -c {script!r} to end")
    return how_it_ended(pid)


def test_an_exit_code_and_a_signal_are_told_apart(tmp_path: Path) -> None:
    assert ended(tmp_path, "exit 3") == "exit code 3"
    assert ended(tmp_path, "exit 0") == "exit code 0"
    assert ended(tmp_path, "kill -9 $$") == "killed by SIGKILL"


def test_a_process_that_is_not_our_child_is_not_known(tmp_path: Path) -> None:
    assert how_it_ended(1) == ""


def test_a_child_that_ended_is_told_even_after_another_was_started(tmp_path: Path) -> None:
    # A Popen dropped while its child ran is reaped by the next Popen: the status kept.
    first = spawn(["sh", "-c", "exit 3"], tmp_path / "first.log")
    wait_until(lambda: _zombie(first), 10.0, "the first child to exit")
    second = spawn(["sh", "-c", "exit 0"], tmp_path / "second.log")
    assert not pid_alive(first)
    assert how_it_ended(first) == "exit code 3"
    wait_until(lambda: not pid_alive(second), 10.0, "the second child to end")


def _zombie(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().split()[2]) == "Z"
    except OSError:
        return True
