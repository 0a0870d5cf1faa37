#!/usr/bin/env bash
# In memory against aggregated, on one GPU, in one call (issue 17): the 128×128
# Gaussian random field with the quadratic network of examples/field_inference.py
# (8 5×5 filters), n_s = n_d = 1 000, 4 000 and 16 000, SimulatorIMNN against
# AggregatedSimulatorIMNN with n_per_device = 1 000 (1, 4 and 16 batches) and three
# memory budgets (0: recompute everything in pass 2; the default; 16 GiB). Each
# configuration runs in a fresh process (bench/bench_aggregation.py field ...):
# ms per iteration and peak device memory (memory_stats()["peak_bytes_in_use"]),
# printed as a Markdown table for docs/performance/aggregation.md. About 5 minutes on
# an H200 (12 processes: start-up, compilation, 50 iterations each).
#
#   .venv/bin/pip wheel --no-deps -w .whl .              # here: imnn as a wheel
#   bash examples/gpu_aggregation.sh                     # there, carrying .whl
#   PYTHON=.venv/bin/python bash examples/gpu_aggregation.sh --small   # a CPU check
#
# --small (or SMALL=1): 32×32 fields, n_s = 100 and 200, n_per_device = 50, two
# iterations, no 16 GiB variant: the whole script end to end on a CPU, where the peak
# is the process's resident memory (a CPU device reports no memory statistics).
# Everything lands under $OUT (default runs/gpu_aggregation): log.txt and table.md.
set -u
SMALL=${SMALL:-0}
[ "${1:-}" = "--small" ] && SMALL=1
OUT=${OUT:-runs/gpu_aggregation}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/log.txt
: > "$LOG"
PYTHON=${PYTHON:-python3}
if ls .whl/imnn-*.whl > /dev/null 2>&1; then  # a lent machine: imnn from the wheel
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/imnn-site \
      .whl/imnn-*.whl || exit 1
  export PYTHONPATH=/tmp/imnn-site
fi
export PYTHONUNBUFFERED=1
case $PYTHON in  # an absolute path (not resolving links: a venv's python is one)
  */*) PYTHON=$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON") || exit 1 ;;
  *) PYTHON=$(command -v "$PYTHON") || exit 1 ;;
esac
WORK=$(mktemp -d) && cp -r examples bench "$WORK"/ && cd "$WORK" || exit 1
if [ "$SMALL" = 1 ]; then
  N=32; SIZES="100 200"; PER_DEVICE=50; ITERATIONS=2; TRIES=1; TIMEOUT=300
  VARIANTS=${VARIANTS:-"in-memory budget-0 budget-default"}
else
  N=128; SIZES="1000 4000 16000"; PER_DEVICE=1000; ITERATIONS=10; TRIES=1; TIMEOUT=200
  VARIANTS=${VARIANTS:-"in-memory budget-0 budget-default budget-17179869184"}
fi
{ nvidia-smi -L 2>/dev/null; "$PYTHON" -c "import sys, jax; print(sys.version.split()[0], 'jax', jax.__version__, jax.devices())"; } 2>&1 | tee -a "$LOG"
RESULTS=$OUT/results.jsonl
: > "$RESULTS"
for n_s in $SIZES; do
  for variant in $VARIANTS; do
    echo "== $variant n_s=$n_s N=$N n_per_device=$PER_DEVICE" >> "$LOG"
    line=$(timeout "$TIMEOUT" "$PYTHON" bench/bench_aggregation.py field "$variant" "$n_s" "$N" \
           "$PER_DEVICE" "$ITERATIONS" "$TRIES" 2>> "$LOG" | tail -1)
    case $line in
      "{"*) echo "$line" >> "$RESULTS" ;;
      *) echo "{\"variant\": \"$variant\", \"n_s\": $n_s, \"error\": \"exit or timeout\"}" >> "$RESULTS" ;;
    esac
    echo "$line" >> "$LOG"
  done
done
"$PYTHON" - "$RESULTS" "$N" "$PER_DEVICE" > "$OUT/table.md" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
N, per_device = sys.argv[2], int(sys.argv[3])
names = {"in-memory": "SimulatorIMNN (in memory)", "budget-0": "aggregated, memory_budget=0",
         "budget-default": "aggregated, default budget",
         "budget-17179869184": "aggregated, memory_budget=16 GiB"}
sizes = sorted({r["n_s"] for r in rows})
base = {r["n_s"]: r.get("ms/it") for r in rows if r["variant"] == "in-memory"}
print(f"{N}×{N} field, quadratic network (8 5×5 filters), n_s = n_d, one device, "
      f"n_per_device = {per_device}; ms per iteration (× in memory), peak memory "
      f"({next((r['peak_of'] for r in rows if 'peak_of' in r), 'device')}), what pass 1 kept\n")
print("| configuration | " + " | ".join(f"n_s = {n}" for n in sizes) + " |")
print("|---|" + "---|" * len(sizes))
for variant in dict.fromkeys(r["variant"] for r in rows):
    cells = []
    for n in sizes:
        r = next((r for r in rows if r["variant"] == variant and r["n_s"] == n), None)
        if r is None:
            cells.append("")
        elif "error" in r:
            cells.append(f"failed ({r['error']})")
        else:
            ratio = f" (×{r['ms/it'] / base[n]:.2f})" if base.get(n) else ""
            kept = ", ".join(sorted(set(r["kept"].values()))) if r["kept"] else ""
            cells.append(f"{r['ms/it']:.1f} ms{ratio}, {r['peak_MiB']:.0f} MiB"
                         + (f", kept {kept}" if kept else ""))
    print(f"| {names.get(variant, variant)} | " + " | ".join(cells) + " |")
EOF
cat "$OUT/table.md" | tee -a "$LOG"
