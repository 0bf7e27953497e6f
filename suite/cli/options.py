"""What the ``mtbench`` commands share: one-line user errors, a run's options and its summary."""

from __future__ import annotations

import functools
import shlex
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from mtbench.core.atomic import completed
from mtbench.core.errors import UserError

#: every command's context: -h as well as --help, and help text up to 100 columns wide. A context made outside the
#: group (``official``'s parse of its ``-- run options``) needs them too: click caches a command's help option at its
#: first parse, so one parse with the default names would make a later ``mtbench run -h`` an error in that process
CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, as Ctrl-C raises KeyboardInterrupt: the same clean-up runs."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated


def written_since(mark: int) -> str:
    """What this process wrote after the ``mark``-th completed write (:func:`mtbench.core.atomic.completed`), in
    words: ``a checkpoint at ck.pt and a result at results/x.json``, or ``nothing``."""
    done = list(dict.fromkeys(completed()[mark:]))  # a file written again (a fit state saved every N minutes) once
    named = [f"{'an' if w.what[0] in 'aeiou' else 'a'} {w.what} at {w.path}" for w in done if w.what != "file"]
    files = [w.path for w in done if w.what == "file"]
    named += [f"a file at {p}" for p in files[:3]] + ([f"{len(files) - 3} more files"] if len(files) > 3 else [])
    return "nothing" if not named else named[0] if len(named) == 1 else f"{', '.join(named[:-1])} and {named[-1]}"


