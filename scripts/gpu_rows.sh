#!/usr/bin/env bash
# One call of a lent GPU, everything written under OUT: leaderboard rows side by side on the GPU, the GPU tests
# beside them, then the evaluation bench alone on the GPU.
#   1. ROWS (one "label|mtbench run options" per line): each row `mtbench run ... --device cuda
#      --checkpoint-every 1 --out OUT/<label>`, all at once (small episodes leave the GPU mostly idle, so rows
#      side by side cost little more than one), continued with --resume when OUT/<label>/.resume is carried in;
#      stopped (SIGTERM: the state is saved) BENCH_SECONDS before the end;
#   2. beside them, the tests marked gpu (batched adaptation against the per-episode path on CUDA, float64);
#   3. alone on the GPU: `mtbench bench --device cuda --evaluation all` on 600 episodes (each method's evaluation
#      against its work-bound time; MAML against the learn2learn-style loop).
# Each stage has its own log; a failing stage does not stop the others.
#
# usage: scripts/gpu_rows.sh OUT SECONDS       ($MTBENCH_DATA must hold the rows' datasets and omniglot/)
#   ROWS="" runs no rows; ROWS=paper the Omniglot paper-budget rows without a result (below). Unset: the two Omniglot 20w5s comparisons of the reproduction page that no row fills yet,
#   MAML's and Reptile's, slow on a 2-core CPU: MAML's quick fit reached 11 of its 700 meta-iterations in 302 s
#   (2026-12-05, beside other jobs); scoring Reptile's 20w5s episodes transductively took 3,332 s (the committed
#   row), and the non-transductive scoring runs each query in a batch of its own. Reptile's fit is saved in OUT.
set -u
out=${1:?usage: scripts/gpu_rows.sh OUT SECONDS}
seconds=${2:?usage: scripts/gpu_rows.sh OUT SECONDS}
bench_seconds=${BENCH_SECONDS:-150}
device=${DEVICE:-cuda}                  # DEVICE=cpu, with small ROWS and BENCH_EPISODES: a rehearsal on the CPU
bench_episodes=${BENCH_EPISODES:-600}
rows=${ROWS-"maml-20w5s|--method maml --dataset omniglot --ways 20 --shots 5 --budget quick
reptile-20w5s|--method reptile --dataset omniglot --ways 20 --shots 5 --budget quick --save $out/reptile-20w5s.pt"}
# ROWS=paper: the Omniglot paper-budget rows that the CPU has fitted for under 4 % of their schedule (MAML and
# first-order MAML at 5w5s and 20w1s) or not at all (Reptile at 20w1s), each fitted for FIT_MINUTES (default 4),
# from scratch on the GPU unless OUT/<label>/.resume is carried in, and then evaluated as the partial fit it is
# (mtbench run --fit-minutes: the result says how many of the paper's iterations it reached; --resume continues
# it); PAPER_EPISODES fewer test episodes for a rehearsal (DEVICE=cpu)
if [ "$rows" = paper ]; then
    more="--budget paper --fit-minutes ${FIT_MINUTES:-4}${PAPER_EPISODES:+ --episodes $PAPER_EPISODES}"
    rows="maml-5w5s-paper|--method maml --dataset omniglot --ways 5 --shots 5 $more
maml-20w1s-paper|--method maml --dataset omniglot --ways 20 --shots 1 $more
maml-fo-5w5s-paper|--method maml --hp first_order=true --dataset omniglot --ways 5 --shots 5 $more
maml-fo-20w1s-paper|--method maml --hp first_order=true --dataset omniglot --ways 20 --shots 1 $more
reptile-20w1s-paper|--method reptile --dataset omniglot --ways 20 --shots 1 $more --save $out/reptile-20w1s-paper.pt"
fi
deadline=$((SECONDS + seconds))
export PYTHONUNBUFFERED=1
mkdir -p "$out"
# the package run as a module by the python that holds torch (a lent machine's `mtbench` script, if any, may
# belong to another python)
mtbench=(python -m mtbench)

python -c "import torch; print('torch', torch.__version__, '|', torch.cuda.is_available() and torch.cuda.get_device_name(0))" \
    | tee "$out/device.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >>"$out/device.txt" 2>&1

pids=()
while IFS='|' read -r label options; do
    [ -z "$label" ] && continue
    mkdir -p "$out/$label"
    resume=()
    [ -d "$out/$label/.resume" ] && resume=(--resume)
    # shellcheck disable=SC2086  # $options holds several options
    (timeout -s TERM -k 60 $((deadline - bench_seconds - SECONDS)) "${mtbench[@]}" run $options --device "$device" \
        --checkpoint-every 1 --no-progress --out "$out/$label" "${resume[@]}" >"$out/$label.log" 2>&1
     echo "== $label: exit $? at $SECONDS s") &
    pids+=($!)
done <<<"$rows"

# the batched paths' equality tests (seconds; tests/test_methods.py's CPU-against-CUDA fits take minutes beside rows)
(timeout 240 python -m pytest -o addopts="" -m gpu -q -p no:cacheprovider tests/test_batched_eval.py \
    tests/test_batched_heads.py tests/test_batched_reptile_scratch.py tests/test_backbones.py >"$out/gpu-tests.log" 2>&1
 echo "== gpu tests: exit $? at $SECONDS s"; tail -n 5 "$out/gpu-tests.log") &
pids+=($!)
wait "${pids[@]}"
for f in "$out"/*.log; do echo "== $f"; tail -n 12 "$f"; done

left=$((deadline - SECONDS))
echo "== bench (limit ${left}s)"
timeout "$left" "${mtbench[@]}" bench --device "$device" --no-measurements --evaluation all --episodes "$bench_episodes" --repeats 1 \
    --out "$out/bench_evaluation.json" >"$out/bench.log" 2>&1
echo "== bench: exit $? at $SECONDS s"
tail -n 40 "$out/bench.log"
