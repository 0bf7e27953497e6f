"""scripts/paper_fits.sh, the paper-budget fits spread over time-limited calls: which command each fit runs (continue a
saved state, else start), where it saves the fitted method, and that a finished fit is not run again. mtbench itself is
replaced by a stand-in that logs its arguments (``MTBENCH``): the fits, their saved states and ``--save`` of a partial
fit are tested for real in tests/test_partial_fits.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "paper_fits.sh"

# answers --resume as mtbench does when no state is saved, and anything else as a fit that ran to its end
STAND_IN = """#!/usr/bin/env bash
echo "$*" >> "$LOG"
case " $* " in
  *" --resume "*) echo "mtbench: --resume: no saved fit of this run in $8" >&2; exit 2 ;;
esac
exit 0
"""


def _run(tmp_path: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    stand_in = tmp_path / "mtbench"
    stand_in.write_text(STAND_IN)
    stand_in.chmod(0o755)
    env = {**os.environ, "MTBENCH": str(stand_in), "LOG": str(tmp_path / "log"),
           "PAPER_FITS": "pn|protonet|omniglot|5|1|\nfo|maml|omniglot|20|1|--hp first_order=true"}
    done = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out"), "60", "--device", "cpu"], env=env,
                          capture_output=True, text=True, timeout=60)
    log = tmp_path / "log"
    return done, log.read_text().splitlines() if log.exists() else []


def test_each_fit_continues_or_starts_saves_its_method_and_is_then_done(tmp_path):
    done, calls = _run(tmp_path)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    # each fit: first tried as a continuation (--resume), which finds no state, then started
    assert len(calls) == 4 and ["--resume" in c for c in calls] == [True, False, True, False]
    assert calls[1].startswith("run --method protonet --dataset omniglot --ways 5 --shots 1 --budget paper "
                               f"--checkpoint-every 2 --out {out}/omniglot/5w1s --save {out}/omniglot/5w1s/pn.pt")
    assert calls[1].endswith("--device cpu")  # the call's own options, after the fit's
    assert f"--out {out}/omniglot/20w1s --save {out}/omniglot/20w1s/fo.pt" in calls[3]
    assert "--hp first_order=true" in calls[3]
    assert (out / "omniglot" / "5w1s" / ".done-pn").exists() and (out / "omniglot" / "20w1s" / ".done-fo").exists()
    # the same call again: both fits are done, nothing runs
    again, calls_again = _run(tmp_path)
    assert again.returncode == 0 and calls_again == calls
    assert again.stdout.splitlines() == ["== pn: done", "== fo: done"]
