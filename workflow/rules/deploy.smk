# The trained models as deliverables: what each costs to run, the chosen students exported as ONNX, and
# the user's own scans segmented (deploy.scans).

DEPLOY = config["deploy"]
# Per student width, the runs among which export and predict choose: every method and seed at that width
# (chosen by validation Dice when the job runs, never by test Dice).
WIDTH_RUNS = {
    width: [f"{run['dir']}/best.pt" for run in RUNS if str(run["width"]) == str(width)]
    for width in STUDENTS
}
# The cost of an architecture does not depend on its weights: one run per width is measured.
COST_MODELS = {"teacher": f"{TEACHER_DIR}/best.pt"} | {
    width: runs[0] for width, runs in WIDTH_RUNS.items() if runs
}


rule cost:
    input:
        ckpts=list(COST_MODELS.values()),
        data=rules.prepare.output[0],
        summary=rules.tables.output.summary,
        code=code("cost"),
    output:
        csv=f"{OUT}/tables/cost.csv",
        md=f"{OUT}/tables/cost.md",
        html=report(
            f"{OUT}/tables/cost.html",
            caption="../report/cost.rst",
            category="Tables",
        ),
        figure=report(
            f"{OUT}/figures/dice_vs_cost.png",
            caption="../report/dice_vs_cost.rst",
            category="Figures",
        ),
    log:
        f"{OUT}/logs/cost.log",
    benchmark:
        f"{OUT}/benchmarks/cost.tsv"
    conda:
        ENV
    # the measurements run one at a time with `cost_threads` threads; nothing else of this job runs then
    threads: DEPLOY["cost_threads"]
    params:
        models=" ".join(f"{name}={path}" for name, path in COST_MODELS.items()),
        runs=DEPLOY["cost_runs"],
    shell:
        "hkd cost --models {params.models} --data {input.data} --threads {threads} --runs {params.runs}"
        " --summary {input.summary} --figure {output.figure} --out-csv {output.csv} --out-md {output.md}"
        " --out-html {output.html} > {log} 2>&1"


rule export_student:
    input:
        ckpts=lambda w: WIDTH_RUNS[w.width],
        metrics=lambda w: [
            os.path.join(os.path.dirname(c), "metrics.json")
            for c in WIDTH_RUNS[w.width]
        ],
        data=rules.prepare.output[0],
        code=code("export"),
    output:
        onnx=f"{OUT}/deploy/student_w{{width}}.onnx",
        report=f"{OUT}/deploy/student_w{{width}}.json",
    log:
        f"{OUT}/logs/export/student_w{{width}}.log",
    benchmark:
        f"{OUT}/benchmarks/export/student_w{{width}}.tsv"
    wildcard_constraints:
        width=STUDENT_LABEL,
    conda:
        ENV
    threads: 1
    shell:
        "hkd export --model {input.ckpts} --format onnx --data {input.data} --out {output.onnx}"
        " --report {output.report} > {log} 2>&1"


EXPORTS = (
    [f"{OUT}/deploy/student_w{width}.onnx" for width in STUDENTS if WIDTH_RUNS[width]]
    if DEPLOY["export"] or DEPLOY["scans"]
    else []
)
# The models that segment the user's scans: the teacher and each width's exported student.
SCAN_MODELS = {"teacher": f"{TEACHER_DIR}/best.pt"} | {
    f"student_w{width}": f"{OUT}/deploy/student_w{width}.onnx"
    for width in STUDENTS
    if WIDTH_RUNS[width]
}


rule segment_scans:
    input:
        model=lambda w: SCAN_MODELS[w.model],
        scans=DEPLOY["scans"] or [],
        code=code("predict"),
    output:
        directory(f"{OUT}/segmentations/{{model}}"),
    log:
        f"{OUT}/logs/segment/{{model}}.log",
    benchmark:
        f"{OUT}/benchmarks/segment/{{model}}.tsv"
    wildcard_constraints:
        model="|".join(re.escape(m) for m in SCAN_MODELS),
    conda:
        ENV
    threads: config["train"]["threads"]
    shell:
        "hkd predict --model {input.model} --input {input.scans} --out {output}"
        " --threads {threads} --quiet > {log} 2>&1"


SEGMENTATIONS = (
    [f"{OUT}/segmentations/{model}" for model in SCAN_MODELS] if DEPLOY["scans"] else []
)
