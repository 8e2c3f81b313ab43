# hkd: heterogeneous knowledge distillation study as one DAG.
# Run the embedded default with `snakemake --cores all`; other studies with --configfile.


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"


rule all:
    input:
        f"{OUT}/data/prepared",
    default_target: True
