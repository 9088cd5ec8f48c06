#!/usr/bin/env bash
# cmtjax developer entry point: sets up a virtual environment from the repo's own files
# (pyproject.toml + the tested CPU pin set in constraints/cpu.txt), then runs a job in it.
#
#   ./dev.sh demo [OUT]     train a Boltzmann generator with CMT on GMM-40 (default target);
#                           metrics.json, steps.jsonl and PNG plots land in OUT (runs/demo)
#   ./dev.sh test [ARGS]    run the test suite (what CI runs); ARGS go to pytest
#   ./dev.sh setup          only create/update the environment
#   ./dev.sh cmtjax ARGS    run the cmtjax command in the environment
#
# CMTJAX_VENV overrides the environment's folder (default .venv); PYTHON the interpreter.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${CMTJAX_VENV:-.venv}
PY=${PYTHON:-python3}

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -c 'import sys; assert sys.version_info >= (3, 11), "cmtjax needs Python >= 3.11, found " + sys.version.split()[0]'
    "$PY" -m venv "$VENV"
  fi
  local stamp="$VENV/.cmtjax-setup" want
  want=$(cat pyproject.toml constraints/cpu.txt | sha256sum | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "dev.sh: installing cmtjax and its pinned dependencies into $VENV ..." >&2
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -c constraints/cpu.txt -e ".[molecules,test]"
    echo "$want" > "$stamp"
  fi
}

cmd=${1:-help}
shift || true
case "$cmd" in
  setup) setup ;;
  demo)
    setup
    out=${1:-runs/demo}
    exec "$VENV/bin/cmtjax" train --target gmm40 --method cmt --seed 0 --out "$out"
    ;;
  test)
    setup
    # --maxschedchunk 1: tests go out one by one in collection order, slow ones first
    # (tests/conftest.py), so the long end-to-end runs spread over both workers.
    exec "$VENV/bin/python" -m pytest -q -n 2 --maxschedchunk 1 "$@"
    ;;
  cmtjax)
    setup
    exec "$VENV/bin/cmtjax" "$@"
    ;;
  *)
    sed -n '2,12p' "$0"
    [ "$cmd" = help ] || exit 2
    ;;
esac
