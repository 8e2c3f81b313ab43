"""Study figures, each written as a PNG of a fixed pixel size (``size`` inches times ``dpi``).

The drawing functions live in the modules of this package; the figures the study draws are the modules
of :mod:`hkd.figures.study`, one per figure, listed by :mod:`hkd.figures.catalog` (their names, inputs
and captions). ``hkd figures`` (:func:`hkd.figures.make.make_study_figures`) draws every figure of the
catalog and the workflow's figures rule declares them from it. Importing this package imports nothing.
"""

