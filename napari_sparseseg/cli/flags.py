"""The command line's names for the config settings: each flag and the value name ``--help`` shows.

Everything else about a flag comes from the config field (:mod:`napari_sparseseg.core.base.config`):
its default, type, help and option list. A setting with options shows them as its metavar
(``auto|cpu|cuda|mps``) and a yes/no setting takes ``--flag``/``--no-flag``, so their metavar
here is ``None``. :func:`napari_sparseseg.cli.parser.add_setting` puts the two together.
"""

from __future__ import annotations

from napari_sparseseg.core.base.config import (
    BatchConfig,
    DemoConfig,
    PredictConfig,
    PretrainConfig,
    RemoteConfig,
    RoundSettings,
    SuggestConfig,
    TrainConfig,
)

__all__ = ["FLAGS"]

#: (config class, field name) -> (flag, metavar).
FLAGS: dict[tuple[type, str], tuple[str, str | None]] = {
    (TrainConfig, "max_steps"): ("--max-steps", "N"),
    (TrainConfig, "time_budget"): ("--time-budget", "SECONDS"),
    (TrainConfig, "seed"): ("--seed", "N"),
    (TrainConfig, "device"): ("--device", None),
    (TrainConfig, "precision"): ("--precision", None),
    (TrainConfig, "model_size"): ("--model-size", None),
    (TrainConfig, "modality"): ("--modality", None),
    (TrainConfig, "forest"): ("--forest", None),
    (TrainConfig, "plateau"): ("--plateau", None),
    (TrainConfig, "working_voxels"): ("--working-voxels", "N"),
    (PredictConfig, "working_voxels"): ("--working-voxels", "N"),
    (PretrainConfig, "seconds"): ("--pretrain", "SECONDS"),
    (PretrainConfig, "task"): ("--pretrain-task", None),
    (PredictConfig, "device"): ("--device", None),
    (PredictConfig, "precision"): ("--precision", None),
    (PredictConfig, "refine"): ("--refine", None),
    (PredictConfig, "forest"): ("--forest", None),
    (RoundSettings, "fill_between"): ("--fill-between", None),
    (RoundSettings, "estimate"): ("--estimate", None),
    (DemoConfig, "rounds"): ("--rounds", "N"),
    (DemoConfig, "time_budget"): ("--time-budget", "SECONDS"),
    (DemoConfig, "device"): ("--device", None),
    (DemoConfig, "seed"): ("--seed", "N"),
    (SuggestConfig, "count"): ("--suggest", "N"),
    (BatchConfig, "workers"): ("--workers", "N"),
    (BatchConfig, "threads"): ("--threads", "N"),
    (BatchConfig, "device"): ("--device", None),
    (BatchConfig, "overwrite"): ("--overwrite", None),
    (BatchConfig, "dicom_seg"): ("--dicom-seg", None),
    (BatchConfig, "fine_tune_seconds"): ("--fine-tune-seconds", "SECONDS"),
    (BatchConfig, "seed"): ("--seed", "N"),
    (BatchConfig, "refine"): ("--refine", None),
    (BatchConfig, "precision"): ("--precision", None),
    (BatchConfig, "forest"): ("--forest", None),
    (BatchConfig, "connect_timeout"): ("--connect-timeout", "SECONDS"),
    (RemoteConfig, "scheduler"): ("--scheduler", "ADDRESS"),
    (RemoteConfig, "tls_ca"): ("--tls-ca", "PEM"),
    (RemoteConfig, "tls_cert"): ("--tls-cert", "PEM"),
    (RemoteConfig, "tls_key"): ("--tls-key", "PEM"),
    (RemoteConfig, "connect_timeout"): ("--connect-timeout", "SECONDS"),
    (RemoteConfig, "silence_timeout"): ("--silence-timeout", "SECONDS"),
}
