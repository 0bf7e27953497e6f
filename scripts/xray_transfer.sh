#!/usr/bin/env bash
# The chest X-ray transfer comparison: every method fitted on miniImageNet at the quick budget, then
# adapted to the same 20 seeded trials of 200 labelled / 50 test X-rays; prints the ranked table.
#   usage: scripts/xray_transfer.sh [OUT_FOLDER] [extra mtbench run options, e.g. --device cuda]
# Needs mini-imagenet/ and chest_xray/ in the data root ($MTBENCH_DATA or --data-root).
set -euo pipefail
out="${1:-results/xray}"
shift || true
mtbench="${MTBENCH:-mtbench}"
ckpt="$(mktemp -d)"
trap 'rm -rf "$ckpt"' EXIT
run() {  # one mtbench run, then its wall-clock time (loading, fit and the 20 trials)
    local start=$SECONDS
    "$mtbench" run --dataset xray --budget quick --out "$out" "$@"
    echo "[wall $((SECONDS - start)) s] mtbench run --dataset xray --budget quick $*"
    echo
}

run --method scratch "$@"
run --method finetune "$@"
run --method feature-extract "$@"
run --method protonet "$@"
run --method maml --save "$ckpt/maml.pt" "$@"
# meta-then-transfer: MAML's meta-learned network, fine-tuned whole on the 200 X-rays of each trial
run --method finetune --budget 0 --init "$ckpt/maml.pt" --hp backbone=conv4-32 --hp finetune_backbone=true \
    --hp ft_batch=20 --hp ft_epochs=20 --hp report_steps=0,10,50,100,200 "$@"
"$mtbench" compare "$out"
