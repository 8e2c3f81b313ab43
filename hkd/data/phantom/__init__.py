"""Synthetic contrast-enhanced abdominal CT phantom with BTCV organ labels.

The phantom is the workflow's default data source. Every case is drawn from a random but plausible
anatomy: an elliptic body with skin, subcutaneous fat and a muscle wall, a spine with discs, ribs,
paraspinal and psoas muscles, lung bases, bowel and colon clutter, unlabelled mesenteric and iliac
vessels, and the 13 BTCV organs as smooth, randomly warped shapes at plausible positions and HU.

Anatomy lives in a reference patient space (millimetres, RAS+: +x patient right, +y anterior, +z
superior) sized for an adult in a 400 mm field of view and a 300 mm abdominal scan length. In-plane
it is scaled to the case's field of view (size x spacing), as a scanner's reconstruction field is
fitted to the patient, and axially to the scanned length (slices x thickness), so that every grid
shows a complete abdomen. The 4x4 affine carries the true voxel spacing.

The two kidneys (and the two adrenals) share one appearance and one shape distribution, mirrored
about the midline: only their side of the body tells them apart. Liver and spleen have close HU.
Even case indices are stored in LPS voxel order, odd ones in RAS; the anatomy in world space does
not depend on the order.

Tumours (optional) are lesions inside the kidneys or the liver: one or several per case, smooth
ellipsoids of varied size, each hypo- or hyperdense against its organ, labelled :data:`TUMOUR_LABEL`.
They are drawn from their own random stream, so a case's anatomy is the same with or without them.
The dataset writer stores cases in the Synapse RawData layout, or in the KiTS19 (kidney tumours,
axial axis first with KiTS19's affine) or LiTS (liver tumours) layout with those datasets' labels,
under the file names the source registry gives each layout (:func:`hkd.data.sources.phantom_files`).

The package in three parts: :mod:`~hkd.data.phantom.shapes` (fields, primitives, the canvas),
:mod:`~hkd.data.phantom.anatomy` (a case) and :mod:`~hkd.data.phantom.writers` (a dataset in a layout).
"""

from hkd.data.phantom.anatomy import LABEL_NAMES, TUMOUR_DEFAULTS, TUMOUR_LABEL, generate_case, orientation_for
from hkd.data.phantom.writers import LAYOUT_LABELS, case_geometry, kits19_affine, to_kits19, write_phantom_dataset

__all__ = ["LABEL_NAMES", "LAYOUT_LABELS", "TUMOUR_DEFAULTS", "TUMOUR_LABEL", "case_geometry", "generate_case",
           "kits19_affine", "orientation_for", "to_kits19", "write_phantom_dataset"]
