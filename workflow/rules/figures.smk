# Qualitative evidence and summary figures, all shown in the report.
from hkd.figures.catalog import check_captions, read_catalog
from hkd.figures.study_description import describe_study

# The study's figures: the modules of this checkout's hkd/figures/study/, each with its caption file in
# workflow/report/ (hkd/figures/catalog.py). Read without importing them (no torch at parse time).
try:
    STUDY_FIGURES = read_catalog(
        os.path.join(workflow.basedir, "hkd", "figures", "study")
    )
    check_captions(STUDY_FIGURES, os.path.join(workflow.basedir, "workflow", "report"))
except ValueError as exc:
    raise WorkflowError(str(exc)) from None


rule figures:
    input:
        data=rules.prepare.output[0],
        ckpts=[run["checkpoint"] for run in RUNS.figure_runs if "checkpoint" in run],
        logs=[run["log"] for run in RUNS.figure_runs],
        summary=rules.tables.output.summary,
        cost=rules.cost.output.csv,
        reliability=rules.tables.output.reliability,
        split=rules.split.output[0],
        hypotheses=rules.hypotheses.output.csv,
        code=sorted(set(code("figures") + code("overview"))),
    output:
        **{
            figure.name: report(
                LAYOUT.figure(figure.file),
                caption=f"../report/{figure.caption}",
                category="Figures",
            )
            for figure in STUDY_FIGURES
        },
        # the report's first page (workflow/report/workflow.rst includes it)
        overview=report(
            LAYOUT.overview,
            caption="../report/overview.rst",
            category="Overview",
        ),
    log:
        LAYOUT.log("figures"),
    benchmark:
        LAYOUT.benchmark("figures")
    conda:
        ENV
    threads: config["train"]["threads"]
    params:
        runs=as_json(RUNS.figure_runs),
        slices=as_json(config["report"]["slices"]),
        n_slices=config["report"]["n_slices"],
        out_dir=lambda w, output: os.path.dirname(output[0]),  # the folder of the figures (listed first)
        run=as_json(describe_study(config)),
        full_table=rules.hypotheses.output.html,
    shell:
        "hkd figures --data {input.data} --runs '{params.runs}' --summary {input.summary} --cost {input.cost}"
        " --reliability {input.reliability}"
        " --slices '{params.slices}' --n-slices {params.n_slices}"
        " --threads {threads} --out-dir {params.out_dir} > {log} 2>&1"
        " && hkd overview --run '{params.run}' --split {input.split} --summary {input.summary}"
        " --hypotheses {input.hypotheses} --full-table {params.full_table} --figure {output.dice_vs_params}"
        " --out {output.overview} >> {log} 2>&1"


rule context:
    input:
        data=rules.prepare.output[0],
        ckpts=[run["checkpoint"] for run in RUNS.context_runs],
        code=code("context"),
    output:
        LAYOUT.context,
    log:
        LAYOUT.log("context"),
    benchmark:
        LAYOUT.benchmark("context")
    conda:
        ENV
    threads: config["train"]["threads"]
    params:
        runs=as_json(RUNS.context_runs),
        n_slices=config["report"]["context_slices"],
        dilation=config["report"]["context_dilation"],
        seed=config["report"]["bootstrap_seed"],
    shell:
        "hkd context --data {input.data} --runs '{params.runs}' --n-slices {params.n_slices}"
        " --dilation {params.dilation} --seed {params.seed} --threads {threads} --out {output} > {log} 2>&1"
