"""The leaderboard commands of ``mtbench``: official, leaderboard, submit, validate (registered by ``cli``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click
from mtbench.cli.options import CONTEXT_SETTINGS, run_options, user_errors
from mtbench.cli.sweep import engine_options, run_sweep
from mtbench.core.errors import UserError

#: `mtbench run` options the plan sets for every row: not to be given after `--`
PLAN_SETS = ("method", "dataset", "source", "out", "init", "save", "protocol", "ways", "shots", "queries", "episodes",
             "train_images", "test_images", "trials", "seed", "fit_seed", "budget")
_PLACEHOLDER = "<from the plan>"


def official_run_options(run_cmd: click.Command, argv: tuple[str, ...]) -> tuple[dict[str, Any], bool]:
    """The options given after `--` to `mtbench official`, parsed by `mtbench run`'s own options (``run_cmd``):
    the RunSpec fields they set for every row (device, data root, download, progress, precision, compile;
    ``hparams`` as (name, value) pairs), and whether to tune the CPU allocator. An option the plan sets is an
    error."""
    from click.core import ParameterSource
    from mtbench.methods import parse_overrides

    with run_cmd.make_context("mtbench official ... --", ["--method", _PLACEHOLDER, "--dataset", _PLACEHOLDER,
                                                          *argv], **CONTEXT_SETTINGS) as ctx:
        p = ctx.params
        fixed = [param.opts[0] for param in run_cmd.params if param.name in PLAN_SETS and (
            ctx.get_parameter_source(param.name) == ParameterSource.COMMANDLINE
            and p[param.name] != _PLACEHOLDER)]
    if fixed:
        raise UserError(f"{', '.join(fixed)} after --: the official plan sets the method, dataset, protocol, "
                        f"budget and folder of every row (fit seeds: --fit-seeds before --); give only how to run "
                        f"them, e.g. -- --device cuda --hp name=value --no-progress")
    if p["resume"] or p["until"] is not None or p["fit_minutes"] is not None:
        given = ("--resume" if p["resume"] else f"--until {p['until']}" if p["until"] is not None
                 else f"--fit-minutes {p['fit_minutes']:g}")
        raise UserError(f"{given} after --: mtbench official runs whole rows and continues the saved ones by "
                        f"itself; give -- --checkpoint-every MINUTES to save them, and run the same command again")
    fields = {"device": p["device"], "data_root": p["data_root"], "download": p["download"],
              "progress": p["progress"], "precision": p["precision"], "compile": p["compile_"],
              "hparams": tuple(parse_overrides(p["hparams"]).items()), "checkpoint_every": p["checkpoint_every"]}
    return fields, p["malloc_tuning"] and p["device"] != "cuda"


@click.command("official")
@click.option("--leaderboards", type=click.Path(file_okay=False), default="leaderboards", show_default=True,
              help="The leaderboard folder the rows are written into.")
@click.option("--dataset", default=None, help="Only this dataset's settings (omniglot, miniimagenet, xray).")
@click.option("--setting", default=None, help="Only this setting, e.g. 5w1s, 20w1s or transfer200-50.")
@click.option("--plan", "plan_file", type=click.Path(dir_okay=False), default=None,
              help="A plan of your own, in the format of the official one (mtbench/board/official.toml).")
@click.option("--fit-seeds", default="0", show_default=True,
              help="Fill each row once per fit seed (comma-separated, e.g. 0,1,2); a row is present per fit seed "
                   "(scratch, which no fit seed changes, at fit seed 0 alone).")
@engine_options
@click.argument("run_options", nargs=-1, type=click.UNPROCESSED)
@user_errors
def official_cmd(leaderboards: str, dataset: str | None, setting: str | None, dry_run: bool, plan_file: str | None,
                 fit_seeds: str, run_options: tuple[str, ...], **engine: Any) -> None:
    """Fill the official leaderboard: run each row of the plan (Omniglot 5w1s/5w5s/20w1s, miniImageNet
    5w1s/5w5s, xray transfer200-50: every method; omniglot-shift 5w1s: DANN and its source-only reference)
    that has no result yet at the quick budget, in this process as `mtbench run` would, writing into
    LEADERBOARDS/<dataset>/<setting>/, once per fit seed of --fit-seeds. Resumable: rerun it to continue.
    Options of `mtbench run` after `--` apply to every row, e.g. `-- --device cuda --no-progress`; those that
    say what a row is (method, dataset, protocol, budget, --out) come from the plan. The rows run as the trials
    of `mtbench sweep`, on its engines (--engine, --cpus-per-trial...). With `-- --checkpoint-every MINUTES` each
    row's fit and evaluation are saved under --storage as they go, and the same command continues a row that
    was stopped from where it was saved."""
    from mtbench.board.official import load_plan, missing_line, missing_runs, run_missing
    from mtbench.board.sweep import plan_trials, row_cost, whole_numbers

    seeds, problems = whole_numbers("fit_seeds", fit_seeds)
    if problems:
        raise UserError("; ".join(problems))
    chosen = load_plan(plan_file).select(dataset, setting)
    root = click.get_current_context().find_root()  # the `mtbench` group, which has the `run` command
    fields, malloc = official_run_options(root.command.get_command(root, "run"), run_options)
    if dry_run:
        run_missing(Path(leaderboards), chosen, run_options, fields, dry_run=True, echo=click.echo, fit_seeds=seeds,
                    cost=lambda s, e, f: row_cost(s, e, Path(leaderboards), fields, f))
        return
    todo = missing_runs(Path(leaderboards), chosen, seeds)
    click.echo(missing_line(todo, chosen, seeds))
    progress = fields.pop("progress")
    trials = plan_trials(todo, leaderboards, fields, run_options)
    run_sweep(trials, progress=progress, malloc=malloc, **engine)


@click.command("validate")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--data-root", type=click.Path(file_okay=False), default=None,
              help="Folder holding the datasets, to recompute the episode shas (default: $MTBENCH_DATA, else "
                   "~/.cache/mtbench/data).")
@click.option("--no-shas", is_flag=True, help="Skip the episode-sha check (no datasets needed).")
@user_errors
def validate_cmd(paths: tuple[str, ...], data_root: str | None, no_shas: bool) -> None:
    """Check result files (default: leaderboards/) against the schema, their own per-episode accuracies and
    the official episode shas; exit 1 when any fails."""
    from mtbench.results.integrity import check

    files = paths or ("leaderboards",)
    failed = check(files, data_root, shas=not no_shas, echo=click.echo)
    if failed:
        click.echo(f"{failed} result file(s) failed validation", err=True)
        raise SystemExit(1)
    click.echo("all result files are valid")


@click.command("leaderboard")
@click.argument("folder", required=False, type=click.Path())
@click.option("--dataset", "-d", default=None, help="Only this dataset (e.g. omniglot).")
@click.option("--protocol", "-p", default=None, help="Only this setting, e.g. 5w1s, 20w1s or transfer200-50.")
@click.option("--leaderboards", type=click.Path(), default=None,
              help="The leaderboard folder (<dataset>/<setting>/<result>.json)  [default: leaderboards].")
@click.option("--fraction", type=click.FloatRange(0, 1, min_open=True), default=0.95, show_default=True,
              help="Adaptation speed: steps and ms to reach this fraction of the final accuracy.")
@click.option("--markdown", "fmt", flag_value="markdown", help="Markdown tables instead of aligned text.")
@user_errors
def leaderboard_cmd(folder: str | None, dataset: str | None, protocol: str | None, leaderboards: str | None,
                    fraction: float, fmt: str | None) -> None:
    """Print the ranked leaderboard of FOLDER.

    FOLDER is a leaderboard folder (default: leaderboards), one of its <dataset> or <dataset>/<setting> folders
    (e.g. leaderboards/omniglot/20w1s), or a folder that `mtbench run --out` wrote results into. One table per
    dataset, setting and set of shared episodes; results on other draws, protocols or schema versions are never
    ranked together. Files that fail validate's checks of the file, cannot be read or repeat a run are left out and
    listed after the tables."""
    from mtbench.board.leaderboard import shown
    from mtbench.board.text import render_board
    from mtbench.results.layout import board_files

    if folder is not None and leaderboards is not None:
        raise UserError(f"give the folder once: {folder} or --leaderboards {leaderboards}, not both")
    root = Path(folder or leaderboards or "leaderboards")
    files = board_files(folder) if folder is not None else None
    click.echo(render_board(shown(root, dataset, protocol, files), fraction, fmt or "text"))


@click.command("submit")
@click.argument("reference", metavar="PATH.py[:Class]")
@click.option("--dataset", "-d", required=True, help="Dataset of the official protocol (omniglot, miniimagenet, xray).")
@run_options
@click.option("--leaderboards", type=click.Path(file_okay=False), default="leaderboards", show_default=True,
              help="The result goes into LEADERBOARDS/<dataset>/<setting>/.")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=None,
              help="Seconds each stage of the method (import, conformance check, fit, evaluation) may take "
                   "[default: import 120, check 300, fit 2 h at quick, 48 h at paper, 600 + 10 per iteration "
                   "at a number; evaluation 600 + 10 per episode].")
@click.option("--memory", "memory_gib", type=click.FloatRange(0, min_open=True), default=None,
              help="GiB of address space the method's process may use (CPU only)  [default: the machine's memory].")
@user_errors
def submit_cmd(reference: str, dataset: str, leaderboards: str, timeout: float | None, memory_gib: float | None,
               **options: Any) -> None:
    """Submit an outside method, run only in a sandboxed child process (bubblewrap where it works: the machine
    read-only, no network, a scratch folder; time, CPU and memory limits): check it on generated data (output
    shapes, finite outputs, deterministic under a seed, support tensors untouched, a name of its own), then run
    the official protocol, checking every episode's logits, and write a result that records the file's sha256
    into the leaderboard. A refused method writes nothing."""
    from mtbench.board.submit import parse, submit
    from mtbench.cli.options import run_spec, summary
    from mtbench.data.protocols import TransferSpec
    from mtbench.methods import parse_overrides
    from mtbench.results import setting_name
    from mtbench.results.integrity import check

    sub = parse(reference)
    spec = run_spec(reference, dataset, leaderboards, **options)
    e = spec.episodes
    protocol = e.record() if isinstance(e, TransferSpec) else dataclasses.asdict(e)
    spec = dataclasses.replace(spec, out=str(Path(leaderboards) / dataset / setting_name(protocol)))
    doc, path = submit(sub, spec, parse_overrides(options["hparams"]), timeout, memory_gib,
                       echo=lambda line: click.echo(line, err=True))
    click.echo(summary(doc, path))
    if check([path], options["data_root"], echo=click.echo):
        raise UserError(f"the result {path} failed validation (see above)")
