# Evaluation: every trained run on the test cases, study tables and hypothesis verdicts.


rule evaluate_teacher:
    input:
        run=rules.train_teacher.output.metrics_json,
        ckpt=rules.train_teacher.output.best_pt,
        data=rules.prepare.output[0],
        code=code("evaluate"),
    output:
        LAYOUT.teacher_eval,
    log:
        LAYOUT.log("evaluate", "teacher"),
    benchmark:
        LAYOUT.benchmark("evaluate", "teacher")
    conda:
        ENV
    threads: config["train"]["threads"]
    params:
        run=lambda w, input: os.path.dirname(input.run),
        seed=config["teacher"]["seed"],
    shell:
        "hkd evaluate --run {params.run} --data {input.data} --model-name teacher --method teacher"
        " --width teacher --seed {params.seed} --threads {threads} --out {output} > {log} 2>&1"


# A student run's files, by wildcards.
STUDENT_RUN = LAYOUT.run_files(LAYOUT.student_dir("{method}", "{width}", "{seed}"))


rule evaluate_student:
    input:
        run=STUDENT_RUN["metrics_json"],
        ckpt=STUDENT_RUN["best_pt"],
        data=rules.prepare.output[0],
        code=code("evaluate"),
    output:
        LAYOUT.student_eval("{method}_w{width}_s{seed}"),
    log:
        LAYOUT.log("evaluate", "{method}_w{width}_s{seed}"),
    benchmark:
        LAYOUT.benchmark("evaluate", "{method}_w{width}_s{seed}")
    wildcard_constraints:
        method=RUNS.distilled_methods,
        width=RUNS.student_label,
        seed="[0-9]+",
    conda:
        ENV
    threads: config["train"]["threads"]
    params:
        run=lambda w, input: os.path.dirname(input.run),
    shell:
        "hkd evaluate --run {params.run} --data {input.data} --model-name {wildcards.method}_w{wildcards.width}"
        " --method {wildcards.method} --width {wildcards.width} --seed {wildcards.seed}"
        " --threads {threads} --out {output} > {log} 2>&1"


# Scratch students' evaluations, one level earlier in the job DAG (see train_scratch).
use rule evaluate_student as evaluate_scratch with:
    wildcard_constraints:
        method="scratch",
        width=RUNS.student_label,
        seed="[0-9]+",


# Chains' evaluations, a level later (see train_chain).
use rule evaluate_student as evaluate_chain with:
    wildcard_constraints:
        method=RUNS.chain_methods,
        width=RUNS.student_label,
        seed="[0-9]+",


rule tables:
    input:
        evals=RUNS.eval_files,
        external=RUNS.external_eval_files,
        code=code("tables"),
    output:
        summary=LAYOUT.table("summary"),
        summary_md=LAYOUT.table("summary", "md"),
        summary_html=report(
            LAYOUT.table("summary", "html"),
            caption="../report/summary.rst",
            category="Tables",
        ),
        organs=LAYOUT.table("organs"),
        organs_md=LAYOUT.table("organs", "md"),
        organs_html=report(
            LAYOUT.table("organs", "html"),
            caption="../report/organs.rst",
            category="Tables",
        ),
        reliability=LAYOUT.table("reliability"),
    log:
        LAYOUT.log("tables"),
    benchmark:
        LAYOUT.benchmark("tables")
    conda:
        ENV
    params:
        out_dir=lambda w, output: os.path.dirname(output.summary),
        external=external_evals,
    shell:
        "hkd tables --evals {input.evals}{params.external} --out-dir {params.out_dir} > {log} 2>&1"


rule hypotheses:
    input:
        evals=RUNS.eval_files,
        external=RUNS.external_eval_files,
        context=LAYOUT.context,
        code=code("hypotheses"),
    output:
        csv=LAYOUT.hypotheses(),
        md=LAYOUT.hypotheses("md"),
        html=report(
            LAYOUT.hypotheses("html"),
            caption="../report/hypotheses.rst",
            category="Verdicts",
        ),
    log:
        LAYOUT.log("hypotheses"),
    benchmark:
        LAYOUT.benchmark("hypotheses")
    conda:
        ENV
    params:
        seed=config["report"]["bootstrap_seed"],
        compare="".join(
            f" --compare-students {a} {b}"
            for a, b in config["report"]["compare_students"]
        ),
        external=external_evals,
    shell:
        "hkd hypotheses --evals {input.evals}{params.external} --context {input.context} --seed {params.seed}"
        "{params.compare}"
        " --out-csv {output.csv} --out-md {output.md} --out-html {output.html} > {log} 2>&1"
