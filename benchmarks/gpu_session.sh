#!/usr/bin/env bash
# One GPU session for adaptkit: the CUDA benchmarks and tests, most important first, then a profile table.
#
#   bash benchmarks/gpu_session.sh [OUTDIR [STEP ...]]   # on a CUDA machine, from anywhere; OUTDIR defaults to
#                                                        # benchmarks/results/gpu; no STEP runs them all
#
# Made for a machine that cannot reach PyPI: packages it lacks (open_clip_torch, av, omegaconf, antlr4, ftfy,
# wcwidth) may be carried as wheels in .whl/ and are installed into /tmp/site. Every step has its own time limit and
# its benchmark writes JSON as it goes, so one failing or slow step loses nothing else. The steps' limits add up to
# 14 minutes, more than one 10-minute command of the lent machine: run them as two calls into the same OUTDIR,
#   bash benchmarks/gpu_session.sh "$OUT" kernels kernels_bias inference cuda_tests    # limits: 6.5 min
#   bash benchmarks/gpu_session.sh "$OUT" train_cost profile profile_tiled             # limits: 7.5 min
# or drop rows (--rows, --compile). Without a CUDA device it is a dry run: every step runs on the CPU with tiny sizes
# (numbers meaningless; the CUDA tests skip; the kernels run through Triton's interpreter), which checks the script
# end to end.
set -u
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-${OUT:-benchmarks/results/gpu}}")
selected=" ${*:2} "  # the steps to run; blank: all
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
  if [ -n "${selected// /}" ] && [[ "$selected" != *" $name "* ]]; then return; fi
  echo "===== $name: $*" >>"$log"
  timeout "$limit" "$@" >>"$log" 2>&1
  rc=$?
  echo "$name: exit $rc in $((SECONDS - t0)) s (limit $limit s)" | tee -a "$out/steps.txt"
}

{ date -u +"%Y-%m-%d %H:%M UTC"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__)"
} | tee "$out/steps.txt"

if python3 -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  dev=(--device cuda); tiny=(); profile_args=(--device cuda); kernel_args=(--device cuda); interpret=()
else
  echo "DRY RUN: no CUDA device; every step runs on the CPU with tiny sizes, its numbers mean nothing" | tee -a "$out/steps.txt"
  dev=(--device cpu --protocol gpu --model vit_tiny_patch16_224 --steps 1 --warmup 1 --matmul-size 256 --compile '')
  tiny=(--image-size 32 --frames 4 --batch 2 --inference-batch 2)
  profile_args=(--device cpu --image-size 32 --frames 4 --batch 1 --steps 1 --warmup 1 --no-compile)
  kernel_args=(--device cpu --batch 1 --frames 4 --tokens 3 --heads 2 --head-dim 16 --repeats 1 --warmup 0
               --copy-mib 1)
  interpret=(env TRITON_INTERPRET=1)
fi

# 1. Issue 7: the two kernel designs and their tile sizes on attention over frames alone, each checked against
#    float64 before it is timed (the tiled design has never run on a GPU), and the PyTorch paths;
#    without a bias (ViT, open_clip) and with one (Swin's relative temporal bias).
step kernels 60 "${interpret[@]}" python3 -m benchmarks.frame_attention "${kernel_args[@]}" \
  --out "$out/frame_attention_cuda.json"
step kernels_bias 40 "${interpret[@]}" python3 -m benchmarks.frame_attention "${kernel_args[@]}" --bias \
  --out "$out/frame_attention_bias_cuda.json"
# 2. Issue 7: AIM's inference clips/s (both kernels) vs the plain image model, batch 32, bf16, eager and compiled.
step inference 110 python3 -m benchmarks.train_cost "${dev[@]}" "${tiny[@]}" --inference-only \
  --out "$out/inference_cuda.json"
# 3. Correctness on the GPU: the Triton frame-attention kernel vs the PyTorch path, compile, bf16 training step.
step cuda_tests 180 python3 -m pytest -q -p no:cacheprovider -m cuda tests
# 4. Issue 7: training cost (eager/compiled step, MFU, peak memory) of every row, the recomputation modes included
#    (aim = the default, which recomputes the adapters' cheap parts; aim checkpointing=none keeps everything;
#    aim kernel=tiled / kernel=pytorch: the other attention-over-frames implementations).
step train_cost 300 python3 -m benchmarks.train_cost "${dev[@]}" "${tiny[@]}" --no-inference \
  --out "$out/train_cost_cuda.json"
# 5. Issue 7: where the compiled AIM step's GPU time goes (top 15 kernels), printed last.
step profile 90 python3 -m benchmarks.profile_step "${profile_args[@]}" --out "$out/profile_aim_compiled.txt"
step profile_tiled 60 python3 -m benchmarks.profile_step "${profile_args[@]}" --row "aim kernel=tiled" \
  --out "$out/profile_aim_tiled_compiled.txt"
# 6. Issue 8: the embedded default's outcome in bf16 and compiled (a checkout of it, with its generated videos and
#    pretrained backbone cached, may be carried in .emb/).
if [ -d .emb ] && [ ${#tiny[@]} -eq 0 ]; then
  for variant in "train.precision=bf16" "train.precision=bf16 model.compile=true"; do
    (cd .emb && PYTHONPATH=/tmp/site:$PWD step "embedded" 100 python3 -m recipes.train $variant data.num_workers=6 \
      eval.num_workers=4 train.output_dir=/tmp/emb_runs)
  done
fi

echo
cat "$out/steps.txt"
grep -hE "^\|" "$log" | tail -n 40
grep -hA14 "^row .*fwd ms" "$log" | tail -n 30
grep -hE "^(train|inference) |^summary:" "$log" | tail -n 20
grep -iE "top-1|top1" "$log" | tail -n 12
for table in profile_aim_tiled_compiled profile_aim_compiled; do
  echo; cat "$out/$table.txt" 2>/dev/null || echo "$table: no table (see $log)"
done
