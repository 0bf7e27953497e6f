"""Your own data on the command line: ``mtbench data add NAME PATH`` and ``mtbench predict``."""

from __future__ import annotations

from pathlib import Path

import click

from mtbench.cli.options import user_errors


@click.command("add")
@click.argument("name")
@click.argument("path", type=click.Path())
@click.option("--image-size", type=int, default=None,
              help="Resize every image to N x N pixels (default: the size of the source a run transfers from, "
                   "else 84).")
@click.option("--channels", type=click.Choice(["1", "3"]), default=None,
              help="1 (grey, by luminance) or 3 (RGB) (default: the source's, else 3).")
@user_errors
def data_add(name: str, path: str, image_size: int | None, channels: str | None) -> None:
    """Register the image folder PATH (PATH/<class>/<image>, or the same under train/ and test/) as dataset
    NAME, in your config folder ($MTBENCH_CONFIG or ~/.config/mtbench/datasets.json)."""
    from mtbench.data import DATASETS
    from mtbench.data import user_registry
    from mtbench.data.folder import folder_dataset

    folder = Path(path).expanduser().resolve()
    cls = folder_dataset(folder)  # a missing folder or a file is refused here
    data = cls(progress=False)
    scans = data._scans()  # the layout is checked now, not at the first run
    file = user_registry.add(name, folder, image_size, int(channels) if channels else None, DATASETS.builtin(name))
    counts = "; ".join(f"{f'{s}/: ' if s else ''}{len(sc.classes)} classes, {sc.count} images"
                       for s, sc in scans.items())
    click.echo(f"registered {name}: {folder} ({counts}) in {file}; `mtbench run --dataset {name} ...` uses it, "
               f"`mtbench data verify {name}` decodes and checks every image")


@click.command("predict")
@click.option("--init", "init", required=True, type=click.Path(dir_okay=False),
              help="A checkpoint written by `mtbench run ... --save PATH`.")
@click.option("--support", required=True, type=click.Path(),
              help="Labelled images to adapt on: one sub-folder of images per class.")
@click.option("--query", required=True, type=click.Path(), help="A folder of images to classify (searched recursively).")
@click.option("--out", default="predictions.csv", show_default=True, type=click.Path(dir_okay=False),
              help="The CSV to write (atomically): file, predicted class, one probability column per class.")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda or cuda:N.")
@click.option("--skip-bad-images", is_flag=True, default=False,
              help="Leave out images that cannot be read (counted) instead of stopping at the first.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress bars.")
@user_errors
def predict_cmd(init: str, support: str, query: str, out: str, device: str, skip_bad_images: bool,
                progress: bool) -> None:
    """Adapt the method saved in --init on the labelled --support images and write one CSV row per --query
    image, preprocessed as the checkpoint was evaluated."""
    from mtbench.run.predict import predict, write_csv

    result = predict(init, support, query, device, progress, skip_bad_images)
    path = write_csv(result, out)
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo(f"{result.method} adapted on {result.support_images} images of {len(result.classes)} classes "
               f"({', '.join(result.classes)}); wrote {len(result.rows)} predictions to {path}")
