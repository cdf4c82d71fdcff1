"""The ``sparseseg`` command (built on ``core`` and ``io`` only).

Contract (docs/design.md, "Command line contract"; every option: docs/cli.md)::

    sparseseg segment IMAGE SCRIBBLES -o MASK [--corrections CORR] [--init-model DIR]
                      [--model-out DIR] [--time-budget SECONDS] [--max-steps N]
                      [--device auto|cpu|cuda|mps] [--seed N] [--probabilities PATH]
    sparseseg predict IMAGE --model DIR -o MASK [--probabilities PATH]
    sparseseg batch --model DIR --out-dir DIR INPUT... [--fine-tune-scribbles GLOB] [--scheduler ADDRESS]
                    [--workers N] [--overwrite] [--probabilities]
    sparseseg train INPUT... --model-out DIR [--scribbles GLOB] [--init-model DIR] [--time-budget SECONDS] ...
    sparseseg demo

Exit codes: 0 done; 3 a batch finished but some scans failed (listed in its summary); 2 bad input, with one line ``sparseseg: error: <file>: <problem and what
to do>``; 130 interrupted (Ctrl-C or SIGTERM), with one line saying what was and was not
written. Every output is checked before any work (:func:`napari_sparseseg.io.check_outputs`)
and written atomically at the end; a signal that arrives while an output is being written is
held back until that output is complete, so no half file and no missing model folder is left.

One module per subcommand (``segment``, ``predict``, ``train``, ``batch``, ``demo``), each with
``run(args) -> int``; :mod:`~napari_sparseseg.cli.parser` builds the parser from the config
dataclasses and the flag names in :mod:`~napari_sparseseg.cli.flags`, and
:mod:`~napari_sparseseg.cli.common` holds the shared parts (exit codes, signals, outputs).
"""

from __future__ import annotations

import importlib
import sys
import warnings

from napari_sparseseg.cli.common import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, Signals
from napari_sparseseg.cli.parser import build_parser
from napari_sparseseg.core.base.errors import SparseSegError
from napari_sparseseg.io import OutputLog

__all__ = ["build_parser", "main"]


def main(argv=None) -> int:
    """Run the command line; return the exit code (0 done, 2 bad input, 3 some batch scans failed, 130 interrupted).

    The subcommand's module (``napari_sparseseg.cli.<command>``, which pulls torch and MONAI) is
    imported here, after the arguments are parsed: the one lazy import of the command line, which
    keeps ``import napari_sparseseg.cli`` and ``--help`` cheap. It happens once the signals are
    installed, so a Ctrl-C during that import ends like any other interrupt (exit 130).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    signals = Signals()
    args.log = log = OutputLog(guard=signals.held)
    signals.install()
    try:
        with warnings.catch_warnings():
            if getattr(args, "quiet", False):
                warnings.simplefilter("ignore")
            command = importlib.import_module(f"{__name__}.{args.command}")
            return int(command.run(args) or EXIT_OK)
    except (KeyboardInterrupt, Exception) as exc:
        code, text = _ending(exc, interrupted=signals.fired, log=log)
        if code is None:
            raise
        print(text, file=sys.stderr, flush=True)
        return code
    finally:
        signals.restore()


def _ending(exc: BaseException, interrupted: bool, log) -> tuple[int | None, str]:
    """The exit code and last line for an exception that ends a command, or None to let it through.

    Once a signal has fired, any exception is the interrupt surfacing in another form: raised
    inside a C extension's import (pybind11 turns it into ImportError) or caught and re-raised by
    a library. The user stopped the command, so it ends like any interrupt.
    """
    if interrupted or isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, f"sparseseg: interrupted; {log.summary()}"
    if isinstance(exc, SparseSegError):
        text = exc.one_line()
        if log.attempted:  # the error struck while writing: say what is on disk
            text = f"{text.rstrip('.')}; {log.summary()}"
        return EXIT_BAD_INPUT, f"sparseseg: error: {text}"
    if isinstance(exc, ValueError):  # a config dataclass rejected an option value
        return EXIT_BAD_INPUT, f"sparseseg: error: {' '.join(str(exc).split())}"
    return None, ""
