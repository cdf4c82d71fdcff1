"""A cohort's scans from files, folders, globs and CSV manifests (io/cohort.py)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sparseseg.core.base.errors import InputError
from napari_sparseseg.io import Geometry, write_image, write_labels
from napari_sparseseg.io.cohort import expand_inputs, match_scribbles, scan_name


def _scan(path, value=0.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, np.full((4, 5, 6), value, np.float32), Geometry.from_spacing((4, 5, 6)))
    return path


def _strokes(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_labels(path, np.ones((4, 5, 6), np.uint8), Geometry.from_spacing((4, 5, 6)))
    return path


@pytest.fixture
def cohort(tmp_path):
    a = _scan(tmp_path / "site1" / "ct.nii.gz")
    b = _scan(tmp_path / "site2" / "ct.nii.gz")  # same name, other folder
    c = _scan(tmp_path / "site2" / "mr.nrrd")
    (tmp_path / "site2" / "notes.txt").write_text("not a scan")
    return tmp_path, a, b, c


def test_files_folders_and_globs_give_each_scan_once_with_unique_names(cohort):
    root, a, b, c = cohort
    entries = expand_inputs([a, root / "site2", str(root / "**" / "*.nii.gz")])
    assert [e.image for e in entries] == [a, b, c]  # the order named; b named twice, kept once
    assert [e.name for e in entries] == ["site1_ct", "site2_ct", "mr"]
    assert scan_name(a) == "ct" and scan_name(c) == "mr" and scan_name(root / "site1") == "site1"


def test_a_manifest_lists_scans_with_their_strokes(cohort):
    root, a, b, c = cohort
    s = _strokes(root / "strokes" / "a.nii.gz")
    (root / "cohort.csv").write_text("image,scribbles\nsite1/ct.nii.gz,strokes/a.nii.gz\n" + f"{c},\n")
    entries = expand_inputs([root / "cohort.csv"])
    assert [(e.image, e.scribbles) for e in entries] == [(root / "site1" / "ct.nii.gz", s), (c, None)]


@pytest.mark.parametrize("content, message", [
    ("path\nx.nii.gz\n", "'image' column"),
    ("image,weight\nsite1/ct.nii.gz,1\n", "unknown column"),
    ("image\nmissing.nii.gz\n", "row 2: the image 'missing.nii.gz' does not exist"),
    ("image\nsite2/notes.txt\n", "not a scan file"),
    ("image\n", "lists no scans"),
])
def test_a_bad_manifest_says_which_row_and_what(cohort, content, message):
    root = cohort[0]
    (root / "bad.csv").write_text(content)
    with pytest.raises(InputError, match=message) as err:
        expand_inputs([root / "bad.csv"])
    assert err.value.path == str(root / "bad.csv")


def test_inputs_that_name_no_scan_are_refused_naming_them(cohort, tmp_path):
    root = cohort[0]
    (root / "empty").mkdir()
    cases = [(root / "nope.nii.gz", "not found"), (root / "empty", "no scans in this folder"),
             (str(root / "*.mha"), "matches no scans"), (root / "site2" / "notes.txt", "not a scan")]
    for given, message in cases:
        with pytest.raises(InputError, match=message) as err:
            expand_inputs([given])
        assert err.value.path == str(given)
    with pytest.raises(InputError, match="no scans given"):
        expand_inputs([])


def test_fine_tune_strokes_are_matched_to_scans_by_name(cohort):
    root, a, b, c = cohort
    entries = expand_inputs([root / "site1", c])  # names "ct", "mr"
    mr_strokes = _strokes(root / "strokes" / "mr_scribbles.nii.gz")
    _strokes(root / "strokes" / "other_scribbles.nii.gz")  # no such scan: ignored
    got = match_scribbles(entries, str(root / "strokes" / "*.nii.gz"))
    assert [e.scribbles for e in got] == [None, mr_strokes]
    # With {name}: the scan's own file.
    ct_strokes = _strokes(root / "by_scan" / "ct" / "strokes.nii.gz")
    got = match_scribbles(entries, str(root / "by_scan" / "{name}" / "strokes.nii.gz"))
    assert [e.scribbles for e in got] == [ct_strokes, None]
    # Two candidates for one scan, or none at all, are errors that say so.
    _strokes(root / "strokes" / "mr-labels.nii.gz")
    with pytest.raises(InputError, match="2 stroke files match scan 'mr'"):
        match_scribbles(entries, str(root / "strokes" / "*.nii.gz"))
    with pytest.raises(InputError, match="matches no stroke files"):
        match_scribbles(entries, str(root / "nothing" / "*.nii.gz"))


def test_scans_of_one_name_in_one_folder_get_names_of_their_own_never_a_path(tmp_path):
    """Hostile tester: ct.nii.gz and ct.nrrd in one folder both got one name built from the full path."""
    from napari_sparseseg.io.names import check_name

    a = _scan(tmp_path / "scans" / "ct.nii.gz")
    b = _scan(tmp_path / "scans" / "ct.nrrd")
    c = _scan(tmp_path / "scans" / "CT.nii.gz")  # one file with ct.nii.gz on macOS and Windows
    d = _scan(tmp_path / "other" / "ct.nii.gz")
    names = {e.image: e.name for e in expand_inputs([tmp_path / "scans", tmp_path / "other"])}
    assert names == {a: "ct_nii_gz_2", b: "ct_nrrd", c: "CT_nii_gz", d: "other_ct"}
    for n in names.values():
        assert check_name(n) == n and "/" not in n and not n.startswith(("_", "."))
    assert len({n.casefold() for n in names.values()}) == 4
    # Deterministic: the same names whatever the order the scans are named in.
    again = {e.image: e.name for e in expand_inputs([d, b, c, a])}
    assert again == names
    assert {e.name for e in expand_inputs([a, b])} == {"ct_nii_gz", "ct_nrrd"}


@pytest.mark.parametrize("name", ["../../../x/evil", "/tmp/evil", "a/b", "..", ".", "", "a\\b", "x\0y", 7, "x" * 300])
def test_a_name_that_is_not_a_plain_file_name_part_is_refused(name):
    from napari_sparseseg.io.names import check_name

    with pytest.raises(InputError):
        check_name(name)
