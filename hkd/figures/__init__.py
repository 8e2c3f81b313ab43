"""Study figures, each written as a PNG of a fixed pixel size (``size`` inches times ``dpi``).

The drawing functions live in the modules of this package; the figures the study draws are the modules
of :mod:`hkd.figures.study`, one per figure, listed by :mod:`hkd.figures.catalog` (their names, inputs
and captions). ``hkd figures`` (:func:`hkd.figures.make.make_study_figures`) draws every figure of the
catalog and the workflow's figures rule declares them from it. Importing this package imports nothing
(the workflow imports it while it parses the configuration; :data:`FIGURES` reads the catalog when asked).
"""

from __future__ import annotations


def __getattr__(name: str):
    """:data:`FIGURES`: the catalog of study figures, read when asked for (:func:`hkd.figures.catalog.read_catalog`)."""
    if name == "FIGURES":
        from hkd.figures.catalog import read_catalog

        return read_catalog()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
