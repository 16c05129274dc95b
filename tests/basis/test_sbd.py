"""SBD reader on GTinst/GTcls .mat fixtures written here, and the paper's splits."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.io
import torch

from basis.data import DataError, SBDInstances, describe_splits, paper_splits
from basis.data.sbd import write_gtinst
from tests.basis.datafix import H, W, make_sbd, make_voc, voc_maps


@pytest.fixture
def sbd(tmp_path):
    return make_sbd(tmp_path / "benchmark_RELEASE",
                    {"train": ["2008_000002", "2008_000003"], "val": ["2008_000007"]})


def test_reads_gtinst(sbd):
    ds = SBDInstances(sbd, "train")  # the parent of dataset/ is accepted
    assert ds.ids == [2008000002, 2008000003]
    s = ds[0]
    obj, _ = voc_maps()
    assert s.masks.shape == (2, H, W) and s.labels.tolist() == [15, 7]
    assert torch.equal(s.masks[0], torch.from_numpy(obj == 1))
    assert not s.ignore.any()  # SBD has no void
    assert len(SBDInstances(sbd / "dataset", "trainval")) == 3


def test_matlab_style_struct_with_double_categories(tmp_path, sbd):
    # MATLAB writes Categories as double (K, 1) and Boundaries as a (K, 1) cell.
    seg = np.zeros((H, W), np.uint8)
    seg[3:9, 4:20] = 2
    seg[20:30, 5:9] = 1
    cells = np.empty((2, 1), dtype=object)
    cells[0, 0] = cells[1, 0] = np.zeros((H, W), np.uint8)
    scipy.io.savemat(str(sbd / "dataset" / "inst" / "2008_000002.mat"), {"GTinst": {
        "Segmentation": seg, "Categories": np.array([[3.0], [20.0]]), "Boundaries": cells}})
    s = SBDInstances(sbd, "train")[0]
    assert s.labels.tolist() == [3, 20]
    assert torch.equal(s.masks[1], torch.from_numpy(seg == 2))


def test_mat_without_gtinst(sbd):
    p = sbd / "dataset" / "inst" / "2008_000003.mat"
    scipy.io.savemat(str(p), {"GTcls": {"Segmentation": np.zeros((H, W), np.uint8)}})
    with pytest.raises(DataError) as err:
        SBDInstances(sbd, "train")[1]
    assert str(p) in str(err.value) and "GTinst" in str(err.value)


def test_corrupt_mat(sbd):
    p = sbd / "dataset" / "inst" / "2008_000003.mat"
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(DataError) as err:
        SBDInstances(sbd, "train")[1]
    assert str(p) in str(err.value)


@pytest.mark.parametrize("cats", [[15, 21], [15]])
def test_bad_categories(sbd, cats):
    obj, _ = voc_maps()
    p = sbd / "dataset" / "inst" / "2008_000002.mat"
    write_gtinst(p, np.where(obj == 255, 0, obj), cats)
    with pytest.raises(DataError) as err:
        SBDInstances(sbd, "train")[0]
    assert str(p) in str(err.value)


def test_class_map_cross_check(sbd):
    from basis.data.sbd import write_gtcls

    write_gtcls(sbd / "dataset" / "cls" / "2008_000002.mat", np.zeros((H, W), np.uint8))
    SBDInstances(sbd, "train")[0]  # not checked by default
    with pytest.raises(DataError) as err:
        SBDInstances(sbd, "train", check_classes=True)[0]
    assert "2008_000002.mat" in str(err.value)


def test_missing_split_and_folder(tmp_path, sbd):
    with pytest.raises(DataError, match="test.txt"):
        SBDInstances(sbd, "test")
    (tmp_path / "empty" / "dataset").mkdir(parents=True)
    with pytest.raises(DataError, match="inst"):
        SBDInstances(tmp_path / "empty")


def test_paper_splits(tmp_path):
    voc = make_voc(tmp_path / "voc", {"train": ["a_1", "b_2"], "val": ["c_3"]})
    sbd = make_sbd(tmp_path / "sbd", {"train": ["b_2", "d_4", "e_5"], "val": ["c_3", "f_6"]})
    sp = paper_splits(voc, sbd)
    assert sp["strong"].names == ["a_1", "b_2"]
    assert sp["test"].names == ["c_3"]
    assert sp["additional"].names == ["d_4", "e_5", "f_6"]
    ids = [set(d.ids) for d in sp.values()]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert describe_splits(sp) == "strong: 2 images\nadditional: 3 images\ntest: 1 images"
    assert sp["additional"][0].n_objects == 2
