#!/usr/bin/env bash
# The GPU path end to end, in one command for a lent GPU machine; results and logs under $OUT:
#   1. the paper study's training speed (benchmarks/paper_study.py: the paper's batch, bf16 autocast), its
#      share of the GPU's measured matrix rate, and the whole study's wall time with lock-step cohorts;
#   2. inference of the paper teacher and every student preset (benchmarks/inference_rate.py, batch 1 and 32);
#   3. the default study with device: cuda, timed, several training jobs sharing the GPU (GPU_JOBS), every
#      training run checked to have trained on the GPU (its metrics.json);
#   4. a summary table against the targets (benchmarks/gpu_report.py): summary.md.
# The machine's python3 has torch (CUDA) and the scientific stack but no package index: what it lacks comes
# as wheels in .whl/ (python benchmarks/gpu_wheels.py fetches them here), installed into a folder of the
# run's own; hkd runs from this checkout, uninstalled, through a one-line `hkd` command.
#
#   bash benchmarks/gpu_check.sh              # on the GPU machine (the device tool: carry .whl)
#   bash benchmarks/gpu_check.sh --rehearse   # on the CPU at tiny sizes (tests/workflow/test_gpu_check.py)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
REHEARSE=false
[ "${1:-}" = --rehearse ] && REHEARSE=true
OUT=${OUT:-$REPO/results/gpu_check}
PY=${PYTHON:-python3}
STUDY=results/gpu_check/default        # the default study's outputs (git-ignored)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d)
MONITOR=
trap '[ -z "$MONITOR" ] || kill "$MONITOR" 2>/dev/null || true; rm -rf "$WORK"' EXIT
started=$(date +%s)
exec > >(tee "$OUT/check.log") 2>&1

# What the machine lacks, from the carried wheels; then hkd from this checkout.
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" .whl/*.whl
    export PYTHONPATH="$WORK/site"
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
mkdir "$WORK/bin"
printf '#!/bin/sh\nexec "%s" -c "import sys; from hkd.cli import main; sys.exit(main())" "$@"\n' \
    "$(command -v "$PY")" >"$WORK/bin/hkd"
chmod +x "$WORK/bin/hkd"
export PATH="$WORK/bin:$PATH" PYTHONUNBUFFERED=1
"$PY" - <<'EOF'
import platform, torch, snakemake, nibabel, medpy, captum, jsonschema, onnxruntime, hkd.cli  # what the jobs import
print(f"python {platform.python_version()}; torch {torch.__version__} (CUDA {torch.version.cuda}, "
      f"available: {torch.cuda.is_available()}); snakemake {snakemake.__version__}; nibabel {nibabel.__version__}; "
      f"captum {captum.__version__}; onnxruntime {onnxruntime.__version__}; {torch.get_num_threads()} threads")
if torch.cuda.is_available():
    print(f"GPU: {torch.cuda.get_device_name()}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
EOF
machine="CPU rehearsal ($(nproc) cores)"
if command -v nvidia-smi >/dev/null; then
    machine="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1), $(nproc) cores"
fi
echo "setup: $(($(date +%s) - started)) s; machine: $machine"

if $REHEARSE; then
    DEVICE=cpu CORES=2 GPU_JOBS=1 STUDY_LIMIT=${STUDY_LIMIT:-600}
    PAPER=(--config config.yaml --steps 1 --batch 2 --threads 2)
    INFER=(--config config.yaml --size 48 --batches 1 2 --runs 2)
    # the default study's DAG, every rule, at the smallest sizes that keep each step meaningful
    cat >"$WORK/tiny.yaml" <<'EOF'
data: {phantom: {cases: 10, size: 64, slices: [4, 5]}, image_size: 32, external: {cases: 3}}
train: {epochs: 1}
teacher: {train: {epochs: 2}}
students: {seeds: [0], widths: ["0.4M", "1.5"]}
report: {context_slices: 2}
EOF
    CONFIGS=(config.yaml "$WORK/tiny.yaml")
else
    DEVICE=cuda CORES=$(nproc) GPU_JOBS=${GPU_JOBS:-16} STUDY_LIMIT=${STUDY_LIMIT:-330}
    PAPER=(--steps 5 --threads 8)
    INFER=(--runs 20)
    CONFIGS=(config.yaml)
fi

echo "== 1. the paper study's training speed"
"$PY" benchmarks/paper_study.py "${PAPER[@]}" --json "$OUT/paper.json"
echo "== 2. inference"
"$PY" benchmarks/inference_rate.py "${INFER[@]}" --json "$OUT/inference.json"

echo "== 3. the default study on $DEVICE ($CORES cores, $GPU_JOBS training jobs at once on the GPU)"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 1000 >"$WORK/gpu.csv" &
    MONITOR=$!
fi
t0=$(date +%s)
set +e
# every job, timed from scratch (--forceall: hkd replaces only what it wrote, nothing is deleted by hand)
timeout "$STUDY_LIMIT" "$PY" -m snakemake --cores "$CORES" --resources gpu="$GPU_JOBS" --configfile "${CONFIGS[@]}" \
    --config device="$DEVICE" out="$STUDY" --forceall >"$OUT/default.log" 2>&1
rc=$?
set -e
seconds=$(($(date +%s) - t0))
[ -z "$MONITOR" ] || kill "$MONITOR" 2>/dev/null || true
tail -3 "$OUT/default.log"
STUDY="$STUDY" WORK="$WORK" OUT="$OUT" "$PY" - "$rc" "$seconds" <<'EOF'
import csv, json, os, re, sys
from pathlib import Path
rc, seconds = int(sys.argv[1]), int(sys.argv[2])
log = Path(os.environ["OUT"], "default.log").read_text()
done = re.findall(r"(\d+) of (\d+) steps", log)
jobs = {}  # the slowest jobs by their Snakemake benchmark files
for tsv in Path(os.environ["STUDY"], "benchmarks").rglob("*.tsv"):
    rows = list(csv.DictReader(tsv.open(), delimiter="\t"))
    jobs[str(tsv.relative_to(Path(os.environ["STUDY"], "benchmarks")))] = float(rows[0]["s"]) if rows else None
gpu = Path(os.environ["WORK"], "gpu.csv")
util = [[float(v) for v in line.split(",")] for line in gpu.read_text().splitlines() if line.strip()] if gpu.exists() else []
summary = {"rc": rc, "seconds": seconds, "jobs": f"{done[-1][0]} of {done[-1][1]}" if done else "0",
           "slowest": dict(sorted(((k, v) for k, v in jobs.items() if v is not None), key=lambda kv: -kv[1])[:8]),
           "gpu_util_mean": sum(u[0] for u in util) / len(util) if util else None,
           "gpu_mem_max_mb": max(u[1] for u in util) if util else None}
Path(os.environ["OUT"], "default.json").write_text(json.dumps(summary, indent=1))
print(json.dumps(summary, indent=1))
EOF

echo "== 4. summary (the check took $(($(date +%s) - started)) s)"
"$PY" benchmarks/gpu_report.py --out "$OUT" --study "$STUDY" --expect "$DEVICE" --machine "$machine"
