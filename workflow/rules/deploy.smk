# The trained models as deliverables: what each costs to run, the chosen students exported as ONNX, and
# the user's own scans segmented (deploy.scans).

DEPLOY = config["deploy"]
# Per student width, the runs among which export and predict choose (STUDY.width_runs); the cost of an
# architecture does not depend on its weights, so one run per width is measured (STUDY.cost_models).


rule cost:
    input:
        ckpts=list(STUDY.cost_models.values()),
        data=rules.prepare.output[0],
        code=code("cost"),
    output:
        csv=f"{OUT}/tables/cost.csv",
        md=f"{OUT}/tables/cost.md",
        html=report(
            f"{OUT}/tables/cost.html",
            caption="../report/cost.rst",
            category="Tables",
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
        models=" ".join(f"{name}={path}" for name, path in STUDY.cost_models.items()),
        runs=DEPLOY["cost_runs"],
    shell:
        "hkd cost --models {params.models} --data {input.data} --threads {threads} --runs {params.runs}"
        " --out-csv {output.csv} --out-md {output.md}"
        " --out-html {output.html} > {log} 2>&1"


rule export_student:
    input:
        ckpts=lambda w: STUDY.width_runs[w.width],
        metrics=lambda w: [
            os.path.join(os.path.dirname(c), "metrics.json")
            for c in STUDY.width_runs[w.width]
        ],
        # every width's export after the chains' students (students.chains), so that the report's rule
        # graph draws the rule once, at one level; not read by the job
        chains=STUDY.chain_runs,
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
        width=STUDY.student_label,
    conda:
        ENV
    threads: 1
    shell:
        "hkd export --model {input.ckpts} --format onnx --data {input.data} --out {output.onnx}"
        " --report {output.report} > {log} 2>&1"


# Each width's exported student, when deploy.export or deploy.scans asks for it.
EXPORTS = STUDY.exports


rule segment_scan:
    input:
        model=lambda w: STUDY.scan_models[w.model],
        scan=lambda w: STUDY.scans[w.case],
        code=code("predict"),
    output:
        segmentation=f"{OUT}/segmentations/{{model}}/{{case}}.nii.gz",
        statistics=f"{OUT}/segmentations/{{model}}/{{case}}.json",
    log:
        f"{OUT}/logs/segment/{{model}}/{{case}}.log",
    benchmark:
        f"{OUT}/benchmarks/segment/{{model}}/{{case}}.tsv"
    wildcard_constraints:
        model="|".join(re.escape(m) for m in STUDY.scan_models),
        case="|".join(re.escape(c) for c in STUDY.scans) or "(?!)",
    conda:
        ENV
    threads: config["train"]["threads"]
    shell:
        "hkd predict --model {input.model} --input {input.scan} --out {output.segmentation}"
        " --threads {threads} --quiet > {log} 2>&1"


# The user's scans segmented by the teacher and each exported student (deploy.scans), one job per scan and
# model: a bad scan fails only its own job (the profiles keep going), earlier results stay.
SEGMENTATIONS = STUDY.segmentations
