"""``mtbench reproduce``: re-run result files and say whether their numbers come back (registered by ``cli``)."""

from __future__ import annotations

from pathlib import Path

import click

from mtbench.cli.options import user_errors
from mtbench.core.errors import UserError


@click.command("reproduce")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--data-root", type=click.Path(file_okay=False), default=None,
              help="Folder holding the datasets (default: $MTBENCH_DATA, else ~/.cache/mtbench/data).")
@click.option("--device", default=None,
              help="cpu, cuda or cuda:N (default: the recorded device type, the CPU where there is no GPU).")
@click.option("--record", is_flag=True,
              help="Append the re-run (who, when, where, verdict) to each file's `reproduced` list.")
@user_errors
def reproduce_cmd(paths: tuple[str, ...], data_root: str | None, device: str | None, record: bool) -> None:
    """Re-run each RESULT's recorded spec (method and hparams, dataset, protocol and seed, fit seed, budget,
    precision, checkpoint, CPU threads) and compare per-episode accuracies with the file: REPRODUCED when
    identical on the same hardware, or within 0.01 paired mean difference on other hardware; else DIFFERS. A folder means every
    result in it. Exit 1 when any result DIFFERS or cannot be re-run."""
    from mtbench.board.reproduce import reproduce_many

    files: list[Path] = []
    for given in map(Path, paths):
        if given.is_dir():
            files += sorted(given.rglob("*.json"))
        elif given.is_file():
            files.append(given)
        else:
            raise UserError(f"{given}: no such result file or folder; give result JSON files or a leaderboard folder")
    if not files:
        raise UserError(f"no result files in {', '.join(paths)}")
    failed = reproduce_many(files, data_root, device, record, echo=click.echo)
    if failed:
        click.echo(f"{failed} of {len(files)} result(s) not reproduced", err=True)
        raise SystemExit(1)
    click.echo(f"all {len(files)} result(s) reproduced")
