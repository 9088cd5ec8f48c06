# Sourced by the device scripts (benchmarks/gpu_session.sh, benchmarks/gpu_ala4_scan.sh) once
# OUT is set: their output also goes to OUT/session.log, and OpenMM and mdtraj, which the GPU
# image lacks, come from the wheels in .whl/ (git-ignored; docs/molecules.md "On a GPU").
mkdir -p "$OUT"
exec > >(tee "$OUT/session.log") 2>&1
export PYTHONUNBUFFERED=1
if ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
