#!/usr/bin/env bash
# Install PVC on a host from its wheel: into PVC's own virtualenv (never the system's
# site-packages: the wheel's import packages are generic names, api, cli, schemas...), its
# three commands linked into /usr/local/bin, its systemd units installed (not started).
#
#   deploy/install.sh dist/pvc_cluster-VERSION-py3-none-any.whl
#
# Run it again with a newer wheel to upgrade (docs/install.md: one host at a time).
# Where things go (for packaging or tests): PVC_PREFIX (/opt/pvc), PVC_BIN_DIR
# (/usr/local/bin), PVC_UNIT_DIR (/etc/systemd/system). Dependencies come from the package
# index pip is configured with; building libvirt-python needs libvirt-dev, pkg-config, gcc.
set -euo pipefail

WHEEL=${1:-}
if [ -z "$WHEEL" ] || [ ! -f "$WHEEL" ]; then
  echo "usage: $0 WHEEL (a pvc_cluster-*.whl file; build one with: pip wheel --no-deps -w dist .)" >&2
  exit 2
fi
PREFIX=${PVC_PREFIX:-/opt/pvc}
BIN_DIR=${PVC_BIN_DIR:-/usr/local/bin}
UNIT_DIR=${PVC_UNIT_DIR:-/etc/systemd/system}
HERE=$(cd "$(dirname "$0")" && pwd)

if [ ! -x "$PREFIX/bin/python" ]; then
  echo "install: creating the virtualenv $PREFIX"
  python3 -m venv "$PREFIX"
fi
echo "install: $(basename "$WHEEL") into $PREFIX"
"$PREFIX/bin/python" -m pip install --quiet --upgrade "$WHEEL"

mkdir -p "$BIN_DIR" "$UNIT_DIR"
for command in pvcctl pvcnoded pvcapid pvc-secure-store; do
  ln -sfn "$PREFIX/bin/$command" "$BIN_DIR/$command"
done
for unit in pvcnoded.service pvcapid.service; do
  sed "s#/opt/pvc/bin/#$PREFIX/bin/#" "$HERE/systemd/$unit" >"$UNIT_DIR/$unit"
done
echo "install: linked pvcctl, pvcnoded, pvcapid, pvc-secure-store into $BIN_DIR; units in $UNIT_DIR"
if [ "$UNIT_DIR" = /etc/systemd/system ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  echo "install: now run pvc-secure-store once per cluster, write /etc/pvc/pvcnoded.yaml" \
    "(and pvcapid.yaml on coordinators), then:" \
    "systemctl enable --now pvcnoded (pvcapid)"
fi
