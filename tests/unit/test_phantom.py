"""Synthetic abdominal CT phantom: determinism, format, orientation, anatomy."""

from __future__ import annotations

import gzip
import time

import nibabel as nib
import numpy as np
import pytest
from nibabel.affines import apply_affine
from scipy import ndimage

from hkd.data.phantom import (LABEL_NAMES, LAYOUT_LABELS, TUMOUR_LABEL, case_geometry, generate_case, orientation_for,
                              write_phantom_dataset)

SIZE, SLICES = 128, 48


@pytest.fixture(scope="module")
def case0():
    return generate_case(0, 7, size=SIZE, n_slices=SLICES)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom")
    start = time.perf_counter()
    ids = write_phantom_dataset(out, n_cases=4, seed=3, size=64, slices=(20, 28))
    print(f"wrote 4 phantom cases of 64x64 in {time.perf_counter() - start:.2f} s")
    return out, ids


def canonical(array, affine):
    """Array reoriented to RAS+ voxel order (axis 0 increases toward the patient's right)."""
    return np.asanyarray(nib.as_closest_canonical(nib.Nifti1Image(array, affine)).dataobj)


def x_centroid(label, k):
    return np.argwhere(label == k)[:, 0].mean()


def test_deterministic_for_index_and_seed(case0):
    again = generate_case(0, 7, size=SIZE, n_slices=SLICES)
    for a, b in zip(case0, again):
        np.testing.assert_array_equal(a, b)
    other_seed = generate_case(0, 8, size=SIZE, n_slices=SLICES)
    other_index = generate_case(2, 7, size=SIZE, n_slices=SLICES)  # same orientation as index 0
    assert not np.array_equal(case0[0], other_seed[0])
    assert not np.array_equal(case0[1], other_seed[1])
    assert not np.array_equal(case0[1], other_index[1])


