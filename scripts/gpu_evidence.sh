#!/usr/bin/env bash
# Throughput evidence on a CUDA GPU, everything written under OUT (logs, JSON):
#   1. `mtbench bench --device cuda` (the table and its JSON: MAML bmm / vmap / reference loop at
#      meta-batch 1, 8, 32, ProtoNet training and evaluation, episode sampling, peak memory);
#   2. real runs on Omniglot 5-way 1-shot (ProtoNet and MAML at the quick budget, ProtoNet in bf16);
#   3. the GPU tests (a replayed CUDA graph trains like the eager step; CPU and CUDA runs agree);
#   4. the pytest-benchmark suite's CUDA cases, saved with pytest-benchmark's machine info.
# Each stage has its own time limit and log; a failing stage does not stop the others.
#
# usage: scripts/gpu_evidence.sh OUT            (data: $MTBENCH_DATA must hold omniglot/)
set -u
out=${1:?usage: scripts/gpu_evidence.sh OUT_DIR}
mkdir -p "$out/results"
py=${PYTHON:-python}

stage() {  # stage NAME SECONDS COMMAND...
    local name=$1 limit=$2 t0=$SECONDS rc
    shift 2
    echo "== $name (limit ${limit}s): $*"
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    rc=$?
    echo "== $name: exit $rc after $((SECONDS - t0)) s"
    tail -n "${TAIL:-30}" "$out/$name.log"
}

"$py" -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name(0))" | tee "$out/device.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >>"$out/device.txt" 2>&1

stage bench 200 mtbench bench --device cuda --repeats 3 --out "$out/bench_cuda.json"
stage run-protonet 60 mtbench run --method protonet --dataset omniglot --device cuda --no-progress --out "$out/results"
stage run-protonet-bf16 60 mtbench run --method protonet --dataset omniglot --device cuda --precision bf16 \
    --no-progress --out "$out/results"
stage run-maml 100 mtbench run --method maml --dataset omniglot --device cuda --no-progress --out "$out/results"
stage gpu-tests 90 "$py" -m pytest tests/test_graphs.py tests/test_methods.py -m gpu -k "graph or protonet or maml" -q \
    -p no:cacheprovider
TAIL=15 stage pytest-benchmark 100 "$py" -m pytest tests/benchmarks --benchmark-only -k "cuda and (not loop or 32)" \
    --benchmark-json "$out/pytest_benchmark_cuda.json" --benchmark-min-rounds 3 --benchmark-max-time 0.5 \
    -p no:cacheprovider
