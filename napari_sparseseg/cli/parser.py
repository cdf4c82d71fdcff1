"""The ``sparseseg`` argument parser, built from the config dataclasses and the :data:`FLAGS` table.

Each subcommand's parser is named like its module (``napari_sparseseg.cli.<command>``), which
:func:`napari_sparseseg.cli.main` imports to run it. This module imports only the light config
module, so building the parser (and ``--help``) loads no torch.
"""

from __future__ import annotations

import argparse

from napari_sparseseg import __version__
from napari_sparseseg.cli.flags import FLAGS
from napari_sparseseg.core.base.config import (
    BatchConfig,
    DemoConfig,
    PredictConfig,
    PretrainConfig,
    RemoteConfig,
    RoundSettings,
    SuggestConfig,
    TrainConfig,
    field_info,
    option_values,
)

__all__ = ["add_setting", "build_parser"]

_TYPES = {"float": float, "int": int, "str": str}


def add_setting(parser: argparse.ArgumentParser, cls, name: str, **override) -> None:
    """A flag derived from a config field (default, type, help, option list) and its :data:`FLAGS` entry."""
    f = field_info(cls, name)
    meta = f.metadata
    flag, shown_as = FLAGS[cls, name]
    if str(f.type) == "bool":  # --flag / --no-flag
        on = "on" if f.default else "off"
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default,
                            help=f"{meta.get('help', '')} (default {on})", **override)
        return
    kind = _TYPES[str(f.type).split(" |")[0].strip()]
    choices = meta.get("choices")
    metavar = "|".join(option_values(choices)) if choices else shown_as
    shown = "" if f.default is None else f" (default {f.default})"
    kw = {"default": f.default, "type": kind, "metavar": metavar, "help": f"{meta.get('help', '')}{shown}"}
    kw.update(override)
    parser.add_argument(flag, **kw)


