"""One settings source: defaults, ranges and options live in the config dataclasses only."""

import dataclasses
import io

import pytest

from napari_sparseseg.core.base.config import (
    DemoConfig,
    Device,
    ModelSize,
    PredictConfig,
    RoundSettings,
    TrainConfig,
    WeightConfig,
    check_option,
    field_info,
    option_values,
)
from napari_sparseseg.core.base.errors import ConfigError, SparseSegError
from napari_sparseseg.core.base.progress import Progress, ProgressPrinter
from napari_sparseseg.core.model.network import SIZES, size_for_device


@pytest.mark.parametrize("kwargs, message", [
    (dict(device="gpu"), "unknown device 'gpu'; use one of auto, cpu, cuda, mps. Did you mean 'cpu'?"),
    (dict(model_size="medum"), "unknown model size 'medum'; use one of auto, small, medium, large. Did you mean 'medium'?"),
    (dict(modality="mr"), "unknown modality 'mr'; use one of auto, ct, mri."),
    (dict(time_budget=0), "time_budget must be > 0 and <= 604800.0, got 0"),
    (dict(time_budget=1e12), "time_budget must be > 0 and <= 604800.0, got 1000000000000.0"),
    (dict(time_budget=float("nan")), "time_budget must be a number > 0"),
    (dict(max_steps=2.5), "max_steps must be a whole number"),
    (dict(max_steps=None, time_budget=None), "a round needs a bound"),
    (dict(seed=-3), "seed must be >= 0"),
    (dict(learning_rate="fast"), "learning_rate must be a number"),
    (dict(patch_size=(16, 16)), "patch_size must be three positive whole numbers"),
    (dict(patch_size=(4096, 4096, 4096)), "patch_size [4096, 4096, 4096] is beyond the limits (at most 1024 voxels a "
                                          "side and 16777216 in all)"),
    (dict(patch_voxels=10**9), "patch_voxels must be >= 4096 and <= 16777216"),
    (dict(forest_max_samples=10**9), "forest_max_samples must be >= 100 and <= 2000000"),
])
def test_bad_train_settings_say_what_is_allowed(kwargs, message):
    with pytest.raises(ConfigError) as err:
        TrainConfig(**kwargs)
    assert message in str(err.value)
    assert isinstance(err.value, ValueError) and isinstance(err.value, SparseSegError)


def test_options_are_normalised_and_checked_in_one_place():
    assert TrainConfig(device="CPU").device == "cpu" and TrainConfig(device="cuda:1").device == "cuda:1"
    assert check_option(Device.MPS, Device, "device") == "mps"
    assert set(option_values(ModelSize)) == {"auto", *SIZES}
    with pytest.raises(ConfigError, match="unknown model size"):
        size_for_device("tiny", "cpu")
    with pytest.raises(ConfigError, match="overlap must be >= 0 and < 1"):
        PredictConfig(overlap=1.0)
    with pytest.raises(ConfigError, match="w_correction must be > 0"):
        WeightConfig(w_correction=0)


def test_cli_flags_take_their_defaults_and_options_from_the_configs():
    from napari_sparseseg.cli import build_parser

    parser = build_parser()
    seg = parser.parse_args(["segment", "i.nii", "s.nii", "-o", "m.nii"])
    for name in ("time_budget", "max_steps", "device", "seed", "model_size", "modality"):
        assert getattr(seg, name) == field_info(TrainConfig, name).default
    demo = parser.parse_args(["demo"])
    assert (demo.rounds, demo.time_budget) == (DemoConfig.rounds, TrainConfig.time_budget)
    helptext = parser._subparsers._group_actions[0].choices["segment"].format_help()
    assert "auto|small|medium|large" in helptext and "auto|cpu|cuda|mps" in helptext


def test_round_settings_derive_from_train_config_and_round_trip():
    s = RoundSettings()
    assert s.time_budget == TrainConfig.time_budget and s.device == TrainConfig.device
    assert s.stroke_regions_only == PredictConfig.stroke_regions_only
    from napari_sparseseg._qt.ranges import RANGES

    lo, hi = RANGES[RoundSettings, "time_budget"]
    assert lo <= s.time_budget <= hi
    t = RoundSettings(seed=5, max_steps=7).train_config(round_index=2)
    assert (t.seed, t.max_steps, t.time_budget) == (7, 7, TrainConfig.time_budget)
    assert RoundSettings().train_config(time_budget=5).time_budget == 5
    changed = dataclasses.replace(s, device="cpu", time_budget=12.5, live=True)
    assert RoundSettings.from_dict(changed.to_dict()) == changed
    # Files from other versions: unknown keys are ignored; a damaged value falls back (lenient) or raises.
    assert RoundSettings.from_dict({"time_budget": 9, "colour": "red"}).time_budget == 9
    assert RoundSettings.from_dict({"time_budget": -1, "seed": 4}, lenient=True) == RoundSettings(seed=4)
    with pytest.raises(ConfigError):
        RoundSettings.from_dict({"device": "tpu"})


def test_progress_printer_one_line_per_stage_when_not_a_terminal_and_silent_when_quiet():
    out = io.StringIO()
    with ProgressPrinter(out) as show:
        for i in range(1, 4):
            show(Progress("train", i, 0, 0.5 * i, loss=1.0 / i, budget=60))
        show(Progress("predict", 1, 2, 2.0))
        show(Progress("predict", 2, 2, 2.5))
    assert out.getvalue().splitlines() == ["[train] 3 steps, 1.5 s, loss 0.3333", "[predict] 2 rows, 2.5 s"]
    quiet = io.StringIO()
    with ProgressPrinter(quiet, quiet=True) as show:
        show(Progress("train", 1, 5, 0.1, loss=0.5))
    assert quiet.getvalue() == ""
    bar = io.StringIO()
    with ProgressPrinter(bar, tty=True) as show:
        show(Progress("train", 2, 4, 0.1, loss=0.5))
    assert "train" in bar.getvalue() and "2/4 steps" in bar.getvalue()
