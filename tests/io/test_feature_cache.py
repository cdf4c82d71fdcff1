"""io/cache.py's feature cache: a scan's filter features are computed once and read back from disk.

A damaged or foreign entry counts as absent (ours is rebuilt, anybody else's is left alone),
a cache that cannot be written only warns, and the size bound removes the oldest entries of
ours and nothing else. The command line's use of it is in tests/cli/test_feature_cache.py.
"""

import json
import os

import numpy as np
import pytest

from napari_sparseseg.core.model import forest
from napari_sparseseg.core.model.forest import N_FEATURES, FeatureCache, scan_features
from napari_sparseseg.io.cache import (
    FEATURES_JSON,
    FEATURES_NPY,
    cache_folder,
    cache_scan_features,
    feature_entry,
    load_features,
    trim_feature_cache,
)

RANGES, SPACING = [(-100.0, 300.0)], (2.0, 1.0, 1.0)


@pytest.fixture
def calls(monkeypatch):
    """Counts the feature passes (the work the cache saves)."""
    count = []

    def counting(*args, **kw):
        count.append(1)
        return scan_features(*args, **kw)

    monkeypatch.setattr(forest, "scan_features", counting)
    return count


def scan(seed=0, shape=(10, 12, 12)):
    return np.random.default_rng(seed).normal(50, 80, shape).astype(np.int16)


