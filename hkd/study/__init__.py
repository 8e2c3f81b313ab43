"""The study a validated configuration describes, in four parts, each its own module:

* :mod:`~hkd.study.layout`: where every output goes (the one place a path under ``out`` is written);
* :mod:`~hkd.study.data_source`: the data source and what the data rules take in;
* :mod:`~hkd.study.runs`: the run table (method x student x seed, chains, cohorts) and the lists of runs
  that evaluation, figures, context and deployment read;
* :mod:`~hkd.study.recipes`: each run's training config.

:mod:`~hkd.study.scheduling` holds how training jobs are scheduled (GPU requests, a student's teacher
option). Standard library only, so that the workflow, the tests and a plain ``python`` read it without torch.
"""

from __future__ import annotations

from hkd.study.data_source import DataSource, ExternalCohort
from hkd.study.layout import Layout
from hkd.study.recipes import Recipes
from hkd.study.runs import RunTable

__all__ = ["DataSource", "ExternalCohort", "Layout", "Recipes", "RunTable", "Study"]


class Study:
    """A validated configuration ``config`` (after the schema's defaults and the config checks) as a study."""

    def __init__(self, config: dict):
        self.config = config
        self.layout = Layout(config["out"])
        self.data = DataSource(config["data"], self.layout)
        self.external = ExternalCohort(config["data"], self.layout)
        self.runs = RunTable(config, self.layout)
        self.recipes = Recipes(self.runs)