def resume_command() -> str:
    """The command line of this process with ``--resume``: what continues its saved fit and evaluation."""
    args = sys.argv[1:]
    return shlex.join(["mtbench", *args, *([] if "--resume" in args else ["--resume"])])


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Print a :class:`UserError` as one line on stderr and exit 2, without a traceback; SIGTERM is handled as
    Ctrl-C is (the running work stops, temp files are removed) and either one ends with a line saying what the
    command had written, exit 130 (Ctrl-C) or 143 (SIGTERM)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        mark = len(completed())
        try:
            before = signal.signal(signal.SIGTERM, _terminate)
        except ValueError:  # not the main thread: SIGTERM stays as it is
            before = None
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            click.echo(f"mtbench: error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt as exc:
            name = "SIGTERM" if isinstance(exc, Terminated) else "SIGINT"
            what = written_since(mark)
            said = "nothing was written" if what == "nothing" else f"it had written {what}, nothing else"
            click.echo(f"mtbench: interrupted by {name}; {said}", err=True)
            if any(w.what in ("fit state", "evaluation state") for w in completed()[mark:]):
                click.echo(f"mtbench: resume with: {resume_command()}", err=True)
            sys.exit(143 if isinstance(exc, Terminated) else 130)
        finally:
            if before is not None:
                signal.signal(signal.SIGTERM, before)

    return wrapper


def run_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options of a run's protocol, budget and machine, shared by ``run`` and ``submit``."""
    options = [
        click.option("--protocol", type=click.Choice(["episodes", "transfer"]), default=None,
                     help="Few-shot episodes, or transfer: a fixed labelled target set over seeded trials "
                          "(default: the dataset's; transfer for xray)."),
        click.option("--ways", type=int, default=None, help="Episodes: classes per episode.  [default: 5]"),
        click.option("--shots", type=int, default=None, help="Episodes: labelled images per class.  [default: 1]"),
        click.option("--queries", type=int, default=None, help="Episodes: query images per class.  [default: 15]"),
        click.option("--episodes", type=int, default=None, help="Episodes: number of fixed test episodes.  [default: 600]"),
        click.option("--train-images", type=int, default=None,
                     help="Transfer: labelled target images to adapt on, balanced over the classes.  [default: 200]"),
        click.option("--test-images", type=int, default=None,
                     help="Transfer: target test images per trial, balanced over the classes.  [default: 50]"),
        click.option("--trials", type=int, default=None, help="Transfer: seeded draws of both sets.  [default: 20]"),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed of the test episodes (transfer: of the trials' draws) only."),
        click.option("--fit-seed", type=int, default=None,
                     help="Seed of every draw of the fit: initial weights, training tasks, BatchNorm recalibration.  "
                          "[default: 0; with --init, the checkpoint's fit seed]"),
        click.option("--budget", default="quick", show_default=True,
                     help="Fit length: quick (a few CPU minutes), paper (the paper's schedule) or a number of iterations."),
        click.option("--hp", "hparams", multiple=True, metavar="NAME=VALUE", help="Override a method hparam (repeatable)."),
        click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda or cuda:N."),
        click.option("--data-root", type=click.Path(file_okay=False), default=None,
                     help="Folder holding the datasets (default: $MTBENCH_DATA, else ~/.cache/mtbench/data)."),
        click.option("--download/--no-download", default=True, show_default=True,
                     help="Download a missing dataset from its official URL (with checksum)."),
        click.option("--malloc-tuning/--no-malloc-tuning", default=True, show_default=True,
                     help="On the CPU, keep freed memory in glibc's heap (about 2x faster training here)."),
        click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress bars."),
        click.option("--skip-bad-images", is_flag=True, default=False,
                     help="Image folders: leave out images that cannot be read (counted in the result) instead of "
                          "stopping at the first."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def resume_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``mtbench run``'s options for long fits: save the fit's state every N minutes, continue a saved one, stop
    one part-way (``--until``, ``--fit-minutes``)."""
    fn = click.option("--fit-minutes", "fit_minutes", type=float, default=None, metavar="MINUTES",
                      help="Stop the fit at the first iteration boundary after MINUTES of fitting (fractions allowed), "
                           "as --until would stop it there: a partial row of the iterations it reached, its state "
                           "kept for --resume.")(fn)
    fn = click.option("--until", "until", type=int, default=None, metavar="ITERATION",
                      help="Stop the fit after ITERATION iterations of its budget (the schedules of the whole budget), "
                           "evaluate it as a partial row and keep its state for --resume to continue.")(fn)
    fn = click.option("--resume", is_flag=True, default=False,
                      help="Continue the fit, and the evaluation, saved by --checkpoint-every (the same command line plus "
                           "--resume).")(fn)
    return click.option("--checkpoint-every", "checkpoint_every", type=float, default=None, metavar="MINUTES",
                        help="Save the fit's state under --out/.resume every MINUTES (fractions allowed) and on "
                             "Ctrl-C or SIGTERM, and the evaluation's progress (the episodes scored so far).")(fn)


def run_spec(method: str, dataset: str, out: str, *, protocol: str | None, ways: int | None, shots: int | None,
             queries: int | None, episodes: int | None, train_images: int | None, test_images: int | None,
             trials: int | None, seed: int, budget: str, hparams: tuple[str, ...], device: str, data_root: str | None,
             download: bool, malloc_tuning: bool, progress: bool, **extra: Any) -> Any:
    """The :class:`~mtbench.run.runner.RunSpec` of a command line (``extra``: its other fields); tunes the CPU
    allocator when asked to, as a run does."""
    from mtbench.data import DATASETS
    from mtbench.methods import parse_overrides
    from mtbench.data.protocols import resolve
    from mtbench.run.runner import RunSpec
    from mtbench.core.runtime import tune_malloc

    if Path(out).exists() and not Path(out).is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the result JSON")
    spec = RunSpec(
        method=method, dataset=dataset,
        episodes=resolve(DATASETS.get(dataset).default_protocol, protocol, ways=ways, shots=shots, queries=queries,
                         episodes=episodes, seed=seed, train_images=train_images, test_images=test_images,
                         trials=trials),
        budget=budget, hparams=tuple(parse_overrides(hparams).items()), device=device,
        data_root=data_root, out=out, download=download, progress=progress,
        command=shlex.join(["mtbench", *sys.argv[1:]]), **extra,
    )
    if malloc_tuning and device != "cuda":
        tune_malloc()
    return spec


def protocol_line(p: dict[str, Any]) -> str:
    """One line saying what a result's episodes or transfer trials were."""
    where = (f", support from {p['support_from']}, queries from {p['queries_from']}"
             if p["support_from"] != p["queries_from"] else "")
    if p["kind"] == "transfer":
        return (f"transfer: {p['ways'] * p['shots']} labelled + {p['ways'] * p['queries']} test images "
                f"({p['shots']} + {p['queries']} per class, {p['ways']} classes), {p['trials']} trials, "
                f"seed {p['seed']}{where}, draws {p['episodes_sha'][:12]}")
    return (f"{p['ways']}-way {p['shots']}-shot, {p['queries']} queries, {p['episodes']} episodes, "
            f"seed {p['seed']}{where}, episodes {p['episodes_sha'][:12]}")


def summary(doc: dict[str, Any], path: Path | None) -> str:
    """A short human-readable table of one result."""
    from mtbench.results import execution_label

    acc, fit, adapt, p = doc["accuracy"], doc["fit"], doc["adaptation"], doc["protocol"]
    steps = "  ".join(f"{s['step']}: {s['mean']:.3f}" for s in acc["by_step"])
    rows = [
        ("method", f"{doc['method']['name']}{' (transductive)' if doc['method']['transductive'] else ''}"),
        *([("init", f"{doc['init']['method']} fitted on {doc['init']['dataset']} ({doc['init']['iterations']} it"
                    f"{'' if (i := doc['init']['fit_seed']) is None else f', fit seed {i}'}), "
                    f"{doc['init']['path']}")] if doc["init"] else []),
        ("dataset", f"{doc['dataset']['name']} {doc['dataset']['split']} split"
                    + (f" (fit also saw the {u} split, unlabelled)" if (u := doc['dataset']['unlabelled_split']) else "")),
        *([("source", f"fitted on {src['name']} {src['fit_split']} split")] if (src := doc["source"]) else []),
        ("protocol", protocol_line(p)),
        ("accuracy", f"{acc['mean']:.4f} ± {acc['ci95']:.4f} (95% CI)"),
        ("by step", steps),
        ("adapt", f"{adapt['ms_per_episode']:.2f} ms/episode over {adapt['steps']} predictor(s)"),
        ("fit", f"{fit['seconds']:.1f} s, {fit['iterations']} it"
                f"{f' of {b} (a partial fit)' if (b := doc['budget']['iterations']) != fit['iterations'] else ''}, "
                f"fit seed {fit['seed']}, "
                f"{fit['tasks_per_s']:.1f} tasks/s, "
                f"{fit['images_per_s']:.0f} images/s, peak {fit['peak_memory_bytes'] / 2**20:.0f} MiB "
                f"({fit['peak_memory_kind']})"),
        *[("note", n) for n in [*doc["dataset"]["notes"], *(doc["source"]["notes"] if doc["source"] else []),
                                *fit["notes"]]],
        ("evaluation", f"{doc['evaluation']['seconds']:.1f} s, {doc['evaluation']['tasks_per_s']:.2f} episodes/s"),
        ("device", doc["provenance"]["device"] + execution_label(doc)),
        ("result", str(path) if path else "(not written)"),
    ]
    if doc["submission"]:
        sub = doc["submission"]
        rows.insert(-1, ("submission", f"{sub['source']}:{sub['class']}, sha256 {sub['source_sha256']}"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
