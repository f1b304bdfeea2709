#!/usr/bin/env bash
# Install Label Studio into its OWN virtual environment.
#
# Label Studio 1.23.2 pins label-studio-sdk 2.1.2, redis<5.3 and rq<2.7, which clash with the
# ML backend's own environment, so it never shares a venv with the backend.
#
# Idempotent: if the venv already holds the wanted version, it exits at once.
#
# Environment:
#   LS_VENV     venv path (default: <repo root>/.ls-venv)
#   LS_VERSION  Label Studio version (default: 1.23.2)
#   PYTHON      interpreter used to create the venv (default: python3)
#
# Afterwards: "$LS_VENV/bin/label-studio" start ...   (see scripts/labelstudio_local.sh)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LS_VENV="${LS_VENV:-$REPO_ROOT/.ls-venv}"
LS_VERSION="${LS_VERSION:-1.23.2}"
PYTHON="${PYTHON:-python3}"

installed_version() {
    [ -x "$LS_VENV/bin/python" ] || return 1
    # importlib.metadata avoids importing (slow) Django / label_studio itself.
    "$LS_VENV/bin/python" - <<'EOF' 2>/dev/null
from importlib.metadata import version
print(version("label-studio"))
EOF
}

current="$(installed_version || true)"
if [ "$current" = "$LS_VERSION" ] && [ -x "$LS_VENV/bin/label-studio" ]; then
    echo "label-studio $LS_VERSION already installed in $LS_VENV"
    exit 0
fi

if [ ! -x "$LS_VENV/bin/python" ]; then
    echo "Creating virtualenv $LS_VENV"
    "$PYTHON" -m venv "$LS_VENV"
fi

echo "Installing label-studio==$LS_VERSION into $LS_VENV (takes a few minutes)"
"$LS_VENV/bin/python" -m pip install --disable-pip-version-check --quiet --upgrade pip
"$LS_VENV/bin/python" -m pip install --disable-pip-version-check --quiet "label-studio==$LS_VERSION"

current="$(installed_version || true)"
if [ "$current" != "$LS_VERSION" ]; then
    echo "error: expected label-studio $LS_VERSION in $LS_VENV, found '${current:-none}'" >&2
    exit 1
fi
echo "label-studio $LS_VERSION installed in $LS_VENV"
