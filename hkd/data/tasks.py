"""Segmentation tasks: which classes a study segments and which training slices it keeps.

- ``organs``: the classes of ``data.classes`` (TransUNet's 8 organs by default), every slice.
- ``organ+tumour``: [background, <organ>, tumour] (HLFD's 3-class KiTS19 and LiTS setting), every slice.
- ``tumour``: [background, tumour], trained on the slices whose ground truth shows a tumour only (HLFD's
  tumour task); validation and test cases are evaluated whole.
"""

from __future__ import annotations

from hkd.errors import DataError

TUMOUR = "tumour"
# The label of pixels nobody annotated (outside a rotated training slice's support): no segmentation loss
# or distillation term counts them, and no class is invented for them.
IGNORE = 255
TASKS = {"organs": None, "organ+tumour": 3, "tumour": 2}  # task -> number of classes it needs


def check_task(task: str, classes: list[str]) -> None:
    """Raise DataError naming the key when ``classes`` do not fit ``task``."""
    if task not in TASKS:
        raise DataError(f"data.task: unknown task '{task}'; known: {', '.join(TASKS)}")
    n = TASKS[task]
    if n is not None and (len(classes) != n or classes[-1] != TUMOUR):
        want = "[background, <organ>, tumour]" if n == 3 else "[background, tumour]"
        raise DataError(f"data.classes: task '{task}' needs the classes {want}, got {list(classes)}")
