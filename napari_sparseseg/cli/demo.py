"""``sparseseg demo``: the whole loop on the bundled sample."""

from __future__ import annotations

from napari_sparseseg.cli.common import EXIT_OK
from napari_sparseseg.core.base.config import DemoConfig
from napari_sparseseg.demo import run_demo

__all__ = ["run"]


def run(args) -> int:
    """``sparseseg demo``: the whole loop on the bundled sample."""
    cfg = DemoConfig(rounds=args.rounds, time_budget=args.time_budget, device=args.device, seed=args.seed)
    run_demo(data_dir=args.data, out_dir=args.output, cfg=cfg, quiet=args.quiet, log=args.log)
    return EXIT_OK
