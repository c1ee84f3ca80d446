#!/usr/bin/env bash
# The one short GPU check of the pretraining engine (issue 3), for a lent CUDA machine:
# preset base at seq 128 in bf16: tokens/s and model-FLOPs utilisation against the Trainer
# baseline (eager, then torch.compile'd); preset mini likewise; and a CLI pretraining run.
#   bash benchmarks/gpu_check.sh PREPARED_DATA_DIR [OUT_DIR]
# Takes a prepared NSP dataset (`workbench prepare --out DIR`): the GPU box may lack the corpus.
set -u
DATA=${1:?usage: gpu_check.sh PREPARED_DATA_DIR [OUT_DIR]}
OUT=${2:-benchmarks/results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"

bench() {  # preset batch [--compile]
  echo "== preset $1, batch $2, ${3:-eager}"
  timeout "${STEP_TIMEOUT:-240}" $PY benchmarks/pretrain_throughput.py --preset "$1" --batch-size "$2" \
      --steps 40 --segment 4 --data "$DATA" ${3:-} --out "$OUT/gpu_$1${3:+_compiled}.json" 2>&1 | grep -v "^{'" | tail -12
}
bench base 256
bench mini 256
echo "== CLI: workbench pretrain, preset mini, 600 steps, batch 128"
start=$SECONDS
timeout 180 $PY -m workbench pretrain --data "$DATA" --preset mini --max-steps 600 --batch-size 128 \
    --out /tmp/gpu_pretrain --overwrite --no-progress --eval-every 200 2>&1 | tail -8
echo "CLI wall $((SECONDS - start)) s"
cp /tmp/gpu_pretrain/eval.json "$OUT/gpu_cli_eval.json" 2>/dev/null
bench base 256 --compile
