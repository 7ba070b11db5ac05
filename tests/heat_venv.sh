#!/usr/bin/env bash
# A venv for tests/test_interop_heat.py: CPU torch, Heat and the MPICH wheel, with gpupart
# and the test tools taken from the main venv (a .pth line puts its site-packages after
# this venv's own). Kept apart so that the main venv does not carry torch.
#
#   bash tests/heat_venv.sh [VENV=/tmp/heatvenv] [MAIN_VENV=.venv]
#   VENV/bin/python -m pytest tests/test_interop_heat.py
#
# Heat 1.8 pins torch<2.11.1 and torchvision; it runs on torch 2.13 for what gpupart
# uses, so both are installed without their pins. Heat imports torchvision at start-up
# (its MNIST dataset and vision transforms) and nothing of it is used here. Where no
# torchvision for this CPU torch installs (PyPI's wheels are CUDA builds, whose _C fails
# against a CPU torch: "operator torchvision::nms does not exist"), a stand-in package
# with the three names Heat touches at import is written instead.
set -euo pipefail

VENV=${1:-/tmp/heatvenv}
MAIN=$(cd "${2:-.venv}" && pwd)
TORCH=${TORCH_SPEC:-torch==2.13.0}

python3 -m venv "$VENV"
PY="$VENV/bin/python"
"$PY" -m pip install -q "$TORCH"
"$PY" -m pip install -q --no-deps 'heat==1.8.0'
"$PY" -m pip install -q scipy pillow 'mpi4py>=4.0' 'mpich>=3.4.3,<4'
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

if ! { "$PY" -m pip install -q --no-deps 'torchvision==0.28.0' && "$PY" -c 'import torchvision'; } \
    >/dev/null 2>&1; then
    "$PY" -m pip uninstall -q -y torchvision >/dev/null 2>&1 || true
    mkdir -p "$SITE/torchvision"
    cat >"$SITE/torchvision/__init__.py" <<'PY'
"""Stand-in for torchvision: the names Heat touches when it is imported, nothing more."""

from . import datasets, transforms  # noqa: F401
PY
    cat >"$SITE/torchvision/transforms.py" <<'PY'
import types


class Compose:
    def __init__(self, transforms):
        self.transforms = transforms


transforms = types.SimpleNamespace(__all__=[])
PY
    cat >"$SITE/torchvision/datasets.py" <<'PY'
class MNIST:
    pass
PY
    echo "torchvision: a stand-in (no torchvision for this CPU torch installs here)"
fi

PYVER=$("$PY" -c 'import sys; print(f"python{sys.version_info[0]}.{sys.version_info[1]}")')
echo "import site; site.addsitedir('$MAIN/lib/$PYVER/site-packages')" >"$SITE/zz_gpupart_main.pth"
"$PY" -c 'import heat, torch, mpi4py, gpupart; print("heat", heat.__version__, "torch", torch.__version__)'
