# hkd: heterogeneous knowledge distillation study as one DAG.
# Run the embedded default with `snakemake --cores all`; other studies with --configfile.


include: "workflow/rules/configfiles.smk"


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/external.smk"
include: "workflow/rules/deploy.smk"
include: "workflow/rules/figures.smk"  # the Dice-vs-latency figure reads the cost table


report: "workflow/report/workflow.rst"


# Light steps run on the submitting host, also under a cluster profile.
localrules:
    all,
    download,
    describe_data,
    tables,
    figures,
    hypotheses,


rule all:
    default_target: True
    input:
        rules.describe_data.output,
        rules.tables.output,
        rules.hypotheses.output,
        rules.figures.output,
        rules.cost.output,
        EXPORTS,
        SEGMENTATIONS,
