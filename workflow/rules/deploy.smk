# The trained models as deliverables: what each costs to run, the chosen students exported as ONNX, and
# the user's own scans segmented (deploy.scans).

DEPLOY = config["deploy"]
# Per student width, the runs among which export and predict choose (RUNS.width_runs); the cost of an
# architecture does not depend on its weights, so one run per width is measured (RUNS.cost_models).


rule cost:
    input:
        ckpts=list(RUNS.cost_models.values()),
        data=rules.prepare.output[0],
        code=code("cost"),
    output:
        csv=LAYOUT.table("cost"),
        md=LAYOUT.table("cost", "md"),
        html=report(
            LAYOUT.table("cost", "html"),
            caption="../report/cost.rst",
            category="Tables",
        ),
    log:
        LAYOUT.log("cost"),
    benchmark:
        LAYOUT.benchmark("cost")
    conda:
        ENV
    # the measurements run one at a time with `cost_threads` threads; nothing else of this job runs then
    threads: DEPLOY["cost_threads"]
    params:
        models=" ".join(f"{name}={path}" for name, path in RUNS.cost_models.items()),
        runs=DEPLOY["cost_runs"],
    shell:
        "hkd cost --models {params.models} --data {input.data} --threads {threads} --runs {params.runs}"
        " --out-csv {output.csv} --out-md {output.md}"
        " --out-html {output.html} > {log} 2>&1"


rule export_student:
    input:
        ckpts=lambda w: RUNS.width_runs[w.width],
        metrics=lambda w: [
            LAYOUT.run_files(os.path.dirname(c))["metrics_json"]
            for c in RUNS.width_runs[w.width]
        ],
        # every width's export after the chains' students (students.chains), so that the report's rule
        # graph draws the rule once, at one level; not read by the job
        chains=RUNS.chain_runs,
        data=rules.prepare.output[0],
        code=code("export"),
    output:
        onnx=LAYOUT.export("{width}"),
        report=LAYOUT.export("{width}", "json"),
    log:
        LAYOUT.log("export", "student_w{width}"),
    benchmark:
        LAYOUT.benchmark("export", "student_w{width}")
    wildcard_constraints:
        width=RUNS.student_label,
    conda:
        ENV
    threads: 1
    shell:
        "hkd export --model {input.ckpts} --format onnx --data {input.data} --out {output.onnx}"
        " --report {output.report} > {log} 2>&1"


# Each width's exported student, when deploy.export or deploy.scans asks for it.
EXPORTS = RUNS.exports


rule segment_scan:
    input:
        model=lambda w: RUNS.scan_models[w.model],
        scan=lambda w: RUNS.scans[w.case],
        code=code("predict"),
    output:
        segmentation=LAYOUT.segmentation("{model}", "{case}"),
        statistics=LAYOUT.segmentation("{model}", "{case}", "json"),
    log:
        LAYOUT.log("segment", "{model}/{case}"),
    benchmark:
        LAYOUT.benchmark("segment", "{model}/{case}")
    wildcard_constraints:
        model="|".join(re.escape(m) for m in RUNS.scan_models),
        case="|".join(re.escape(c) for c in RUNS.scans) or "(?!)",
    conda:
        ENV
    threads: config["train"]["threads"]
    shell:
        "hkd predict --model {input.model} --input {input.scan} --out {output.segmentation}"
        " --threads {threads} --quiet > {log} 2>&1"


# The user's scans segmented by the teacher and each exported student (deploy.scans), one job per scan and
# model: a bad scan fails only its own job (the profiles keep going), earlier results stay.
SEGMENTATIONS = RUNS.segmentations
