#!/usr/bin/env bash
# One prepared GPU session (a lent machine with a short time budget): paper-scale step timings
# of the four molecules and a short paper-scale alanine dipeptide run, in one call.
#
#   bash benchmarks/gpu_session.sh [OUT]      # OUT defaults to $OUT, else runs/gpu_session
#
# The machine's own python3 (its jax, flax, optax, chex, orbax) is used; OpenMM and mdtraj, which
# it lacks, come as wheels from .whl/ (git-ignored; see docs/molecules.md "GPU"). Each part has
# its own time limit so that a slow part cannot take the others' time; every part's output is
# kept. Writes OUT/session.log, OUT/aldp/gpu_step_gpu.{json,md}, OUT/others/gpu_step_gpu.{json,md}
# and OUT/aldp_paper.tgz (the run's folder without checkpoints).
set -u
OUT=${1:-${OUT:-runs/gpu_session}}
source "$(dirname "$0")/gpu_env.sh"  # OUT/session.log, the OpenMM/mdtraj wheels
quiet() { grep -v --line-buffered cpu_aot; }
date
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import jax, flax, optax, chex, orbax.checkpoint, openmm, mdtraj; \
print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, \
'openmm', openmm.__version__, jax.devices())" || exit 1

echo "== 1. paper-scale step, alanine dipeptide (parts and the whole step)"
/usr/bin/time -f "gpu_step aldp: %e s wall, %U+%S s CPU, %M KB peak" \
  timeout 130 python3 benchmarks/gpu_step.py --targets aldp --whole-step aldp \
  --out "$OUT/aldp" 2>&1 | quiet

echo "== 2. short paper-scale aldp run (aldp_paper.toml, planned to 2.5 min of training)"
/usr/bin/time -f "train: %e s wall, %U+%S s CPU, %M KB peak" \
  timeout 270 python3 -m cmtjax.cli train \
  --config experiments/molecules/configs/aldp_paper.toml --budget 3e7 --plan-minutes 2.5 \
  --set eval.every=0 --set checkpoint.enabled=false \
  --set eval.n_repeats=1 --no-progress --out /tmp/aldp_paper 2>&1 | quiet | tail -n 60
tar czf "$OUT/aldp_paper.tgz" --exclude=checkpoints --exclude='*.dcd' -C /tmp aldp_paper

echo "== 3. paper-scale step parts, ala4, ala6, elil"
/usr/bin/time -f "gpu_step others: %e s wall, %U+%S s CPU, %M KB peak" \
  timeout 130 python3 benchmarks/gpu_step.py --targets ala4 ala6 elil --whole-step \
  --repeats 2 --out "$OUT/others" 2>&1 | quiet
date
