# Config files read strictly, before Snakemake reads the default one: a YAML error or a key given twice
# names the file and line (hkd/configfile.py). A YAML error in a --configfile is Snakemake's to report: it
# reads those before this workflow's code runs.
import os
import sys

from snakemake.exceptions import WorkflowError

sys.path.insert(0, workflow.basedir)

from hkd.config_checks import command_line_overrides
from hkd.configfile import ConfigFileError, load_config_file

try:
    if os.path.exists("config.yaml"):
        load_config_file("config.yaml")
    # What --configfile and --config set, each model spec whole from the last that sets it: applied to the
    # config in common.smk, over Snakemake's key-by-key merge.
    CONFIG_OVERRIDES = command_line_overrides(
        workflow.config_settings.configfiles, workflow.config_settings.config
    )
except ConfigFileError as exc:
    raise WorkflowError(str(exc)) from None
