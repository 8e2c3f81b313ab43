# Qualitative evidence and summary figures, all shown in the report.


rule figures:
    input:
        data=rules.prepare.output[0],
        ckpts=[f"{d}/best.pt" for d in FIGURE_MODELS.values()],
        logs=[f"{d}/log.csv" for d in FIGURE_MODELS.values()],
        summary=rules.tables.output.summary,
        code=FIGURE_CODE,
    output:
        **{
            name: report(
                f"{OUT}/figures/{name}.png",
                caption=f"../report/{name}.rst",
                category="Figures",
            )
            for name in FIGURES
        },
        context=report(
            f"{OUT}/figures/context.csv",
            caption="../report/context.rst",
            category="Figures",
        ),
    log:
        f"{OUT}/logs/figures.log",
    benchmark:
        f"{OUT}/benchmarks/figures.tsv"
    conda:
        ENV
    threads: config["train"]["threads"]
    params:
        models=" ".join(f"{name}={d}" for name, d in FIGURE_MODELS.items()),
        slices=as_json(config["report"]["slices"]),
        n_slices=config["report"]["n_slices"],
        dilation=config["report"]["context_dilation"],
        out_dir=lambda w, output: os.path.dirname(output.context),
    shell:
        "hkd figures --data {input.data} --models {params.models} --summary {input.summary}"
        " --slices '{params.slices}' --n-slices {params.n_slices} --dilation {params.dilation}"
        " --threads {threads} --out-dir {params.out_dir} > {log} 2>&1"
