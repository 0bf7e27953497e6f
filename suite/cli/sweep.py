"""``mtbench sweep``: a grid of runs (option values or a sweep file) on the local or the Ray engine; the engine
options it shares with ``mtbench official``."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from mtbench.cli.options import user_errors
from mtbench.core.errors import UserError

#: the options that make the grid: not with a sweep file, which gives them
GRID_OPTIONS = ("method", "dataset", "protocol", "ways", "shots", "queries", "episodes", "train_images", "test_images",
                "trials", "seed", "budget")


def engine_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """How a sweep's trials run: the engine, its resources, where it keeps its state; --retry-failed, --dry-run."""
    from mtbench.board.engines import DEFAULT_STORAGE, ENGINES

    options = [
        click.option("--engine", type=click.Choice(ENGINES), default=None,
                     help="local: one trial after another in this process; ray: Ray tasks, several at a time, on "
                          "this machine or a cluster.  [default: ray when installed, else local]"),
        click.option("--address", default=None, metavar="HOST:PORT",
                     help="Join this Ray cluster (else $RAY_ADDRESS, else start Ray on this machine)."),
        click.option("--cpus-per-trial", type=click.IntRange(min=1), default=1, show_default=True,
                     help="CPUs each trial reserves and torch threads it runs."),
        click.option("--gpus-per-trial", type=click.FloatRange(min=0), default=0.0, show_default=True,
                     help="GPUs each trial reserves (Ray; 0.25 runs four trials per GPU)."),
        click.option("--storage", type=click.Path(file_okay=False), default=str(DEFAULT_STORAGE), show_default=True,
                     help="Ray's own files (a local instance's logs and sockets) and the record of failed trials."),
        click.option("--retry-failed", is_flag=True, help="Run again the trials that failed in an earlier sweep."),
        click.option("--dry-run", is_flag=True, help="List the trials, which would run and their expected cost."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM stops a sweep as Ctrl-C does: running trials cancelled, their claims released."""
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        before = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave SIGTERM alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def dry_run_listing(trials: list[Any], storage: str, retry_failed: bool) -> None:
    """Each trial: whether it would run, and what it is expected to cost (from a comparable result)."""
    from mtbench.board.engines import earlier_failure
    from mtbench.board.sweep import existing, expected_seconds

    total, unknown, todo = 0.0, 0, 0
    for i, t in enumerate(trials, 1):
        head = f"[{i}/{len(trials)}] {t.summary}"
        if (path := existing(t)) is not None:
            click.echo(f"{head}: skip, result exists ({path.name})")
            continue
        if not retry_failed and (error := earlier_failure(Path(storage), t)) is not None:
            click.echo(f"{head}: skip, failed in an earlier sweep ({error}); --retry-failed reruns it")
            continue
        todo += 1
        cost = expected_seconds(t)
        if cost is None:
            unknown += 1
            click.echo(f"{head}: run, expected cost unknown")
        else:
            total += cost[0]
            click.echo(f"{head}: run, expected {cost[0]:.1f} s (as {cost[1].name}{cost[2]})")
        click.echo(f"    {t.spec.command}")
    click.echo(f"{todo} of {len(trials)} trial(s) to run, expected {total:.0f} s one after another"
               + (f" plus {unknown} of unknown cost" if unknown else ""))


def run_sweep(trials: list[Any], *, engine: str | None, address: str | None, cpus_per_trial: int,
              gpus_per_trial: float, storage: str, retry_failed: bool, progress: bool, malloc: bool) -> None:
    """Run the trials on the engine, print the summary; exit 1 when any failed, 130 when interrupted."""
    from mtbench.board.engines import make_engine, run_trials

    with sigterm_interrupts():
        try:
            runner = make_engine(engine, cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
                                 address=address, storage=Path(storage), malloc=malloc)
        except KeyboardInterrupt:
            raise SystemExit(130) from None
        click.echo(f"{len(trials)} trial(s) on the {runner.name} engine, {runner.slots} at a time")
        report = run_trials(trials, runner, Path(storage), retry_failed, progress, echo=click.echo)
    click.echo(report.table())
    if report.interrupted:
        raise SystemExit(130)
    if report.count("failed", "failed-earlier"):
        click.echo(f"{report.count('failed', 'failed-earlier')} trial(s) failed", err=True)
        raise SystemExit(1)


@click.command("sweep")
@click.argument("sweep_file", required=False, type=click.Path(dir_okay=False))
@click.option("--method", "-m", default=None, help="Methods, comma-separated (see `mtbench ls`).")
@click.option("--dataset", "-d", default=None, help="Datasets, comma-separated.")
@click.option("--protocol", type=click.Choice(["episodes", "transfer"]), default=None,
              help="Few-shot episodes or transfer (default: each dataset's).")
@click.option("--ways", default=None, help="Classes per episode, comma-separated.  [default: 5]")
@click.option("--shots", default=None, help="Labelled images per class, comma-separated.  [default: 1]")
@click.option("--queries", default=None, help="Query images per class, comma-separated.  [default: 15]")
@click.option("--episodes", default=None, help="Fixed test episodes, comma-separated.  [default: 600]")
@click.option("--train-images", default=None, help="Transfer: labelled target images, comma-separated.")
@click.option("--test-images", default=None, help="Transfer: test images per trial, comma-separated.")
@click.option("--trials", default=None, help="Transfer: seeded draws, comma-separated.")
@click.option("--seed", default="0", show_default=True, help="Seeds of the test episodes, comma-separated.")
@click.option("--fit-seed", default="0", show_default=True,
              help="Seeds of the fit, comma-separated (with a sweep file too: each entry once per fit seed).")
@click.option("--budget", default="quick", show_default=True, help="Budgets (quick, paper, iterations), comma-separated.")
@click.option("--hp", "hparams", multiple=True, metavar="NAME=V1[,V2...]",
              help="Hparam values to sweep, for the methods that have it (repeatable).")
@click.option("--out", type=click.Path(file_okay=False), default="leaderboards", show_default=True,
              help="Results go into OUT/<dataset>/<setting>/.")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda or cuda:N.")
@click.option("--data-root", type=click.Path(file_okay=False), default=None,
              help="Folder holding the datasets (default: $MTBENCH_DATA, else ~/.cache/mtbench/data).")
@click.option("--download/--no-download", default=True, show_default=True, help="Download a missing dataset.")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
              help="fp32, or bf16 under torch.autocast.")
@click.option("--malloc-tuning/--no-malloc-tuning", default=True, show_default=True,
              help="On the CPU, keep freed memory in glibc's heap (as `mtbench run`).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="A progress bar over the trials.")
@engine_options
@user_errors
def sweep_cmd(sweep_file: str | None, fit_seed: str, hparams: tuple[str, ...], out: str, device: str,
              data_root: str | None, download: bool, precision: str, malloc_tuning: bool, progress: bool,
              engine: str | None, address: str | None, cpus_per_trial: int, gpus_per_trial: float, storage: str,
              retry_failed: bool, dry_run: bool, **grid_values: Any) -> None:
    """Run every combination of the given values (`--method protonet,maml --shots 1,5 --seed 0,1,2 --fit-seed
    0,1`), or every entry of every setting of SWEEP_FILE (the format of the official plan,
    mtbench/board/official.toml) once per --fit-seed, each as `mtbench run` would, into OUT/<dataset>/<setting>/.
    Idempotent and resumable: a trial whose result exists is skipped, and sweeps sharing OUT at once run each
    trial once (claims). On Ray (`pip install 'mtbench[ray]'`) trials run side by side, here or on a cluster
    (--address)."""
    from click.core import ParameterSource

    from mtbench.board.sweep import check, from_file, grid, whole_numbers

    overrides: dict[str, Any] = {"device": device, "data_root": data_root, "download": download,
                                 "precision": precision}
    extra = [*(["--device", device] if device != "auto" else []), *(["--data-root", data_root] if data_root else []),
             *([] if download else ["--no-download"]), *(["--precision", precision] if precision != "fp32" else [])]
    if sweep_file:
        ctx = click.get_current_context()
        given = [f"--{k.replace('_', '-')}" for k in GRID_OPTIONS if ctx.get_parameter_source(k) ==
                 ParameterSource.COMMANDLINE]
        if given:
            raise UserError(f"{', '.join(given)} with a sweep file: the file gives the grid; drop them, or drop "
                            f"{sweep_file} and give the grid as options")
        from mtbench.methods import parse_overrides

        overrides["hparams"] = tuple(parse_overrides(hparams).items())
        extra += [a for h in hparams for a in ("--hp", h)]
        fit_seeds, problems = whole_numbers("fit_seed", fit_seed)
        check(problems)
        trials = from_file(sweep_file, out, overrides, extra, fit_seeds)
    else:
        if not grid_values["method"] or not grid_values["dataset"]:
            raise UserError("give a sweep file, or at least --method and --dataset, e.g. mtbench sweep --method "
                            "protonet,maml --dataset omniglot --shots 1,5")
        trials = grid(grid_values.pop("method"), grid_values.pop("dataset"), out=out,
                      budgets=grid_values.pop("budget"), seeds=grid_values.pop("seed"), fit_seeds=fit_seed,
                      hparams=hparams, protocol=grid_values.pop("protocol"), overrides=overrides, extra=extra,
                      **grid_values)
    if dry_run:
        dry_run_listing(trials, storage, retry_failed)
        return
    run_sweep(trials, engine=engine, address=address, cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
              storage=storage, retry_failed=retry_failed, progress=progress,
              malloc=malloc_tuning and device != "cuda")

