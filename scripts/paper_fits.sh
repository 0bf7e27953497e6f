#!/usr/bin/env bash
# Paper-budget fits that span several time-limited calls (a lent GPU's 10-minute commands, a preemptible node).
# Each fit saves its state every MINUTES under OUT/<dataset>/<setting>/.resume/ (mtbench run --checkpoint-every);
# the call stops itself SECONDS after it began (SIGTERM: the running fit saves its state at the end of its
# iteration and exits), and a later call with the same OUT continues that fit (--resume) and then the next ones.
# A fit whose result is written is marked done (OUT/<dataset>/<setting>/.done-<label>) and not run again; its fitted
# method is saved beside it (OUT/<dataset>/<setting>/<label>.pt, --save: a partial fit records the iterations it ran),
# so that another evaluation can score that fit (--budget 0 --init FILE, e.g. --method reptile-transductive; at 20
# ways with the --hp of the paper's test-time recipe that run's note names, e.g. --hp eval_batch=10).
#
# usage: scripts/paper_fits.sh OUT SECONDS [extra mtbench run options, e.g. --device cuda]
#   PAPER_FITS: the fits, one "label|method|dataset|ways|shots|more options" per line (default: Omniglot below)
#   MINUTES:    the checkpoint period (default 2)
# Carry OUT to the next call (it holds the saved states, a few MiB each); the results are OUT/**/*.json.
set -u
out=${1:?usage: scripts/paper_fits.sh OUT SECONDS [mtbench run options]}
seconds=${2:?usage: scripts/paper_fits.sh OUT SECONDS [mtbench run options]}
shift 2
mtbench=${MTBENCH:-mtbench}
minutes=${MINUTES:-2}
deadline=$((SECONDS + seconds))
# default: the Omniglot paper-budget rows the leaderboard lacks (ProtoNet, MatchingNet and fine-tune have the others)
fits=${PAPER_FITS:-"protonet-5w5s|protonet|omniglot|5|5|
maml-5w1s|maml|omniglot|5|1|
maml-fo-5w1s|maml|omniglot|5|1|--hp first_order=true
reptile-5w1s|reptile|omniglot|5|1|
maml-5w5s|maml|omniglot|5|5|
maml-20w1s|maml|omniglot|20|1|
maml-fo-5w5s|maml|omniglot|5|5|--hp first_order=true
maml-fo-20w1s|maml|omniglot|20|1|--hp first_order=true
reptile-5w5s|reptile|omniglot|5|5|
reptile-20w1s|reptile|omniglot|20|1|"}

while IFS='|' read -r label method dataset ways shots more; do
    [ -z "$label" ] && continue
    folder="$out/$dataset/${ways}w${shots}s"
    [ -e "$folder/.done-$label" ] && { echo "== $label: done"; continue; }
    left=$((deadline - SECONDS))
    if [ "$left" -lt 30 ]; then echo "== $label: not started, ${left} s left"; break; fi
    mkdir -p "$folder"
    # shellcheck disable=SC2086  # $more holds several options
    cmd=("$mtbench" run --method "$method" --dataset "$dataset" --ways "$ways" --shots "$shots" --budget paper
         --checkpoint-every "$minutes" --out "$folder" --save "$folder/$label.pt" --no-progress $more "$@")
    # a saved state of this fit: continue it; none (mtbench says "no saved fit"): start it
    timeout -s TERM -k 120 "$left" "${cmd[@]}" --resume 2>"$folder/.err-$label"
    rc=$?
    if [ "$rc" -eq 2 ] && grep -q "no saved fit" "$folder/.err-$label"; then
        left=$((deadline - SECONDS))
        timeout -s TERM -k 120 "$left" "${cmd[@]}" 2>"$folder/.err-$label"
        rc=$?
    fi
    if [ "$rc" -eq 0 ]; then
        touch "$folder/.done-$label"
        echo "== $label: done"
    else
        echo "== $label: exit $rc (143/124: stopped at the time limit, its state saved; run again to continue)"
        tail -n 3 "$folder/.err-$label"
        break
    fi
done <<<"$fits"
