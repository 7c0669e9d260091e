"""``python -m sfc_core <verb>``: each verb parses its arguments and calls one stage function.

A verb lives in its stage's module as ``<name>_arguments(parser)`` and ``<name>_command(args)``;
``VERBS`` says where (imported by name, so this module imports no stage).
"""
from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
import traceback

from sfc_core.config import Config, read_changes
from sfc_core.errors import SfcError
from sfc_core.io import NO_SPACE_FIX, DiskFull, Terminated, sigterm_raises

DEBUG_ENV = "SFC_DEBUG"     # set (to anything): an error also prints its traceback (and a worker's)
# exit statuses: 0 done, 2 an error, 130 SIGINT, TERMINATED_EXIT SIGTERM (sysexits' EX_TEMPFAIL)
TERMINATED_EXIT = 75

#  verb           module                      function prefix   one-line help
VERBS: list[tuple[str, str, str, str]] = [
    ("synth", "sfc_core.data.commands", "synth", "write a synthetic long-tailed dataset (VOC layout)"),
    ("prepare", "sfc_core.data.prepare", "prepare", "VOC 2012 + SBD or COCO 2014 downloads -> the kit's dataset layout"),
    ("stats", "sfc_core.data.commands", "stats", "per-class image counts, co-occurrence, class weights"),
    ("check", "sfc_core.data.commands", "check", "decode every image and mask of the lists, report every problem"),
    ("pretrain", "sfc_core.pretrain", "pretrain", "pretrain the small backbone on the synthetic pretraining set"),
    ("train", "sfc_core.train", "train", "train SFC (or the baseline / an ablation) into a run dir"),
    ("import-checkpoint", "sfc_core.import_checkpoint", "import_checkpoint",
     "a checkpoint trained elsewhere (SFC authors', SIPE's) as a run directory"),
    ("cams", "sfc_core.cams", "cams", "multi-scale + flip classifier and prototype CAMs"),
    ("eval-cams", "sfc_core.evaluate", "eval_cams", "mIoU and calibration of classifier/prototype/fused CAMs"),
    ("refine", "sfc_core.refine", "refine", "pseudo masks from the CAMs: IRN or dense CRF"),
    ("eval-seg", "sfc_core.evaluate", "eval_seg", "mIoU of the pseudo masks"),
    ("segment", "sfc_core.segment", "segment", "step 3: train and score a segmentation network"),
    ("bench", "benchmarks.bench", "bench", "benchmark every stage; --naive for the reference's way"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sfc_core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb, module, prefix, help_text in VERBS:
        p = sub.add_parser(verb, help=help_text, description=help_text)
        p.set_defaults(_module=module, _prefix=prefix)
        getattr(importlib.import_module(module), f"{prefix}_arguments")(p)
    return parser


def add_config_arguments(p: argparse.ArgumentParser, preset_default: str | None = "synthetic") -> None:
    """The arguments every config-building verb shares: preset, dataset root, --config, --set."""
    p.add_argument("--preset", default=None,
                   help=f"named configuration: synthetic-smoke, synthetic, voc, coco (default: the "
                        f"--config file's, else {preset_default})")
    p.set_defaults(_preset_default=preset_default)
    p.add_argument("--data-root", default=None, help="dataset root (overrides data.root)")
    add_override_arguments(p)


def add_override_arguments(p: argparse.ArgumentParser) -> None:
    """--config FILE and --set KEY=VALUE (a run's verbs: on top of RUN_DIR/config.json)."""
    p.add_argument("--config", default=None, metavar="FILE",
                   help="a saved config.json or a file of overrides (JSON, or SECTION.FIELD=VALUE lines)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set train.lr=0.01 (repeatable; wins over --config)")


def overrides_from_args(args: argparse.Namespace) -> dict:
    """The --config file's fields, then every --set, as dotted overrides."""
    return read_changes(getattr(args, "config", None), args.overrides)[1]


def config_from_args(args: argparse.Namespace) -> Config:
    preset, overrides = read_changes(args.config, args.overrides)
    if getattr(args, "data_root", None):
        overrides["data.root"] = args.data_root
    return Config.from_preset(args.preset or preset or args._preset_default, overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = getattr(importlib.import_module(args._module), f"{args._prefix}_command")
    again = resume_command(sys.argv[1:] if argv is None else argv, args.verb)
    try:
        with sigterm_raises():
            return int(command(args) or 0)
    except SfcError as e:
        _end_progress_bars()
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
            print(e.worker_traceback or "", file=sys.stderr)
        if isinstance(e, DiskFull):
            e = SfcError(e.problem, path=e.path, fix=f"{NO_SPACE_FIX}, then run: {again} (finished work is kept)")
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Terminated as e:
        _end_progress_bars()
        print(f"terminated (SIGTERM): {e.done or 'finished work is kept'}; to resume, run: {again}", file=sys.stderr)
        return TERMINATED_EXIT
    except KeyboardInterrupt:
        _end_progress_bars()
        print(f"interrupted: finished work is kept; to resume, run: {again}", file=sys.stderr)
        return 130


def _end_progress_bars() -> None:
    """Close the progress bars an error left on screen, so its message starts on a line of its own."""
    from tqdm import tqdm

    with tqdm.get_lock():
        bars = sorted(getattr(tqdm, "_instances", ()), key=lambda bar: -abs(getattr(bar, "pos", 0)))
    for bar in bars:
        bar.leave = True
        bar.close()


# Verbs whose rerun continues only with a flag; every other verb resumes when run again as it was.
RESUME_FLAGS = {"train": "--resume"}


def resume_command(argv: list[str], verb: str) -> str:
    """The command line that continues an interrupted ``python -m sfc_core`` ARGV."""
    flag = RESUME_FLAGS.get(verb)
    return shlex.join(["python", "-m", "sfc_core", *argv, *([flag] if flag and flag not in argv else [])])
