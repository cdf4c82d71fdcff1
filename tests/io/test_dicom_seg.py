"""DICOM SEG out and in: a mask of a CT series round-trips onto the same voxels of the same grid.

The series are written with pydicom as a scanner would (CT Image Storage, oblique or flipped),
the SEG with the package (highdicom underneath), and read back three ways: by the package, by
highdicom, and by pydicom alone, frame by frame, against the slice file each frame references
(so the check does not lean on the package's own slice matching).
"""

import numpy as np
import pytest

pytest.importorskip("highdicom")

import highdicom as hd  # noqa: E402
import pydicom  # noqa: E402

from napari_sparseseg.core.base.errors import InputError, OutputError  # noqa: E402
from napari_sparseseg.io import Geometry, check_outputs, read_image, read_labels, read_scan, write_labels  # noqa: E402
from napari_sparseseg.io.dicom_seg import (  # noqa: E402
    SEG_SOP_CLASS_UID,
    dicom_series,
    is_dicom_seg,
    read_dicom_seg,
    seg_class_names,
    segment_codes,
    write_dicom_seg,
)
from napari_sparseseg.io.volumes import write_probabilities  # noqa: E402
from tests.io.dicom_series import oblique_geometry, write_ct_series  # noqa: E402

NAMES = ["background", "liver", "left kidney", "blob"]


def _classes(values):
    """The mask a test draws: a function of the CT value, so any reader can recompute it from the slice files."""
    v = np.asarray(values).astype(np.int64)
    out = np.zeros(v.shape, np.uint8)
    out[(v % 7) == 1] = 1
    out[(v % 7) == 4] = 2
    out[(v % 11) == 5] = 3
    return out


@pytest.fixture(params=["oblique", "flipped"])
def ct(request, tmp_path):
    """A CT series on an oblique grid, or one whose files run against the array order (flipped axes, reversed numbers)."""
    flip = request.param == "flipped"
    geom = oblique_geometry(shape=(6, 7, 9), flip=flip)
    k, j, i = np.indices(geom.shape)
    image = (100 * k + 10 * j + i).astype(np.int16)
    uids = write_ct_series(tmp_path / "ct", image, geom, reverse_instances=flip)
    arr, g = read_image(tmp_path / "ct")
    return tmp_path / "ct", arr, g, uids


def _world(ds_position, orientation, spacing, rows, cols):
    """LPS mm of every pixel centre of a frame, from its header alone."""
    row_dir, col_dir = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    return (np.asarray(ds_position, float) + r[..., None] * spacing[0] * col_dir + c[..., None] * spacing[1] * row_dir)


def test_mask_round_trips_onto_the_same_voxels_read_three_ways(ct, tmp_path):
    folder, image, geom, uids = ct
    mask = _classes(image)
    assert set(np.unique(mask)) == {0, 1, 2, 3}
    out = write_labels(tmp_path / "mask.dcm", mask, geom, source=folder, class_names=NAMES)
    assert is_dicom_seg(out) and not list(tmp_path.glob(".*sparseseg-tmp*"))

    # 1. the package, onto the scan's grid
    assert np.array_equal(read_dicom_seg(out, folder), mask)
    back, g = read_labels(out, like=geom, what="mask", source=folder)
    assert np.array_equal(back, mask) and g is geom

    # 2. highdicom, by the source slices in the package's array order
    seg = hd.seg.segread(out)
    series = dicom_series(folder, geom)
    by_hd = seg.get_pixels_by_source_instance(series.instance_uids, combine_segments=True)
    assert np.array_equal(by_hd, mask)

    # 3. pydicom alone: each frame against the CT slice file it references, by position and value
    ds = pydicom.dcmread(out)
    files = {str(f.SOPInstanceUID): f for f in (pydicom.dcmread(p) for p in folder.glob("*.dcm"))}
    frames = ds.pixel_array.reshape(int(ds.NumberOfFrames), ds.Rows, ds.Columns)
    shared = ds.SharedFunctionalGroupsSequence[0]
    orientation = [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient]
    spacing = [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing]
    seen = {}
    for f, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        source = files[str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)]
        position = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        assert np.allclose(position, [float(v) for v in source.ImagePositionPatient], atol=1e-4)
        assert np.allclose(orientation, [float(v) for v in source.ImageOrientationPatient], atol=1e-4)
        assert np.allclose(spacing, [float(v) for v in source.PixelSpacing], atol=1e-6)
        expected = _classes(source.pixel_array) == number
        assert np.array_equal(frames[f].astype(bool), expected), (f, number)
        seen[(number, str(source.SOPInstanceUID))] = True
    # every non-empty (segment, slice) pair has its frame; empty ones are left out
    for uid, source in files.items():
        for number in (1, 2, 3):
            assert ((number, uid) in seen) == bool((_classes(source.pixel_array) == number).any())

    # and the world positions of the frames' voxels are those of the scan's voxels (geometry, not just the array)
    k0 = series.instance_uids.index(str(ds.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0]
                                        .SourceImageSequence[0].ReferencedSOPInstanceUID))
    pos0 = [float(v) for v in ds.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0].ImagePositionPatient]
    lps = _world(pos0, orientation, spacing, ds.Rows, ds.Columns)
    j, i = np.meshgrid(np.arange(geom.shape[1]), np.arange(geom.shape[2]), indexing="ij")
    ras = geom.index_to_world(np.stack([np.full_like(j, k0), j, i], -1))
    assert np.allclose(lps * [-1, -1, 1], ras, atol=1e-3)


