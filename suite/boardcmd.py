"""The leaderboard commands of ``mtbench``: official, leaderboard, submit, validate (registered by ``cli``)."""

from __future__ import annotations

from pathlib import Path

import click

from .cli import user_errors


@click.command("official")
@click.option("--leaderboards", type=click.Path(file_okay=False), default="leaderboards", show_default=True,
              help="The leaderboard folder the rows are written into.")
@click.option("--dataset", default=None, help="Only this dataset's settings (omniglot, miniimagenet, xray).")
@click.option("--setting", default=None, help="Only this setting, e.g. 5w1s, 20w1s or transfer200-50.")
@click.option("--dry-run", is_flag=True, help="List the missing rows and their commands; run nothing.")
@click.argument("run_options", nargs=-1, type=click.UNPROCESSED)
@user_errors
def official_cmd(leaderboards: str, dataset: str | None, setting: str | None, dry_run: bool,
                 run_options: tuple[str, ...]) -> None:
    """Fill the official leaderboard: run `mtbench run` at the quick budget for every row of the plan
    (Omniglot 5w1s/5w5s/20w1s, miniImageNet 5w1s/5w5s, xray transfer200-50; every method) that has no
    result yet, writing into LEADERBOARDS/<dataset>/<setting>/. Resumable: rerun it to continue.
    Options after `--` go to every `mtbench run`, e.g. `-- --device cuda --no-progress`."""
    from .official import run_missing, settings

    failed = run_missing(Path(leaderboards), settings(dataset, setting), run_options, dry_run, echo=click.echo)
    if failed:
        raise SystemExit(1)
