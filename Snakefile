# hkd: heterogeneous knowledge distillation study as one DAG.
# Run the embedded default with `snakemake --cores all`; other studies with --configfile.


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"


rule all:
    default_target: True
    input:
        rules.train_teacher.output.metrics_json,
        STUDENT_RUNS,