def test_the_seg_references_the_series_and_names_its_classes(ct, tmp_path):
    folder, image, geom, uids = ct
    out = write_labels(tmp_path / "mask.dcm", _classes(image), geom, source=folder, class_names=NAMES)
    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == SEG_SOP_CLASS_UID and ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    assert ds.StudyInstanceUID == uids["study"] and ds.FrameOfReferenceUID == uids["frame_of_reference"]
    assert ds.PatientID == "PH-001" and ds.SeriesInstanceUID != uids["series"]
    (ref,) = ds.ReferencedSeriesSequence
    assert ref.SeriesInstanceUID == uids["series"]
    assert {str(r.ReferencedSOPInstanceUID) for r in ref.ReferencedInstanceSequence} == set(uids["instances"])
    labels = {int(s.SegmentNumber): s for s in ds.SegmentSequence}
    assert [labels[n].SegmentLabel for n in (1, 2, 3)] == NAMES[1:]
    liver, kidney, blob = labels[1], labels[2], labels[3]
    assert liver.SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"  # SCT Liver
    assert liver.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"  # Anatomical Structure
    assert kidney.SegmentedPropertyTypeCodeSequence[0].CodeValue == "64033007"  # SCT Kidney (the label keeps the side)
    assert blob.SegmentedPropertyTypeCodeSequence[0].CodeValue == "85756007"  # unknown: Tissue
    assert blob.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "85756007"
    for s in labels.values():
        assert s.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
        assert s.SegmentAlgorithmType == "SEMIAUTOMATIC"
        assert s.SegmentAlgorithmName == "napari-sparseseg"
        algo = s.SegmentationAlgorithmIdentificationSequence[0]
        assert algo.AlgorithmName == "napari-sparseseg" and algo.AlgorithmVersion == "0.1.0"
    assert seg_class_names(out) == NAMES
    # highdicom reads the descriptions back too
    seg = hd.seg.segread(out)
    assert [seg.get_segment_description(n).segment_label for n in (1, 2, 3)] == NAMES[1:]


def test_codes_for_class_names():
    assert segment_codes("Liver") == ("AnatomicalStructure", "Liver")
    assert segment_codes("kidney_right") == ("AnatomicalStructure", "Kidney")
    assert segment_codes("Left Lung") == ("AnatomicalStructure", "Lung")
    assert segment_codes("tumour") == ("MorphologicallyAbnormalStructure", "Neoplasm")
    assert segment_codes("fat") == ("Tissue", "AdiposeTissue")
    assert segment_codes("structure 3") == ("Tissue", "Tissue")


