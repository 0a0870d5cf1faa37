#!/usr/bin/env bash
# The GPU checks of issue 7, as one script for a lent GPU machine (no network there).
#
#   .venv/bin/pip wheel --no-deps -w .whl .        # here: imnn as a wheel
#   bash examples/gpu_checks.sh                    # there, carrying .whl
#
# 1. the 128×128 field with SimulatorIMNN and AggregatedSimulatorIMNN (one GPU,
#    4 batches of 250), 5×5 filters, 2000 iterations, det F on 20 000 fresh fields;
# 2. imnn's fit step (looping on the device, and from the host) against the
#    hand-written jit(value_and_grad) + optax loop.
# Everything lands under $OUT (default runs/gpu): two example folders and log.txt.
set -u
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/log.txt
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/imnn-site .whl/imnn-*.whl || exit 1
export PYTHONPATH=/tmp/imnn-site PYTHONUNBUFFERED=1
WORK=$(mktemp -d) && cp -r examples bench "$WORK"/ && cd "$WORK" || exit 1
{ nvidia-smi -L; python3 -c "import sys, jax, optax, numpy; print(sys.version.split()[0], 'jax', jax.__version__, 'optax', optax.__version__, 'numpy', numpy.__version__, jax.devices())"; } 2>&1 | tee -a "$LOG"
FIELD=${FIELD:-"--N 128 --kernel 5 --filters 8 --max-iterations 2000 --n-eval 20000 --prior 0.7 0.45 0.95 0.7 --abc-batch 5000 --quiet"}
for run in "f128" "f128agg --aggregated --n-per-device 250"; do
  set -- $run
  echo "== field_inference.py $FIELD ${*:2}" >> "$LOG"
  start=$SECONDS
  timeout 220 python3 examples/field_inference.py $FIELD "${@:2}" \
      --output "$OUT/$1" >> "$LOG" 2>&1
  echo "($((SECONDS - start)) s wall)" >> "$LOG"
done
echo "== bench_fit_step" >> "$LOG"
timeout 150 python3 -m pytest bench/bench_fit_step.py --benchmark-only -q -p no:cacheprovider \
    --benchmark-columns=min,median,rounds 2>&1 | tail -25 >> "$LOG"
cat "$LOG"
