#!/usr/bin/env bash
# One GPU session for adaptkit: the CUDA tests, the CUDA benchmarks, then a short table.
#
#   bash benchmarks/gpu_session.sh [OUTDIR]      # on a CUDA machine, from anywhere; default OUTDIR benchmarks/results/gpu
#
# Made for a machine that cannot reach PyPI: packages it lacks (open_clip_torch, av, omegaconf, antlr4, ftfy,
# wcwidth) may be carried as wheels in .whl/ and are installed into /tmp/site. Every step has its own time limit and
# its benchmark writes JSON as it goes, so one failing or slow step loses nothing else. Steps run most important
# first. Total: about 9 minutes on an H200.
set -u
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-${OUT:-benchmarks/results/gpu}}")
mkdir -p "$out"
log="$out/session.log"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD
fi

step() {  # step NAME SECONDS COMMAND...: run it under a time limit, log it, record how it ended
  local name=$1 limit=$2 t0=$SECONDS rc
  shift 2
  echo "===== $name: $*" >>"$log"
  timeout "$limit" "$@" >>"$log" 2>&1
  rc=$?
  echo "$name: exit $rc in $((SECONDS - t0)) s (limit $limit s)" | tee -a "$out/steps.txt"
}

{ date -u +"%Y-%m-%d %H:%M UTC"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__)"
} | tee "$out/steps.txt"

# 1. Correctness on the GPU: the Triton frame-attention kernel vs the PyTorch path, compile, bf16 training step.
step cuda_tests 180 python3 -m pytest -q -p no:cacheprovider -m cuda tests
# 2. Issue 7: training and inference cost (eager and compiled, bf16, MFU against the measured matmul rate).
step train_cost 280 python3 -m benchmarks.train_cost --device cuda --out "$out/train_cost_cuda.json"
# 3. Issue 12: GPU-side augmentation throughput, and clips/s that 16 CPU cores supply with PyAV.
step augment_cuda 40 python3 -m benchmarks.data_loading --augment-device cuda --out "$out/data_augment_cuda.json"
# 4. Issue 8: the embedded default's outcome in bf16 and compiled (a checkout of it, with its generated videos and
#    pretrained backbone cached, may be carried in .emb/).
if [ -d .emb ]; then
  for variant in "train.precision=bf16" "train.precision=bf16 model.compile=true"; do
    (cd .emb && PYTHONPATH=/tmp/site:$PWD step "embedded" 100 python3 -m recipes.train $variant data.num_workers=6 \
      eval.num_workers=4 train.output_dir=/tmp/emb_runs)
  done
fi

echo
cat "$out/steps.txt"
grep -hE "^\|" "$log" | tail -n 40
grep -iE "top-1|top1" "$log" | tail -n 12