def test_probabilities_as_a_fractional_seg(ct, tmp_path):
    folder, image, geom, uids = ct
    rng = np.random.default_rng(0)
    p = rng.integers(0, 256, size=(3, *geom.shape)).astype(np.uint8)
    p[1, 2] = 0  # an empty slice of class 1: its frame is left out
    out = write_probabilities(tmp_path / "p.dcm", p, geom, source=folder, class_names=["background", "liver", "spleen"])
    seg = hd.seg.segread(out)
    assert seg.SegmentationType == "FRACTIONAL" and seg.MaximumFractionalValue == 255
    assert seg.SegmentationFractionalType == "PROBABILITY"
    uids_k = dicom_series(folder, geom).instance_uids
    got = seg.get_pixels_by_source_instance(uids_k, combine_segments=False, rescale_fractional=False)
    assert np.array_equal(np.moveaxis(got, -1, 0), p[1:])
    assert [seg.get_segment_description(n).segment_label for n in (1, 2)] == ["liver", "spleen"]
    # read as a mask: a class where its probability is above one half (the higher segment where both are)
    m = read_dicom_seg(out, folder)
    want = np.where(p[2] > 127, 2, np.where(p[1] > 127, 1, 0))
    assert np.array_equal(m, want)


def test_a_seg_opened_as_scribbles_lands_on_the_right_voxels(ct, tmp_path):
    folder, image, geom, uids = ct
    strokes = np.zeros(geom.shape, np.uint8)
    strokes[1, 1:3, 2:7] = 1  # background
    strokes[4, 5, 1:4] = 2  # liver
    strokes[0, 0, 8] = 3  # spleen, at a corner of the grid
    seg = write_dicom_seg(tmp_path / "strokes.dcm", strokes, folder, ["unlabelled", "background", "liver", "spleen"],
                          geometry=geom)
    assert seg_class_names(seg) == ["background", "liver", "spleen"]
    s, g = read_labels(seg, like=geom, what="scribbles", source=folder)
    assert np.array_equal(s, strokes) and g is geom
    # through read_scan (what segment, train and batch use), and matched by label to another class order
    _, _, s2, c2 = read_scan(folder, seg, seg, class_names=["background", "spleen", "liver"])
    assert np.array_equal(s2, np.choose(strokes, [0, 1, 3, 2])) and np.array_equal(c2, s2)
    # as a mask: background is 0
    assert np.array_equal(read_labels(seg, like=geom, what="mask", source=folder)[0], np.where(strokes > 1, strokes - 1, 0))
    with pytest.raises(InputError, match="'spleen' are not among the classes background, liver, kidney"):
        read_labels(seg, like=geom, what="scribbles", source=folder, class_names=["background", "liver", "kidney"])


def test_a_seg_written_elsewhere_with_frames_in_file_order_is_placed_by_position(ct, tmp_path):
    """highdicom used directly (as another tool would): frames in the order of the slice files, not the package's."""
    folder, image, geom, uids = ct
    files = sorted(folder.glob("*.dcm"))
    sources = [pydicom.dcmread(f) for f in files]
    mask = np.stack([(_classes(s.pixel_array) == 1).astype(np.uint8) for s in sources])
    from pydicom.sr.codedict import codes

    desc = hd.seg.SegmentDescription(1, "liver", codes.SCT.Organ, codes.SCT.Liver, hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    seg = hd.seg.Segmentation(sources, mask, "BINARY", [desc], hd.UID(), 7, hd.UID(), 1, "other", "other", "1", "1")
    seg.save_as(tmp_path / "other.dcm")
    assert np.array_equal(read_dicom_seg(tmp_path / "other.dcm", folder), (_classes(image) == 1).astype(np.uint8))


def test_a_seg_of_another_series_is_refused(ct, tmp_path):
    folder, image, geom, uids = ct
    seg = write_labels(tmp_path / "mask.dcm", _classes(image), geom, source=folder, class_names=NAMES)
    other = tmp_path / "other"
    write_ct_series(other, image, geom)  # same grid, another study, series and frame of reference
    with pytest.raises(InputError) as info:
        read_labels(seg, like=read_image(other)[1], what="scribbles", source=other)
    line = info.value.one_line()
    assert line.startswith(str(seg)) and "does not reference this scan" in line and uids["series"] in line
    assert "\n" not in line


def test_a_seg_on_another_grid_is_refused(ct, tmp_path):
    folder, image, geom, uids = ct
    seg = write_labels(tmp_path / "mask.dcm", _classes(image), geom, source=folder, class_names=NAMES)
    ds = pydicom.dcmread(seg)
    ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing = [0.5, 0.5]
    ds.save_as(tmp_path / "spacing.dcm")
    with pytest.raises(InputError, match="pixel spacing 0.5 x 0.5 mm differs"):
        read_dicom_seg(tmp_path / "spacing.dcm", folder)
    ds = pydicom.dcmread(seg)
    item = ds.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0]
    item.ImagePositionPatient = [float(v) + 0.4 for v in item.ImagePositionPatient]
    ds.save_as(tmp_path / "moved.dcm")
    with pytest.raises(InputError, match="frame 1 of the DICOM SEG lies between the scan's voxels"):
        read_dicom_seg(tmp_path / "moved.dcm", folder)


