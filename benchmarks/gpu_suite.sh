#!/usr/bin/env bash
# The GPU checks in one go, for a lent GPU machine without Ray (the model and the actor's code path only):
# the card and its bf16 GEMM ceiling, bf16 parity with transformers, model throughput, the actor path.
# Each step has its own time limit, and its log lands in OUT (default ./gpu-out) as soon as it is written.
#   bash benchmarks/gpu_suite.sh               # every step
#   bash benchmarks/gpu_suite.sh actor profile # only these
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH=. PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
STEPS=" ${*:-card embed parity actor batches loss profile} "

step() {  # step NAME SECONDS COMMAND...: runs COMMAND under a time limit, its output into OUT/NAME.log
    local name=$1 limit=$2
    shift 2
    [[ $STEPS == *" $name "* ]] || return 0
    echo "=== $name ($(date +%T))"
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    echo "exit $? after $SECONDS s in all"
    tail -n 14 "$OUT/$name.log"
}

step card 40 bash -c "nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv; $PY - <<'EOF'
import torch, time
a, b = (torch.randn(8192, 8192, device='cuda', dtype=torch.bfloat16) for _ in range(2))
for _ in range(3): a @ b
torch.cuda.synchronize(); t = time.perf_counter()
for _ in range(20): a @ b
torch.cuda.synchronize(); s = (time.perf_counter() - t) / 20
print(f'{torch.cuda.get_device_name()}, torch {torch.__version__}: bf16 8192^3 GEMM {2 * 8192**3 / s / 1e12:.0f} TFLOP/s')
EOF"
step embed 170 "$PY" -m benchmarks.model_throughput --device cuda --dtypes bf16 --tasks embed --batch-size 512 --iters 10 --compile both
step parity 90 "$PY" -m benchmarks.gpu_parity --compile
step actor 120 "$PY" -m benchmarks.actor_path --device cuda --batch-size 512 --batches 4 --compile
step batches 45 "$PY" -m benchmarks.model_throughput --device cuda --dtypes bf16 --tasks embed --batch-size 128,1024 --iters 10
step loss 110 "$PY" -m benchmarks.model_throughput --device cuda --dtypes bf16 --tasks loss --batch-size 256 --iters 10 --compile both
step vitmae 100 "$PY" -m benchmarks.model_throughput --device cuda --dtypes bf16 --tasks embed --batch-size 512 --iters 10 --compile vitmae
step profile 90 "$PY" -m benchmarks.gpu_profile --batch-size 512