def build_parser() -> argparse.ArgumentParser:
    """The ``sparseseg`` argument parser; defaults and option lists come from the config dataclasses."""
    parser = argparse.ArgumentParser(prog="sparseseg", description="3-D segmentation of CT/MRI from sparse scribbles.")
    parser.add_argument("--version", action="version", version=f"napari-sparseseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--probabilities", metavar="PATH", help="also write class probabilities (uint8, p*255)")
        p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")

    seg = sub.add_parser("segment", help="train on scribbles (optionally warm-started) and write the dense mask")
    seg.add_argument("image", help="scan: .nii/.nii.gz/.nrrd/.mha/.mhd or DICOM folder")
    seg.add_argument("scribbles", help="0 = unlabelled, 1 = background, c+1 = class c; on the image's grid")
    seg.add_argument("-o", "--output", required=True, metavar="MASK", help="dense mask to write (0 = background)")
    seg.add_argument("--corrections", metavar="CORR", help="correction strokes (same convention, weighted higher)")
    seg.add_argument("--boxes", metavar="JSON", help="boxes around structures, corners in world mm (RAS): "
                     "[{\"class\": 1, \"corners_mm\": [[x, y, z], [x, y, z]]}]; low-weight pseudo-labels")
    add_setting(seg, RoundSettings, "fill_between")
    add_setting(seg, RoundSettings, "estimate")
    seg.add_argument("--clicks", metavar="JSON", help="clicks inside (class >= 1) or outside (class 0) structures, "
                     "world mm: [{\"class\": 1, \"point_mm\": [x, y, z]}]; low-weight pseudo-labels")
    seg.add_argument("--init-model", metavar="DIR", help="warm start from a saved model")
    seg.add_argument("--model-out", metavar="DIR", help="save the trained model here (a new or empty folder, or a model)")
    for name in ("time_budget", "plateau", "max_steps", "device", "seed", "model_size", "modality", "working_voxels"):
        add_setting(seg, TrainConfig, name)
    seg.add_argument("--class-names", metavar="A,B,...", help="names of the classes, background first")
    seg.add_argument("--keep-all-regions", action="store_true",
                     help="keep predicted regions that touch no stroke of their class (default: drop them)")
    add_setting(seg, PredictConfig, "refine")
    add_setting(seg, PredictConfig, "precision")
    add_setting(seg, SuggestConfig, "count", default=None,
                 help="also write the N slices a stroke would most likely fix next (JSON; default off)")
    seg.add_argument("--suggestions", metavar="JSON", help="where --suggest writes (default: beside the mask, "
                     "NAME_suggestions.json)")
    add_setting(seg, TrainConfig, "forest")
    add_setting(seg, PretrainConfig, "seconds", default=None,
                 help="first pretrain a new model on the scan itself for this many seconds (self-supervised; cached "
                      "per scan in $SPARSESEG_CACHE or ~/.cache/napari-sparseseg, so a second run pays nothing; "
                      f"default off, {PretrainConfig.seconds:g} s in the widget)")
    add_setting(seg, PretrainConfig, "task")
    for name in ("scheduler", "tls_ca", "tls_cert", "tls_key", "connect_timeout", "silence_timeout"):
        add_setting(seg, RemoteConfig, name)
    seg.add_argument("--local-fallback", action="store_true",
                     help="with --scheduler: when the cluster cannot be used or the round is lost, say why and train on "
                          "this computer instead (default: stop with the message)")
    common(seg)

    pre = sub.add_parser("predict", help="apply a saved model to a scan")
    pre.add_argument("image")
    pre.add_argument("--model", required=True, metavar="DIR")
    pre.add_argument("-o", "--output", required=True, metavar="MASK")
    add_setting(pre, PredictConfig, "device")
    add_setting(pre, PredictConfig, "refine")
    add_setting(pre, PredictConfig, "forest")
    add_setting(pre, PredictConfig, "precision")
    add_setting(pre, PredictConfig, "working_voxels")
    common(pre)

    trn = sub.add_parser("train", help="train one model on the strokes of several scans and save it",
                         description="Train one model on strokes from several scans (their own grids and spacings); "
                         "patches are drawn across the scans, balanced over classes. Scans without strokes are left out.")
    trn.add_argument("inputs", nargs="+", metavar="INPUT",
                     help="a CSV manifest (image,scribbles[,corrections]) or scans, folders or globs with --scribbles")
    trn.add_argument("--scribbles", metavar="GLOB",
                     help="stroke files matched to scans by name (NAME_scribbles.nii.gz, or a glob with {name})")
    trn.add_argument("--model-out", required=True, metavar="DIR", help="save the model here (new, empty, or a model)")
    trn.add_argument("--init-model", metavar="DIR", help="warm start from a saved model (e.g. one scan's)")
    for name in ("time_budget", "plateau", "max_steps", "device", "precision", "seed", "model_size", "modality",
                 "forest", "working_voxels"):
        add_setting(trn, TrainConfig, name)
    trn.add_argument("--class-names", metavar="A,B,...", help="names of the classes, background first")
    trn.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")

    bat = sub.add_parser("batch", help="apply a model to many scans (optionally fine-tuned per scan) on Dask; resumes",
                         description="Segment every scan with one model on a Dask cluster. Writes NAME_mask.nii.gz per "
                         "scan (and, with --dicom-seg, NAME_mask.dcm per DICOM series) and sparseseg_summary.csv/.json (volumes, uncertainty, components, review rank). "
                         "Exit 0 when every scan is done or skipped as already done, 3 when some failed, 2 on bad "
                         "arguments.")
    bat.add_argument("inputs", nargs="+", metavar="INPUT",
                     help="scan files, DICOM series folders, folders of scans, globs (quoted) or a CSV manifest "
                          "(columns image[,scribbles,corrections])")
    bat.add_argument("--model", required=True, metavar="DIR", help="the shared model (a folder from --model-out)")
    bat.add_argument("--out-dir", required=True, metavar="DIR", help="where the masks and the summary go")
    bat.add_argument("--fine-tune-scribbles", metavar="GLOB",
                     help="stroke files; a scan with strokes (NAME_scribbles.nii.gz, or a glob with {name}) is first "
                          "fine-tuned from the model on them")
    bat.add_argument("--scheduler", metavar="ADDRESS",
                     help="an existing Dask scheduler: tcp://HOST:PORT, tls://HOST:PORT or HOST:PORT (IPv6 in "
                          "brackets, [::1]:8786); checked before any work, reached within --connect-timeout; "
                          "default: a local cluster")
    for name in ("workers", "threads", "overwrite", "fine_tune_seconds", "device", "seed", "refine", "forest",
                 "precision", "connect_timeout", "dicom_seg"):
        add_setting(bat, BatchConfig, name)
    for name in ("tls_ca", "tls_cert", "tls_key"):  # the certificates of a tls:// --scheduler, as segment's
        add_setting(bat, RemoteConfig, name)
    bat.add_argument("--probabilities", action="store_true", help="also write NAME_probabilities.nii.gz (uint8, p*255)")
    bat.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")

    demo = sub.add_parser("demo", help="the whole loop on the bundled sample data, headless")
    demo.add_argument("--data", metavar="DIR", help="sample data folder (default: the sample bundled with the package)")
    demo.add_argument("-o", "--output", default="sparseseg_demo_out", metavar="DIR", help="where to write mask and model")
    for name in ("time_budget", "rounds", "device", "seed"):
        add_setting(demo, DemoConfig, name)
    demo.add_argument("-q", "--quiet", action="store_true", help="print nothing but the Dice table and errors")

    return parser

