#!/usr/bin/env bash
# Installs the tpcoord Python package, as a user does (pip install --no-build-isolation ./python), into the
# virtual environment VENV (default build/python-venv), made with Debian's python3 and its site packages
# (python3-grpcio, python3-protobuf, python3-torch), so that nothing is fetched: pip runs with --no-index.
# Then VENV/bin/python -c 'import tpcoord' and VENV/bin/python -m tpcoord.run work without PYTHONPATH. Run by
# CMake (target tpcoord_python) and by `make python`; idempotent.
#
#   python/install.sh [VENV]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-$repo/build/python-venv}
[ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv --system-site-packages "$venv"
# pip builds in the source tree (python/build, python/tpcoord.egg-info: ignored by git); one build at a time.
exec 9>"$venv/.install.lock"
flock 9
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-build-isolation --no-index "$repo/python"
