"""The ``mtbench`` command: a thin click shell over library calls."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from mtbench import __version__
from mtbench.cli import board as boardcmd
from mtbench.cli import sweep as sweepcmd
from mtbench.cli.options import CONTEXT_SETTINGS, resume_options, run_options, run_spec, summary, user_errors


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="mtbench")
def main() -> None:
    """mtbench: benchmark meta-learning and transfer-learning methods on shared, seeded episodes."""


@main.command("ls")
@click.argument("kind", required=False, type=click.Choice(["datasets", "methods", "backbones"]))
@user_errors
def ls(kind: str | None) -> None:
    """List registered datasets, methods and backbones with a one-line description each."""
    from mtbench.methods.backbones import BACKBONES
    from mtbench.data import DATASETS
    from mtbench.methods import METHODS
    from mtbench.core.registry import describe

    for name, registry in (("datasets", DATASETS), ("methods", METHODS), ("backbones", BACKBONES)):
        if kind and kind != name:
            continue
        click.echo(f"{name}:")
        items = list(registry.items())
        width = max((len(item) for item, _ in items), default=0)  # the section's longest name sets its column
        for item, obj in items:
            click.echo(f"  {item:<{width}}  {describe(obj)}")


@main.command("run")
@click.option("--method", "-m", required=True, help="Method name (see `mtbench ls`) or module:Class.")
@click.option("--dataset", "-d", required=True, help="Dataset name (see `mtbench ls`).")
@click.option("--source", default=None,
              help="Dataset to fit on (default: the dataset's own, or for a transfer target such as xray, miniimagenet).")
@run_options
@click.option("--out", type=click.Path(), default="results", show_default=True, help="Folder for the result JSON.")
@click.option("--init", "init", type=click.Path(dir_okay=False), default=None,
              help="Start from a checkpoint written by --save (another method: its backbone only).")
@click.option("--save", "save", type=click.Path(dir_okay=False), default=None,
              help="Write the fitted method to this checkpoint file.")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
              help="fp32, or bf16: fit and evaluation under torch.autocast to bfloat16.")
@click.option("--compile/--no-compile", "compile_", default=False, show_default=True,
              help="Compile the method's networks with torch.compile (not for maml or reptile).")
@resume_options
@user_errors
def run_cmd(method: str, dataset: str, source: str | None, out: str, init: str | None, save: str | None,
            precision: str, compile_: bool, **options: Any) -> None:
    """Fit METHOD on DATASET (or on --source), evaluate it on the fixed test episodes or transfer
    trials and write one result JSON."""
    from mtbench.run.runner import run

    spec = run_spec(method, dataset, out, init=init, save=save, source=source, precision=precision,
                    compile=compile_, **options)
    doc, path = run(spec)
    click.echo(summary(doc, path))


@main.command("compare")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--markdown", "fmt", flag_value="markdown", help="Print Markdown tables.")
@click.option("--text", "fmt", flag_value="text", default=True, help="Print aligned text tables (default).")
@user_errors
def compare_cmd(paths: tuple[str, ...], fmt: str) -> None:
    """Rank the results in PATHS (files or folders) side by side, one table per set of shared episodes."""
    from mtbench.board.compare import collect, render

    click.echo(render(collect(paths), fmt))


# -- mtbench data ----------------------------------------------------------------------------------
def _data_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress bars.")(fn)
    return click.option("--data-root", type=click.Path(file_okay=False), default=None,
                        help="Folder holding the datasets (default: $MTBENCH_DATA, else ~/.cache/mtbench/data).")(fn)


@main.group("data")
def data_group() -> None:
    """List, verify, download and install the datasets under the data root."""


@data_group.command("list")
@click.option("--data-root", type=click.Path(file_okay=False), default=None,
              help="Folder holding the datasets (default: $MTBENCH_DATA, else ~/.cache/mtbench/data).")
@user_errors
def data_list(data_root: str | None) -> None:
    """Each registered dataset: found or missing, where under the data root, and how to get a missing one."""
    from mtbench.cli.data import list_text

    click.echo(list_text(data_root))


@data_group.command("verify")
@click.argument("names", nargs=-1, metavar="[NAME...]")
@_data_options
@user_errors
def data_verify(names: tuple[str, ...], data_root: str | None, progress: bool) -> None:
    """Check structure, counts and checksums of the named datasets (default: all; missing ones are listed).

    Exits 1 when a check fails or a named dataset is missing, 2 on an unknown name.
    """
    from mtbench.cli.data import verify

    text, ok = verify(names, data_root, progress)
    click.echo(text)
    if not ok:
        sys.exit(1)


@data_group.command("download")
@click.argument("name")
@_data_options
@user_errors
def data_download(name: str, data_root: str | None, progress: bool) -> None:
    """Download NAME from its official URL, checksum-verified (omniglot, pneumoniamnist)."""
    from mtbench.cli.data import download

    click.echo(download(name, data_root, progress))


@data_group.command("prepare")
@click.argument("name")
@click.option("--from", "source", required=True, type=click.Path(),
              help="A copy you have: a folder, or an archive (.zip, .npz, .pkl) where the dataset accepts one.")
@_data_options
@user_errors
def data_prepare(name: str, source: str, data_root: str | None, progress: bool) -> None:
    """Check the copy of NAME at --from and install it under the data root, atomically, then verify it.

    miniimagenet: a folder with images/ + train/val/test.csv, or the three mini-imagenet-cache-*.pkl;
    xray, xray3: the chest_xray folder, its parent, or the .zip from DOI 10.17632/rscbjbr9sj.2;
    omniglot: the two official zips (MD5-checked) or the extracted folders; pneumoniamnist: the .npz.
    """
    from mtbench.cli.data import prepare

    click.echo(prepare(name, source, data_root, progress))


from mtbench.cli import folders as folderscmd  # noqa: E402 - beside the group it extends

data_group.add_command(folderscmd.data_add)
main.add_command(folderscmd.predict_cmd)


# -- mtbench bench ---------------------------------------------------------------------------------
@main.command("bench")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda or cuda:N.")
@click.option("--meta-batch", "meta_batch", multiple=True, default=("1,8,32",), show_default=True,
              help="MAML meta-batch sizes, comma-separated or repeated.")
@click.option("--repeats", type=int, default=3, show_default=True, help="Timed steps per measurement (after a warm-up).")
@click.option("--episodes", type=int, default=600, show_default=True,
              help="Episodes of the fixed evaluation set that the evaluator and the sampling measurements run.")
@click.option("--data-root", type=click.Path(file_okay=False), default=None,
              help="Folder holding omniglot/ (default: $MTBENCH_DATA, else ~/.cache/mtbench/data); "
                   "without it, random images of Omniglot's shape.")
@click.option("--out", default=None, metavar="FILE.json",
              help="Also write the measurements to this JSON file. `mtbench report` shows the files in "
                   "leaderboards/throughput/: to publish a run, write it there as <device>_<UTC time>.json.")
@click.option("--malloc-tuning/--no-malloc-tuning", default=True, show_default=True,
              help="On the CPU, keep freed memory in glibc's heap, as `mtbench run` does.")
@click.option("--evaluation", default="", metavar="METHODS",
              help="Also time these methods' evaluation of --episodes episodes against their work-bound time "
                   "(comma-separated, or `all`), and MAML's against a learn2learn-style loop.")
@click.option("--measurements/--no-measurements", default=True, show_default=True,
              help="The throughput measurements; --no-measurements runs only --evaluation and --maml-curves.")
@click.option("--maml-curves", type=int, default=0, show_default=True, metavar="N",
              help="Also train MAML and a learn2learn-style loop N meta-iterations from the same seed (in the "
                   "settings of --curves-recipe) and score both on --episodes episodes every --curve-every "
                   "iterations.")
@click.option("--curve-every", type=int, default=50, show_default=True, help="Scoring interval of --maml-curves.")
@click.option("--curves-recipe", default="omniglot-finn", show_default=True, metavar="NAME",
              help="The tasks and settings of --maml-curves: omniglot-finn (Finn et al.'s Omniglot 5w1s), "
                   "omniglot-finn-20w1s (their 20-way recipe, MAML's --budget paper at 20w1s), "
                   "miniimagenet-quick-5w1s or miniimagenet-quick-5w5s (MAML's --budget quick recipe there).")
@click.option("--curves-fit-seed", type=int, default=0, show_default=True, metavar="N",
              help="Seed of the curves' initial weights and training tasks; the test episodes stay the same, so "
                   "fits of several seeds compare on them.")
@user_errors
def bench_cmd(device: str, meta_batch: tuple[str, ...], repeats: int, episodes: int, data_root: str | None,
              out: str | None, malloc_tuning: bool, evaluation: str, measurements: bool, maml_curves: int,
              curve_every: int, curves_recipe: str, curves_fit_seed: int) -> None:
    """Measure throughput on Omniglot-shaped tasks (5-way 1-shot, 15 queries, 28x28, Conv4): episode
    sampling, ProtoNet training and evaluation, second-order MAML meta-steps (bmm, vmap, and the per-task
    reference loop); print a table and the ratios."""
    from mtbench.bench.workloads import parse_meta_batches
    from mtbench.bench.record import BenchSpec, render, run, write
    from mtbench.core.runtime import select_device, tune_malloc

    from mtbench.methods import METHODS

    names = METHODS.names() if evaluation.strip() == "all" else [n.strip() for n in evaluation.split(",") if n.strip()]
    spec = BenchSpec(device=device, meta_batches=parse_meta_batches(meta_batch), repeats=repeats, episodes=episodes,
                     data_root=data_root, out=out, command=shlex.join(["mtbench", *sys.argv[1:]]),
                     evaluation=tuple(names), measurements=measurements, maml_curves=maml_curves,
                     curve_every=curve_every, curves_recipe=curves_recipe, curves_fit_seed=curves_fit_seed)
    if malloc_tuning and select_device(device).type == "cpu":
        tune_malloc()
    doc = run(spec, log=lambda text: click.echo(text, err=True))
    click.echo(render(doc))
    if out:
        click.echo(f"\nwrote {write(doc, out)}")


# -- mtbench report --------------------------------------------------------------------------------
@main.command("report")
@click.option("--leaderboards", type=click.Path(), default="leaderboards", show_default=True,
              help="The leaderboard folder; the throughput page reads the `mtbench bench` files in its throughput/.")
@click.option("--out", type=click.Path(), default="reports", show_default=True,
              help="Folder for the pages (index, throughput: .md and .html) and figures/; they are replaced.")
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar over the pages  [default: when stderr is a terminal].")
@user_errors
def report_cmd(leaderboards: str, out: str, progress: bool | None) -> None:
    """Regenerate the report from the leaderboard folder alone: Markdown pages for GitHub, self-contained
    HTML pages, SVG figures, and an index; the same inputs give byte-identical files."""
    from mtbench.report import report

    written = report(Path(leaderboards), Path(out), progress=progress)
    pages = [str(p) for p in written if p.parent == Path(out)]
    click.echo(f"wrote {', '.join(pages)} and {len(written) - len(pages)} figure(s) in {Path(out) / 'figures'}")


from mtbench.cli.reproduce import reproduce_cmd  # noqa: E402

for _command in (boardcmd.official_cmd, boardcmd.validate_cmd, boardcmd.leaderboard_cmd, boardcmd.submit_cmd,
                 sweepcmd.sweep_cmd, reproduce_cmd):
    main.add_command(_command)

if __name__ == "__main__":  # pragma: no cover
    main()
