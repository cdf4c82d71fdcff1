"""``sparseseg batch``: one model over many scans on Dask; a summary CSV/JSON; resumes."""

from __future__ import annotations

import sys

from tqdm import tqdm

from napari_sparseseg.cli.common import EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, remote_config, say
from napari_sparseseg.cohort.batch import SUMMARY_CSV, SUMMARY_JSON, plan_batch, read_summary, run_batch
from napari_sparseseg.cohort.cluster import local_workers
from napari_sparseseg.core.base.config import BatchConfig
from napari_sparseseg.core.base.errors import InputError, OutputError
from napari_sparseseg.io.cohort import expand_inputs, match_scribbles
from napari_sparseseg.remote.client import RemoteError, plain_warning, security
from napari_sparseseg.scheduler import check_address

__all__ = ["run"]


def _count(out_dir, status: str) -> int:
    """How many scans the summary in ``out_dir`` records with ``status`` (0 if it cannot be read)."""
    try:
        return sum(s.get("status") == status for s in (read_summary(out_dir) or {}).get("scans", []))
    except OutputError:  # a summary that is not ours, or damaged: counted as none
        return 0


def _say_segs(args, plan) -> None:
    """With --dicom-seg: which scans get a DICOM SEG, and which do not (not DICOM series) and why."""
    without = [j.entry.name for j in plan.without_seg]
    say(args, f"--dicom-seg: {len(plan.jobs) - len(without)} DICOM series get NAME_mask.dcm"
              + (" and NAME_probabilities.dcm" if plan.cfg.probabilities else "") + " beside their NIfTI outputs")
    if without:
        shown = ", ".join(without[:5]) + (f" and {len(without) - 5} more" if len(without) > 5 else "")
        say(args, f"--dicom-seg: no DICOM SEG for {len(without)} scan(s) that are not DICOM series, NIfTI mask only "
                  f"(a SEG must reference a series; noted in the summary): {shown}")


def run(args) -> int:
    """``sparseseg batch``: one model over many scans on Dask; a summary CSV/JSON; resumes."""
    cfg = BatchConfig(workers=args.workers, threads=args.threads, device=args.device, probabilities=args.probabilities,
                      dicom_seg=args.dicom_seg, overwrite=args.overwrite, fine_tune_seconds=args.fine_tune_seconds, seed=args.seed,
                      refine=args.refine, forest=args.forest, precision=args.precision, connect_timeout=args.connect_timeout)
    secure = None
    if args.scheduler:  # its syntax, before any work (reaching it is bounded by --connect-timeout)
        args.scheduler = check_address(args.scheduler)
    remote = remote_config(args)  # TLS files without --scheduler: refused (the local cluster makes its own)
    if remote is not None:  # its certificates, before any work
        try:
            secure = security(remote)
        except RemoteError as exc:  # a missing file or tls:// without its files: exit 2, nothing written
            raise InputError(exc.message, path=exc.path) from None
        warning = plain_warning(args.scheduler)
        if warning:
            print(f"sparseseg: {warning}", file=sys.stderr)
    entries = expand_inputs(args.inputs)
    if args.fine_tune_scribbles:
        entries = match_scribbles(entries, args.fine_tune_scribbles)
    plan = plan_batch(entries, args.model, args.out_dir, cfg)
    where = f"the Dask scheduler {args.scheduler}" if args.scheduler else f"a local Dask cluster of {local_workers(cfg)} workers"
    tuned = sum(j.entry.scribbles is not None for j in plan.to_run)
    say(args, f"{len(plan.jobs)} scans: {len(plan.to_run)} to segment ({tuned} fine-tuned on their strokes first), "
               f"{len(plan.skipped)} already done; on {where}")
    if cfg.dicom_seg:
        _say_segs(args, plan)
    counts = {"done": 0, "skipped": 0, "failed": 0, "queued": 0}
    bar = tqdm(total=len(plan.jobs), unit="scan", disable=args.quiet, file=sys.stderr, dynamic_ncols=True)
    results = run_batch(plan, scheduler=args.scheduler, security=secure)
    try:
        with bar:
            for r in results:
                counts[r.status] = counts.get(r.status, 0) + 1
                if r.status == "failed":
                    bar.write(f"sparseseg: scan '{r.name}' failed: {r.reason}", file=sys.stderr)
                bar.set_postfix(done=counts["done"], skipped=counts["skipped"], failed=counts["failed"], refresh=False)
                bar.update(1)
    except KeyboardInterrupt:
        results.close()  # if the signal struck here rather than inside it: records the running scans, stops the cluster
        stopped = _count(plan.out_dir, "interrupted")
        print(f"sparseseg: interrupted; {counts['done']} scans finished and recorded in {plan.out_dir / SUMMARY_JSON}"
              + (f", {stopped} stopped while running (not done: they run again)" if stopped else "")
              + "; run the same command again to resume.", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    say(args, f"{counts['done']} done, {counts['skipped']} skipped (already done), {counts['failed']} failed; summary "
               f"in {plan.out_dir / SUMMARY_CSV} and {SUMMARY_JSON}")
    return EXIT_SOME_FAILED if counts["failed"] else EXIT_OK
