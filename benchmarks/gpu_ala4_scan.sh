#!/usr/bin/env bash
# One prepared GPU call for issue 13: the alanine tetrapeptide's CPU-scale recipe (the `ala4`
# preset with 16 coupling layers, seed 0) and four variants of it, run side by side on one
# GPU, each stopped after LIMIT_S seconds of training and evaluated as on the CPU. It asks which axis
# raises the reverse ESS: a longer refinement, a smaller buffer at the target (more steps per
# evaluation), a larger buffer while annealing (the phi > 0 basin), or more layers.
#
#   bash benchmarks/gpu_ala4_scan.sh [OUT]     # OUT defaults to $OUT, else runs/gpu_ala4_scan
#
# The variants are the lines of $VARIANTS (default benchmarks/gpu_ala4_variants.txt): a name
# and the flags that set it apart (`--budget`, `--set`, `--config`, ...).
#
# Give the device call ~560 s: each run trains for LIMIT_S (300) seconds, then evaluates
# (~100 s with five runs sharing the machine) within a limit of LIMIT_S + 200.
#
# OpenMM and mdtraj come as wheels from .whl/ (benchmarks/gpu_env.sh). Writes
# OUT/session.log, OUT/<variant>.log and one OUT/runs.tgz with each run's config, metrics,
# steps, evaluations and plots (not its samples or parameters: the device tool brings back a
# few files of limited size, and a run's samples.npz alone is over that limit).
set -u
OUT=${1:-${OUT:-runs/gpu_ala4_scan}}
LIMIT_S=${LIMIT_S:-300}
VARIANTS=${VARIANTS:-benchmarks/gpu_ala4_variants.txt}
MIN=$(awk "BEGIN{print $LIMIT_S/60}")
source "$(dirname "$0")/gpu_env.sh"  # OUT/session.log, the OpenMM/mdtraj wheels
# Several processes share the chip: no process takes most of its memory up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
PY=${PY:-python3}
date
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c "import jax, openmm; print('jax', jax.__version__, 'openmm', openmm.__version__, jax.devices())" || exit 1

run() {
  local name=$1; shift
  (
    /usr/bin/time -f "$name: %e s wall, %U+%S s CPU, %M KB peak" \
      timeout $((LIMIT_S + 200)) $PY -m cmtjax.cli train --target ala4 --seed 0 \
      --set flow.n_layers=16 --set checkpoint.enabled=false --no-progress \
      --minutes "$MIN" --out "/tmp/scan/$name" "$@" 2>&1 | grep -v --line-buffered cpu_aot \
      > "$OUT/$name.log"
    tail -n 3 "$OUT/$name.log"
  ) &
}
mkdir -p /tmp/scan
# One run per line of VARIANTS: a name, then its flags (after the common ones above).
while read -r name flags; do
  case "$name" in ''|'#'*) continue ;; esac
  # shellcheck disable=SC2086  # the flags are words
  run "$name" $flags
done < "$VARIANTS"
wait
(cd /tmp/scan && tar czf "$OUT/runs.tgz" */*.json */*.jsonl */*.png)
nvidia-smi --query-gpu=memory.used --format=csv,noheader || true
date
