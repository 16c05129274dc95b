#!/usr/bin/env bash
# The GPU check (issue 15), one command on one GPU, aimed at 8 minutes:
#   1. the `gpu`-marked tests,
#   2. bench_step.py --cuda-variants (fp32 vs bf16 + channels_last, DDP 1 vs all GPUs),
#   3. `basis regime` of configs/synthetic/study-gpu.yaml for seed 0 (pretrain, init and
#      score stages on this GPU, local executor), against the regime targets.
# For a machine that has torch, torchvision, pyarrow, pandas, scipy and pytest but not
# Ray, MLflow, submitit or pycocotools: the regime needs neither Ray nor MLflow, and the
# other two travel as wheels in .whl/ (made on the development machine, see
# benchmarks/README.md). Everything it writes goes to $OUT (default runs/gpu-check):
# gpu_check.log, bench_step.txt, regime.jsonl and regime.md.
#
#   bash benchmarks/gpu_check.sh            # OUT=/some/folder bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/basis-site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/basis-site:$PWD${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
exec > >(tee "$OUT/gpu_check.log") 2>&1
status=0
echo "== $(date -Is) $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>&1 | head -1)"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
echo "== 1. gpu-marked tests"
timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/basis || status=1
echo "== 2. bench_step.py --cuda-variants"
timeout 150 python3 benchmarks/bench_step.py --cuda-variants | tee "$OUT/bench_step.txt" \
  || status=1
echo "== 3. basis regime configs/synthetic/study-gpu.yaml --seeds 0"
timeout 330 python3 -m jobs.cli regime configs/synthetic/study-gpu.yaml --profile local \
  --seeds 0 --sweep-dir "$OUT/regime-sweep" --markdown > "$OUT/regime.md" || status=1
cat "$OUT/regime.md"
cp "$OUT/regime-sweep/regime.jsonl" "$OUT/regime.jsonl" 2>/dev/null
echo "== $(date -Is) status $status"
exit "$status"
