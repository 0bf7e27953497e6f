"""Batched against per-episode MAML evaluation on real Omniglot, at full length (issue: "batched and per-episode
MAML agree on >= 99 % of the 600 episodes and on the mean to 0.001").

A saved MAML (``mtbench run --method maml ... --save FILE``) scores the same Omniglot 5-way 1-shot test episodes
twice: episode by episode through ``adapt`` (the reference path), and in chunks of ``--chunk`` episodes adapted
at once through ``adapt_batch`` (vmapped, float32). Prints the agreement and writes it, with both runs' per-episode
accuracies, as JSON. CI runs the same comparison on 20 episodes (tests/test_real_omniglot_runs.py).

usage: python scripts/maml_chunk_agreement.py CHECKPOINT OUT.json [--episodes 600] [--chunk 10] [--data-root DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from mtbench.core.atomic import atomic_write
from mtbench.data import DATASETS
from mtbench.data.episodes import EpisodeSet, EpisodeSpec
from mtbench.core.runtime import device_name
from mtbench.run.checkpoints import read_checkpoint, restore
from mtbench.run.evaluate import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--chunk", type=int, default=10)
    parser.add_argument("--data-root", default=os.environ.get("MTBENCH_DATA"))
    args = parser.parse_args()

    blob, _ = read_checkpoint(args.checkpoint)
    method, _ = restore(blob, 5, torch.device("cpu"))
    test = DATASETS.get("omniglot")(root=args.data_root, progress=False).load("test")
    episodes = EpisodeSet(test, EpisodeSpec(5, 1, 15, args.episodes, seed=0))
    runs, seconds = {}, {}
    for name, options in (("per_episode", {"batched": False}),
                          ("chunked", {"max_values": args.chunk * 80 * 28 * 28})):
        start = time.perf_counter()
        runs[name] = evaluate(method, episodes, progress=True, **options)
        seconds[name] = time.perf_counter() - start
    alone, chunked = (runs[n]["accuracy"] for n in ("per_episode", "chunked"))
    same = sum(a == b for a, b in zip(alone["per_episode"], chunked["per_episode"]))
    doc = {
        "what": "MAML on real Omniglot 5w1s: chunks adapted at once (adapt_batch) against episode by episode (adapt)",
        "checkpoint": {"path": str(args.checkpoint), "method_version": blob["method_version"],
                       "iterations": blob["iterations"], "hparams": blob["hparams"]},
        "episodes": args.episodes, "chunk": runs["chunked"]["evaluation"]["batched_episodes"],
        "episodes_sha": episodes.sha, "identical_episodes": same, "identical_fraction": same / args.episodes,
        "mean": {"per_episode": alone["mean"], "chunked": chunked["mean"]},
        "mean_difference": chunked["mean"] - alone["mean"],
        "seconds": seconds, "device": device_name(torch.device("cpu")), "torch": torch.__version__,
        "per_episode": {"per_episode": alone["per_episode"], "chunked": chunked["per_episode"]},
    }
    atomic_write(args.out, lambda tmp: tmp.write_text(json.dumps(doc, indent=1)))
    print(f"identical on {same} of {args.episodes} episodes ({100 * same / args.episodes:.1f} %); means "
          f"{alone['mean']:.4f} (per episode) and {chunked['mean']:.4f} (chunks of {doc['chunk']}), difference "
          f"{doc['mean_difference']:+.4f}; wrote {args.out}")


if __name__ == "__main__":
    main()
