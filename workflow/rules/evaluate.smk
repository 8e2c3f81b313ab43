# Evaluation: every trained run on the test cases, study tables and hypothesis verdicts.


rule evaluate_teacher:
    input:
        run=rules.train_teacher.output.metrics_json,
        ckpt=rules.train_teacher.output.best_pt,
        data=rules.prepare.output[0],
        code=code("evaluate"),
    output:
        f"{OUT}/eval/teacher.csv",
    log:
        f"{OUT}/logs/evaluate/teacher.log",
    benchmark:
        f"{OUT}/benchmarks/evaluate/teacher.tsv"
    conda:
        ENV
    threads: config["train"]["threads"]
    params:
        run=lambda w, input: os.path.dirname(input.run),
        seed=config["teacher"]["seed"],
    shell:
        "hkd evaluate --run {params.run} --data {input.data} --model-name teacher --method teacher"
        " --width teacher --seed {params.seed} --threads {threads} --out {output} > {log} 2>&1"


rule evaluate_student:
    input:
        run=f"{STUDY.student_dir}/metrics.json",
        ckpt=f"{STUDY.student_dir}/best.pt",
        data=rules.prepare.output[0],
        code=code("evaluate"),
    output:
        f"{OUT}/eval/students/{{method}}_w{{width}}_s{{seed}}.csv",
    log:
        f"{OUT}/logs/evaluate/{{method}}_w{{width}}_s{{seed}}.log",
    benchmark:
        f"{OUT}/benchmarks/evaluate/{{method}}_w{{width}}_s{{seed}}.tsv"
    wildcard_constraints:
        method=STUDY.distilled_methods,
        width=STUDY.student_label,
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
        width=STUDY.student_label,
        seed="[0-9]+",


# Chains' evaluations, a level later (see train_chain).
use rule evaluate_student as evaluate_chain with:
    wildcard_constraints:
        method=STUDY.chain_methods,
        width=STUDY.student_label,
        seed="[0-9]+",


rule tables:
    input:
        evals=STUDY.eval_files,
        code=code("tables"),
    output:
        summary=f"{OUT}/tables/summary.csv",
        summary_md=f"{OUT}/tables/summary.md",
        summary_html=report(
            f"{OUT}/tables/summary.html",
            caption="../report/summary.rst",
            category="Tables",
        ),
        organs=f"{OUT}/tables/organs.csv",
        organs_md=f"{OUT}/tables/organs.md",
        organs_html=report(
            f"{OUT}/tables/organs.html",
            caption="../report/organs.rst",
            category="Tables",
        ),
    log:
        f"{OUT}/logs/tables.log",
    benchmark:
        f"{OUT}/benchmarks/tables.tsv"
    conda:
        ENV
    params:
        out_dir=lambda w, output: os.path.dirname(output.summary),
    shell:
        "hkd tables --evals {input.evals} --out-dir {params.out_dir} > {log} 2>&1"


rule hypotheses:
    input:
        evals=STUDY.eval_files,
        context=f"{OUT}/context.csv",
        code=code("hypotheses"),
    output:
        csv=f"{OUT}/hypotheses.csv",
        md=f"{OUT}/hypotheses.md",
        html=report(
            f"{OUT}/hypotheses.html",
            caption="../report/hypotheses.rst",
            category="Verdicts",
        ),
    log:
        f"{OUT}/logs/hypotheses.log",
    benchmark:
        f"{OUT}/benchmarks/hypotheses.tsv"
    conda:
        ENV
    params:
        seed=config["report"]["bootstrap_seed"],
        compare="".join(
            f" --compare-students {a} {b}"
            for a, b in config["report"]["compare_students"]
        ),
    shell:
        "hkd hypotheses --evals {input.evals} --context {input.context} --seed {params.seed}{params.compare}"
        " --out-csv {output.csv} --out-md {output.md} --out-html {output.html} > {log} 2>&1"
