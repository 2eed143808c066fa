"""PVC's wheel, built from the tree and installed with deploy/install.sh into a fresh
virtualenv of its own: its commands work from the bin folder they are linked into, its
packages come from that virtualenv, and the systemd units it installs pass
``systemd-analyze verify`` with their ExecStart pointing at it.

Marked ``packaging`` (make test-packaging; make test leaves it out): 15-20 s on a loaded
2-core machine, though kept as cheap as it goes: the wheel is built offline (no build
isolation), and the fresh virtualenv finds the dependencies (kazoo, libvirt-python...) in
this test run's own virtualenv through a .pth file instead of downloading and compiling
them again; PVC's own packages are not among them, so every PVC import comes from the
installed wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

PACKAGES = ("schemas", "zkstore", "hypervisor", "controllers", "api", "cli", "localcluster")
COMMANDS = ("pvcctl", "pvcnoded", "pvcapid")


def run(*args: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)  # type: ignore[call-overload,no-any-return]


def start(*args: str | Path, cwd: Path) -> subprocess.Popen[str]:
    command = [str(a) for a in args]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd
    )


def build_wheel(repo: Path, tmp: Path) -> Path:
    """``pip wheel`` on a copy of the tree (the build leaves build/ and egg-info behind)."""
    src = tmp / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in PACKAGES:
        shutil.copytree(repo / package, src / package, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(repo / name, src / name)
    built = run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
        "--no-index", "-q", "-w", tmp / "dist", src,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp / "dist").glob("*.whl")
    return wheel


def dependencies_only(tmp: Path) -> Path:
    """This run's site-packages without PVC itself (its editable install)."""
    deps = tmp / "deps"
    deps.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.startswith(("pvc_cluster", "__editable__", "pvc-", "pvc.")):
            (deps / entry.name).symlink_to(entry)
    return deps


@pytest.mark.packaging
def test_the_wheel_installs_into_its_own_virtualenv(repo_root: Path, tmp_path: Path) -> None:
    wheel = build_wheel(repo_root, tmp_path)
    assert wheel.name.startswith("pvc_cluster-")  # "pvc" is another project's on PyPI
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    assert {n.split("/")[0] for n in names if not n.startswith("pvc_cluster-")} == set(PACKAGES)
    for command in COMMANDS:
        assert f"{command} = " in scripts

    prefix, bin_dir, unit_dir = tmp_path / "opt-pvc", tmp_path / "bin", tmp_path / "units"
    made = run(sys.executable, "-m", "venv", "--without-pip", prefix)
    assert made.returncode == 0, made.stderr
    paths = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    purelib = run(prefix / "bin/python", "-c", paths)
    (Path(purelib.stdout.strip()) / "pvc-test-deps.pth").write_text(
        f"{dependencies_only(tmp_path)}\n"
    )

    script = repo_root / "deploy/install.sh"
    env = {
        **os.environ,
        "PVC_PREFIX": str(prefix),
        "PVC_BIN_DIR": str(bin_dir),
        "PVC_UNIT_DIR": str(unit_dir),
        "PIP_NO_DEPS": "1",
        "PIP_NO_INDEX": "1",
    }
    assert run(script, env=env, cwd=tmp_path).returncode == 2  # no wheel named: usage
    installed = run(script, wheel, env=env, cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr

    # The four at once: each imports its whole command (libvirt, FastAPI...), ~2-4 s here.
    which = "import cli, schemas.version as v; print(cli.__file__); print(v.pvc_version())"
    started = {c: start(bin_dir / c, "--help", cwd=tmp_path) for c in COMMANDS}
    started["where"] = start(prefix / "bin/python", "-c", which, cwd=tmp_path)
    done = {name: (p, *p.communicate(timeout=60)) for name, p in started.items()}
    assert all(p.returncode == 0 for p, _, _ in done.values()), {
        n: e for n, (_, _, e) in done.items()
    }
    assert "Manage a PVC cluster" in done["pvcctl"][1]
    assert "--config" in done["pvcnoded"][1] and "--listen" in done["pvcapid"][1]
    module, version = done["where"][1].split()
    assert Path(module).is_relative_to(prefix), module  # from the wheel, not the tree
    assert version != "unknown"  # the installed distribution's own metadata

    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: make setup installs the systemd package")
    units = sorted(unit_dir.glob("*.service"))
    assert [u.name for u in units] == ["pvcapid.service", "pvcnoded.service"]
    for unit in units:
        assert f"ExecStart={prefix}/bin/" in unit.read_text()
    verified = run("systemd-analyze", "verify", "--man=no", *units)
    assert (verified.returncode, verified.stderr) == (0, ""), verified.stderr
