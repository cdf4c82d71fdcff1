"""`sparseseg segment --scheduler` against a loopback cluster: the local command's mask, and its faults in one line."""

import numpy as np

from napari_sparseseg.cli import main
from napari_sparseseg.io import Geometry, read_labels, write_image, write_labels
from tests.conftest import make_phantom


def _files(tmp_path):
    image, ref = make_phantom()
    strokes = np.zeros(ref.shape, np.uint8)
    strokes[20, ::2, ::2] = ref[20, ::2, ::2] + 1
    strokes[::2, 15, ::2] = ref[::2, 15, ::2] + 1
    geom = Geometry.from_spacing(image.shape, (1.0, 1.0, 1.0))
    write_image(tmp_path / "scan.nii.gz", image, geom)
    write_labels(tmp_path / "strokes.nii.gz", strokes, geom)
    return geom, [str(tmp_path / "scan.nii.gz"), str(tmp_path / "strokes.nii.gz"), "--max-steps", "3", "--time-budget", "86400", "--seed", "2",
                  "--device", "cpu"]


def test_segment_on_the_cluster_writes_the_mask_the_local_command_writes(cluster, tmp_path, capsys):
    geom, argv = _files(tmp_path)
    assert main(["segment", *argv, "-o", str(tmp_path / "local.nii.gz")]) == 0
    capsys.readouterr()
    assert main(["segment", *argv, "-o", str(tmp_path / "remote.nii.gz"), "--scheduler", cluster.address,
                 "--model-out", str(tmp_path / "model"), "--silence-timeout", "300", "--connect-timeout", "300"]) == 0
    err = capsys.readouterr().err
    assert f"training on the Dask cluster at {cluster.address}" in err and "the round runs on tcp://127.0.0.1" in err
    assert "trained 3 steps" in err and "warning:" not in err  # loopback tcp:// is not warned about
    local, _ = read_labels(tmp_path / "local.nii.gz", like=geom)
    remote, _ = read_labels(tmp_path / "remote.nii.gz", like=geom)
    assert np.array_equal(local, remote)
    assert (tmp_path / "model" / "model.json").is_file()


def test_an_unreachable_cluster_stops_in_one_line_or_falls_back_to_this_computer(tmp_path, capsys):
    _, argv = _files(tmp_path)
    far = ["--scheduler", "tcp://127.0.0.1:9", "--connect-timeout", "2"]
    assert main(["segment", *argv, "-o", str(tmp_path / "m.nii.gz"), *far]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("sparseseg: error: cannot reach the Dask scheduler at tcp://127.0.0.1:9")
    assert "leave out --scheduler" in err[-1] and not (tmp_path / "m.nii.gz").exists()
    assert main(["segment", *argv, "-o", str(tmp_path / "m.nii.gz"), *far, "--local-fallback"]) == 0
    err = capsys.readouterr().err
    assert "cannot reach the Dask scheduler" in err and "--local-fallback: training on this computer instead" in err
    assert (tmp_path / "m.nii.gz").is_file()
    assert main(["segment", *argv, "-o", str(tmp_path / "p.nii.gz"), *far, "--pretrain", "5"]) == 2
    assert "--pretrain runs on this computer" in capsys.readouterr().err
    assert main(["segment", *argv, "-o", str(tmp_path / "t.nii.gz"), "--tls-ca", "ca.pem"]) == 2
    assert "are for --scheduler tls://" in capsys.readouterr().err