def test_a_seg_needs_a_dicom_series(ct, tmp_path):
    folder, image, geom, uids = ct
    seg = write_labels(tmp_path / "mask.dcm", _classes(image), geom, source=folder, class_names=NAMES)
    nifti = write_labels(tmp_path / "scan.nii.gz", image, geom)
    with pytest.raises(InputError, match="not a DICOM series folder"):
        read_labels(seg, like=geom, what="scribbles", source=nifti)
    with pytest.raises(OutputError, match="is not a DICOM series"):
        write_labels(tmp_path / "x.dcm", _classes(image), geom, source=nifti)
    with pytest.raises(OutputError, match="a .dcm mask is a DICOM SEG.*not a DICOM series folder"):
        check_outputs({"mask": tmp_path / "y.dcm"}, {"image": nifti})
    with pytest.raises(OutputError, match="a .dcm probabilities is a DICOM SEG"):
        check_outputs({"probabilities": tmp_path / "p.dcm"}, {"scan": nifti})
    assert check_outputs({"mask": tmp_path / "y.dcm"}, {"image": folder})  # a DICOM series: accepted
    with pytest.raises(OutputError, match="only a suffix"):
        check_outputs({"mask": tmp_path / ".dcm"}, {"image": folder})


def test_the_packages_own_series_carries_a_seg_and_one_without_a_frame_of_reference_cannot(tmp_path):
    """A mask exported as a DICOM series gets a Frame of Reference UID, so a SEG can be placed on it;
    a series without one (as other tools may write) is refused in one line, nothing written."""
    geom = Geometry.from_spacing((4, 5, 6), (2.0, 1.0, 1.0))
    labels = np.arange(120).reshape(4, 5, 6) % 3
    folder = write_labels(tmp_path / "series", labels, geom)
    _, g = read_image(folder)
    mask = (labels == 1).astype(np.uint8)
    write_labels(tmp_path / "m.dcm", mask, g, source=folder, class_names=["background", "blob"])
    assert np.array_equal(read_dicom_seg(tmp_path / "m.dcm", folder, geometry=g), mask)
    frames = {str(pydicom.dcmread(f).FrameOfReferenceUID) for f in folder.glob("*.dcm")}
    assert len(frames) == 1 and str(pydicom.dcmread(tmp_path / "m.dcm").FrameOfReferenceUID) in frames

    bare = tmp_path / "bare"
    bare.mkdir()
    for f in folder.glob("*.dcm"):
        ds = pydicom.dcmread(f)
        del ds.FrameOfReferenceUID
        ds.save_as(bare / f.name)
    with pytest.raises(OutputError, match="no Frame of Reference UID"):
        write_labels(tmp_path / "n.dcm", mask, g, source=bare)
    assert not (tmp_path / "n.dcm").exists()


def test_an_empty_mask_still_names_its_classes(ct, tmp_path):
    folder, image, geom, uids = ct
    out = write_labels(tmp_path / "empty.dcm", np.zeros(geom.shape, np.uint8), geom, source=folder,
                       class_names=["background", "liver"])
    assert seg_class_names(out) == ["background", "liver"]
    assert not read_dicom_seg(out, folder).any()


def test_a_damaged_seg_is_refused_in_one_line(ct, tmp_path):
    folder, image, geom, uids = ct
    seg = write_labels(tmp_path / "mask.dcm", _classes(image), geom, source=folder, class_names=NAMES)
    data = seg.read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as info:
        read_labels(tmp_path / "cut.dcm", like=geom, what="mask", source=folder)
    assert "\n" not in info.value.one_line()