def test_dtypes_ranges_and_affine(case0):
    image, label, affine = case0
    assert image.dtype == np.int16 and label.dtype == np.uint8
    assert image.shape == label.shape == (SIZE, SIZE, SLICES)
    assert image.min() >= -1024 and image.max() <= 3071
    assert set(np.unique(label)) <= set(LABEL_NAMES)
    assert affine.shape == (4, 4)
    np.testing.assert_allclose(nib.affines.voxel_sizes(affine), (0.8, 0.8, 3.0))
    # air outside, fat and soft tissue and bone inside
    assert np.median(image[:, :, SLICES // 2][:8, :8]) < -900
    assert (image < -50).any() and (image > 300).any()


def test_custom_spacing():
    _, _, affine = generate_case(1, 0, size=32, n_slices=6, spacing_xy=0.65, slice_thickness=5.0)
    np.testing.assert_allclose(nib.affines.voxel_sizes(affine), (0.65, 0.65, 5.0))


def test_all_labels_present(case0):
    assert set(np.unique(case0[1])) == set(range(14))


def test_orientation_alternates_and_anatomy_is_consistent(case0):
    image_l, label_l, aff_l = generate_case(0, 7, size=SIZE, n_slices=SLICES, orientation="LPS")
    image_r, label_r, aff_r = generate_case(0, 7, size=SIZE, n_slices=SLICES, orientation="RAS")
    np.testing.assert_array_equal(label_l, case0[1])  # index 0 defaults to LPS
    assert orientation_for(0) == "LPS" and orientation_for(1) == "RAS"
    assert nib.aff2axcodes(aff_l) == ("L", "P", "S")
    assert nib.aff2axcodes(aff_r) == ("R", "A", "S")
    # voxel orders differ, world-space anatomy does not
    assert not np.array_equal(label_l, label_r)
    np.testing.assert_array_equal(canonical(label_l, aff_l), canonical(label_r, aff_r))
    np.testing.assert_array_equal(canonical(image_l, aff_l), canonical(image_r, aff_r))
    np.testing.assert_allclose(apply_affine(aff_l, [0, 0, 0]), apply_affine(aff_r, [SIZE - 1, SIZE - 1, 0]))


def test_patient_right_organs_on_the_right():
    # RAS+: world x increases toward the patient's right, so the right kidney (2) and the liver (6)
    # have a larger canonical x than the left kidney (3) and the spleen (1).
    for index in (0, 1):
        image, label, affine = generate_case(index, 7, size=64, n_slices=16)
        lab = canonical(label, affine)
        mid = lab.shape[0] / 2
        assert x_centroid(lab, 2) > mid > x_centroid(lab, 3)
        assert x_centroid(lab, 6) > mid > x_centroid(lab, 1)
        assert x_centroid(lab, 12) > mid > x_centroid(lab, 13)
        # world coordinates agree: the right kidney has positive x relative to the left one
        right, left = (apply_affine(affine, np.argwhere(label == k)).mean(0) for k in (2, 3))
        assert right[0] > left[0]


def test_organ_z_ranges(case0):
    label = case0[1]
    n = label.shape[2]
    present = {k: np.nonzero((label == k).any(axis=(0, 1)))[0] for k in range(1, 14)}
    low = slice(0, n // 3)
    for k in (5, 6, 1):  # esophagus, liver, spleen: upper abdomen
        assert not (label[:, :, low] == k).any(), LABEL_NAMES[k]
    assert present[5].min() > n // 2
    for k in (2, 3):  # kidneys: mid abdomen, not in the top slices
        assert not (label[:, :, n - n // 5:] == k).any()
    assert present[8].min() < n // 4 and present[8].max() > n - n // 10  # aorta: bifurcation to the top
    # some slices lack some organs
    assert any(len(set(np.unique(label[:, :, k]))) < 14 for k in range(n))


def test_kidneys_share_appearance():
    diffs, inner = [], []
    for index in range(4):
        image, label, _ = generate_case(index, 11, size=SIZE, n_slices=32)
        diffs.append(image[label == 2].mean() - image[label == 3].mean())
        r, l_ = (ndimage.binary_erosion(label == k, iterations=1) for k in (2, 3))
        inner.append(image[r].mean() - image[l_].mean())
        ratio = (label == 2).sum() / (label == 3).sum()
        assert 0.5 < ratio < 2.0
    assert abs(np.mean(diffs)) < 5.0
    assert abs(np.mean(inner)) < 5.0


def test_liver_and_spleen_intensities_are_close(case0):
    image, label, _ = case0
    liver, spleen = image[label == 6].mean(), image[label == 1].mean()
    assert 70 < liver < 130 and abs(liver - spleen) < 25


def test_dataset_layout_and_headers(dataset):
    out, ids = dataset
    assert ids == ["0001", "0002", "0003", "0004"]
    for index, case_id in enumerate(ids):
        img_path = out / "Training" / "img" / f"img{case_id}.nii.gz"
        lab_path = out / "Training" / "label" / f"label{case_id}.nii.gz"
        img, lab = nib.load(img_path), nib.load(lab_path)
        assert img.get_data_dtype() == np.int16 and lab.get_data_dtype() == np.uint8
        assert img.shape == lab.shape and img.shape[:2] == (64, 64)
        n, sxy, th = case_geometry(index, 3, (20, 28))
        assert img.shape[2] == n and 20 <= n <= 28
        assert 0.7 <= sxy <= 0.9 and 2.5 <= th <= 5.0
        np.testing.assert_allclose(img.header.get_zooms(), (sxy, sxy, th), rtol=1e-5)
        np.testing.assert_allclose(img.affine, lab.affine)
        assert nib.aff2axcodes(img.affine) == (("L", "P", "S") if index % 2 == 0 else ("R", "A", "S"))
        with gzip.open(img_path, "rb") as f:
            hdr = nib.Nifti1Header.from_fileobj(f)
        assert hdr["scl_slope"] == 1 and hdr["scl_inter"] == 0
        assert hdr["qform_code"] > 0 and hdr["sform_code"] > 0
        image = np.asanyarray(img.dataobj)
        assert image.dtype == np.int16 and -1024 <= image.min() and image.max() <= 3071


def test_dataset_orientation_consistent_after_reorientation(dataset):
    out, ids = dataset
    for case_id in ids[:2]:
        lab = nib.as_closest_canonical(nib.load(out / "Training" / "label" / f"label{case_id}.nii.gz"))
        label = np.asanyarray(lab.dataobj)
        assert x_centroid(label, 2) > x_centroid(label, 3)
        assert x_centroid(label, 6) > x_centroid(label, 1)


def test_dataset_deterministic(dataset, tmp_path):
    out, ids = dataset
    write_phantom_dataset(tmp_path, n_cases=1, seed=3, size=64, slices=(20, 28))
    a = np.asanyarray(nib.load(out / "Training" / "img" / "img0001.nii.gz").dataobj)
    b = np.asanyarray(nib.load(tmp_path / "Training" / "img" / "img0001.nii.gz").dataobj)
    np.testing.assert_array_equal(a, b)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        generate_case(0, -1, size=32, n_slices=8)
    with pytest.raises(ValueError):
        generate_case(0, 0, size=32, n_slices=8, orientation="LAS")


# ------------------------------------------------------------------ tumours and the KiTS19 / LiTS layouts

TUMOURS = {"count": [1, 3], "radius_mm": [10, 30], "contrast_hu": [40, 80]}


@pytest.mark.parametrize("organs", [(2, 3), (6,)], ids=["kidneys", "liver"])
def test_tumours_lie_inside_their_organ_and_leave_the_anatomy_unchanged(case0, organs):
    spec = {**TUMOURS, "organs": organs}
    lesions, sizes, signs = [], [], set()
    for index in range(6):
        plain_image, plain, _ = (case0 if index == 0 else generate_case(index, 7, size=SIZE, n_slices=SLICES))
        image, label, _ = generate_case(index, 7, size=SIZE, n_slices=SLICES, tumours=spec)
        tumour = label == TUMOUR_LABEL
        assert tumour.any()
        assert np.isin(plain[tumour], organs).all()  # grown inside the organ only
        np.testing.assert_array_equal(label[~tumour], plain[~tumour])  # the rest of the anatomy is the same
        parts, n = ndimage.label(tumour)
        lesions.append(n)
        sizes += np.bincount(parts.ravel())[1:].tolist()
        organ_hu = np.median(plain_image[tumour])
        signs.add(np.sign(np.median(image[tumour]) - organ_hu))
    assert max(lesions) >= 2, "several lesions in some cases"
    assert max(sizes) > 4 * min(sizes), "lesions of varied size"
    assert signs == {-1.0, 1.0}, "hypo- and hyperdense lesions"
    again = generate_case(3, 7, size=SIZE, n_slices=SLICES, tumours=spec)
    np.testing.assert_array_equal(again[1], generate_case(3, 7, size=SIZE, n_slices=SLICES, tumours=spec)[1])


@pytest.mark.parametrize("layout", ["kits19", "lits"])
def test_layouts_are_read_back_with_their_labels_and_orientation(tmp_path, layout):
    """KiTS19 cases are written axial axis first with KiTS19's affine; LiTS ones in LPS or RAS; both read back
    through their dataset's reader to the display orientation of the Synapse layout."""
    from hkd.data.readers import iter_cases

    ids = write_phantom_dataset(tmp_path / layout, n_cases=2, seed=3, size=64, slices=(20, 28), layout=layout,
                                tumours=TUMOURS)
    write_phantom_dataset(tmp_path / "synapse", n_cases=2, seed=3, size=64, slices=(20, 28))
    assert ids == (["00000", "00001"] if layout == "kits19" else ["000", "001"])
    if layout == "kits19":
        img = nib.load(tmp_path / layout / "case_00000" / "imaging.nii.gz")
        assert nib.aff2axcodes(img.affine) == ("I", "P", "L") and img.shape[1:] == (64, 64)
    organs = (2, 3) if layout == "kits19" else (6,)
    for case, reference in zip(iter_cases(tmp_path / layout, layout, ids),
                               iter_cases(tmp_path / "synapse", "rawdata", ["0001", "0002"])):
        assert set(np.unique(case.label)) == {0, 1, 2}
        np.testing.assert_array_equal(case.label > 0, np.isin(reference.label, organs) | (case.label == 2))
        assert case.spacing == pytest.approx(reference.spacing)
        # the same image away from the lesions (in-plane smoothing spreads a lesion over 3 voxels)
        near = ndimage.binary_dilation(case.label == 2, structure=np.ones((1, 3, 3), bool), iterations=3)
        np.testing.assert_array_equal(case.image[~near], reference.image[~near])


def test_the_registry_names_the_layouts_with_tumours_and_their_files(tmp_path):
    """The phantom writes each layout's files where the registry says (the names its reader expects)."""
    from hkd.data.sources import SOURCES, phantom_files, phantom_layouts

    assert {name for name in phantom_layouts() if SOURCES[name].phantom.tumours} == set(LAYOUT_LABELS)
    for layout in phantom_layouts():
        ids = write_phantom_dataset(tmp_path / layout, n_cases=2, seed=0, size=32, slices=(4, 4), layout=layout)
        files = [phantom_files(layout, i) for i in range(2)]
        assert ids == [case_id for case_id, _, _ in files]
        written = sorted(str(p.relative_to(tmp_path / layout)) for p in (tmp_path / layout).rglob("*.nii*"))
        assert written == sorted(path for _, image, label in files for path in (image, label)), layout


def test_tumours_need_a_layout_with_a_tumour_label(tmp_path):
    with pytest.raises(ValueError, match="data.phantom.tumours: the synapse layout has no tumour label"):
        write_phantom_dataset(tmp_path, n_cases=1, seed=0, size=32, slices=(4, 4), tumours=TUMOURS)