def test_default_folder_and_its_environment_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("SPARSESEG_FEATURE_CACHE", str(tmp_path / "moved"))
    assert cache_folder("features") == tmp_path / "moved"
    monkeypatch.delenv("SPARSESEG_FEATURE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_folder("features") == tmp_path / "xdg" / "napari-sparseseg" / "features"


def test_computed_once_then_read_back_memory_mapped(tmp_path, calls, monkeypatch):
    monkeypatch.setenv("SPARSESEG_FEATURE_CACHE", str(tmp_path / "env"))
    image = scan()
    first = FeatureCache()
    assert cache_scan_features(first, image, RANGES, SPACING) == "written"
    assert len(calls) == 1
    [entry] = (tmp_path / "env").iterdir()  # the environment variable moves it
    assert entry == feature_entry(image, RANGES, SPACING)
    assert sorted(p.name for p in entry.iterdir()) == [FEATURES_JSON, FEATURES_NPY]
    meta = json.loads((entry / FEATURES_JSON).read_text())
    assert meta["format_version"] == 1 and meta["shape"] == [N_FEATURES, 10, 12, 12]
    assert meta["ranges"] == [[-100.0, 300.0]] and meta["spacing"] == [2.0, 1.0, 1.0]
    assert meta["key"]["image_blake2b"] == forest.feature_key(image, RANGES, SPACING)[0]

    second = FeatureCache()
    assert cache_scan_features(second, image, RANGES, SPACING) == "read"
    assert len(calls) == 1  # not computed again
    got = second.get(image, RANGES, SPACING)
    assert isinstance(got, np.memmap) and got.dtype == np.float16
    assert np.array_equal(got, first.get(image, RANGES, SPACING))
    assert len(calls) == 1


def test_another_scan_range_or_spacing_is_another_entry(tmp_path, calls):
    image = scan()
    for ranges, spacing in [(RANGES, SPACING), ([(-100.0, 301.0)], SPACING), (RANGES, (1.0, 1.0, 1.0))]:
        assert cache_scan_features(FeatureCache(), image, ranges, spacing, cache_dir=tmp_path) == "written"
    assert cache_scan_features(FeatureCache(), scan(1), RANGES, SPACING, cache_dir=tmp_path) == "written"
    assert len(calls) == 4 and len(list(tmp_path.iterdir())) == 4
    # The same ranges as integers are the same key.
    assert cache_scan_features(FeatureCache(), image, [(-100, 300)], SPACING, cache_dir=tmp_path) == "read"


@pytest.mark.parametrize("damage", ["truncated", "too long", "garbage", "wrong dtype", "other scan's metadata", "no array"])
def test_a_damaged_entry_is_recomputed_and_replaced(tmp_path, calls, damage):
    image = scan()
    good = FeatureCache()
    cache_scan_features(good, image, RANGES, SPACING, cache_dir=tmp_path)
    expected = np.array(good.get(image, RANGES, SPACING))
    entry = feature_entry(image, RANGES, SPACING, tmp_path)
    npy, meta = entry / FEATURES_NPY, entry / FEATURES_JSON
    if damage == "truncated":
        npy.write_bytes(npy.read_bytes()[: npy.stat().st_size // 2])
    elif damage == "too long":
        npy.write_bytes(npy.read_bytes() + b"\0" * 64)
    elif damage == "garbage":
        npy.write_bytes(b"this is not an array" * 100)
    elif damage == "wrong dtype":
        np.save(npy, expected.astype(np.float32))
    elif damage == "other scan's metadata":
        m = json.loads(meta.read_text())
        m["key"]["image_blake2b"] = "0" * 32
        meta.write_text(json.dumps(m))
    else:
        npy.unlink()
    assert load_features(image, RANGES, SPACING, tmp_path) is None  # counts as absent
    again = FeatureCache()
    assert cache_scan_features(again, image, RANGES, SPACING, cache_dir=tmp_path) == "written"
    assert len(calls) == 2  # recomputed
    assert np.array_equal(again.get(image, RANGES, SPACING), expected)
    assert np.array_equal(load_features(image, RANGES, SPACING, tmp_path), expected)  # and replaced on disk
    assert sorted(p.name for p in tmp_path.iterdir()) == [entry.name]  # no temporary left


def test_a_foreign_folder_at_the_entry_is_left_alone(tmp_path, calls):
    image = scan()
    entry = feature_entry(image, RANGES, SPACING, tmp_path)
    entry.mkdir(parents=True)
    (entry / FEATURES_JSON).write_text('{"mine": true}')
    (entry / "notes.txt").write_text("the user's")
    cache = FeatureCache()
    with pytest.warns(UserWarning, match="could not be cached"):
        assert cache_scan_features(cache, image, RANGES, SPACING, cache_dir=tmp_path) == "computed"
    assert cache.has(image, RANGES, SPACING) and len(calls) == 1
    assert sorted(p.name for p in entry.iterdir()) == [FEATURES_JSON, "notes.txt"]
    assert (entry / "notes.txt").read_text() == "the user's" and (entry / FEATURES_JSON).read_text() == '{"mine": true}'


def test_an_unwritable_cache_warns_and_keeps_the_features_in_memory(tmp_path, calls):
    (tmp_path / "file").write_text("a file where the cache folder's parent should be")
    image = scan()
    cache = FeatureCache()
    with pytest.warns(UserWarning, match="could not be cached"):
        assert cache_scan_features(cache, image, RANGES, SPACING, cache_dir=tmp_path / "file" / "cache") == "computed"
    assert cache.has(image, RANGES, SPACING) and len(calls) == 1
    assert (tmp_path / "file").read_text().startswith("a file")


def test_features_over_the_bound_are_not_written(tmp_path, calls):
    image = scan()
    cache = FeatureCache()
    assert cache_scan_features(cache, image, RANGES, SPACING, cache_dir=tmp_path, max_bytes=1000) == "computed"
    assert cache.has(image, RANGES, SPACING) and not any(tmp_path.iterdir())


def test_the_size_bound_removes_the_oldest_entries_of_ours_only(tmp_path, calls):
    images = [scan(seed) for seed in range(3)]
    entries = []
    for age, image in zip([300, 200, 100], images, strict=True):
        cache_scan_features(FeatureCache(), image, RANGES, SPACING, cache_dir=tmp_path)
        entry = feature_entry(image, RANGES, SPACING, tmp_path)
        t = entry.stat().st_mtime - age
        os.utime(entry, (t, t))
        entries.append(entry)
    def bytes_of(entry):
        return sum(p.stat().st_size for p in entry.iterdir())

    # Alike, not equal: each entry's JSON records the seconds its features took, so sizes differ by a few bytes
    # from run to run; SLACK covers that and is far below one entry.
    sizes = [bytes_of(e) for e in entries]
    slack = 64
    assert slack * 10 < min(sizes)
    size, total = sizes[0], sum(sizes)
    elsewhere = tmp_path.parent / f"{tmp_path.name}-size-probe"  # the fourth entry's size, measured apart
    cache_scan_features(FeatureCache(), scan(3), RANGES, SPACING, cache_dir=elsewhere)
    size_new = bytes_of(feature_entry(scan(3), RANGES, SPACING, elsewhere))
    # Things of somebody else's: a file, a folder named like an entry holding other files, and
    # one with a JSON napari-sparseseg did not write. They are older than every entry.
    (tmp_path / "notes.txt").write_bytes(b"x" * 10 * size)
    impostor = tmp_path / ("a" * 32)
    impostor.mkdir()
    (impostor / FEATURES_NPY).write_bytes(b"y" * size)
    (impostor / FEATURES_JSON).write_text('{"package": "somebody-else", "kind": "features"}')
    extra = tmp_path / ("b" * 32)
    extra.mkdir()
    (extra / FEATURES_JSON).write_text(json.dumps({"package": "napari-sparseseg", "kind": "features"}))
    (extra / "mine.txt").write_text("keep")
    for p in [tmp_path / "notes.txt", impostor, extra]:
        os.utime(p, (1, 1))
    before = {p.name for p in tmp_path.iterdir()}

    assert trim_feature_cache(tmp_path, max_bytes=total) == []  # within the bound: nothing goes
    # A fourth entry, written through the cache with a bound of three: the oldest entry goes, only it.
    cache_scan_features(FeatureCache(), scan(3), RANGES, SPACING, cache_dir=tmp_path,
                        max_bytes=sizes[1] + sizes[2] + size_new + slack)
    newest = feature_entry(scan(3), RANGES, SPACING, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == before - {entries[0].name} | {newest.name}
    assert (tmp_path / "notes.txt").stat().st_size == 10 * size and (extra / "mine.txt").read_text() == "keep"
    assert sorted(p.name for p in impostor.iterdir()) == [FEATURES_JSON, FEATURES_NPY]
    # A read refreshes an entry: the one read now is kept, the next oldest goes.
    assert load_features(images[1], RANGES, SPACING, tmp_path) is not None
    assert trim_feature_cache(tmp_path, max_bytes=sizes[1] + size_new + slack) == [entries[2]]
    # The one just written stays even when it alone is over the bound.
    assert trim_feature_cache(tmp_path, max_bytes=0, keep=[newest]) == [entries[1]]
    assert {p.name for p in tmp_path.iterdir()} == {"notes.txt", impostor.name, extra.name, newest.name}


def test_a_stale_temporary_folder_of_ours_is_cleaned_up(tmp_path, calls):
    image = scan()
    cache_scan_features(FeatureCache(), image, RANGES, SPACING, cache_dir=tmp_path)
    entry = feature_entry(image, RANGES, SPACING, tmp_path)
    stale, fresh = tmp_path / f".{entry.name}.sparseseg-tmp-0badf00d", tmp_path / f".{entry.name}.sparseseg-tmp-12345678"
    for tmp in (stale, fresh):
        tmp.mkdir()
        (tmp / FEATURES_NPY).write_bytes(b"half written")
    os.utime(stale, (1, 1))
    assert trim_feature_cache(tmp_path) == [stale]  # a write killed long ago; one in progress stays
    assert fresh.is_dir() and entry.is_dir()
