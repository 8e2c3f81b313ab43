# The external cohort (data.external): cases from another scanner, generated or read from a folder, prepared
# as the study's own (every case a test case) and every trained model evaluated on them, never trained or
# tuned on them (the temperature comes from the study's own validation cases).

EXTERNAL = DATA["external"]


if STUDY.external and STUDY.external.generated:

    rule phantom_external:
        input:
            code=code("phantom"),
        output:
            directory(LAYOUT.external_phantom),
        log:
            LAYOUT.log("phantom_external"),
        benchmark:
            LAYOUT.benchmark("phantom_external")
        conda:
            ENV
        params:
            **{
                k: EXTERNAL[k]
                for k in ("cases", "seed", "slices", "spacing_xy", "slice_thickness")
            },
            size=DATA["phantom"]["size"],
            layout=DATA["phantom"]["layout"],
            scanner=as_json(EXTERNAL["scanner"]),
            tumours=(
                f"--tumours '{as_json(DATA['phantom']['tumours'])}'"
                if DATA["phantom"]["tumours"] is not None
                else ""
            ),
        shell:
            "hkd phantom --out {output} --cases {params.cases} --seed {params.seed} --size {params.size}"
            " --slices {params.slices} --spacing-xy {params.spacing_xy}"
            " --slice-thickness {params.slice_thickness} --layout {params.layout} {params.tumours}"
            " --scanner '{params.scanner}' > {log} 2>&1"


if STUDY.external:

    rule split_external:
        input:
            source=STUDY.external.source(),
            files=STUDY.external.source_files(),
            code=code("split", [sources.FORMATS[STUDY.external.format]]),
        output:
            LAYOUT.external_split,
        log:
            LAYOUT.log("split_external"),
        benchmark:
            LAYOUT.benchmark("split_external")
        conda:
            ENV
        params:
            format=STUDY.external.format,
        shell:
            "hkd split --source {input.source} --format {params.format} --preset external --out {output}"
            " > {log} 2>&1"

    rule prepare_external:
        input:
            source=STUDY.external.source(),
            files=STUDY.external.source_files(),
            split=rules.split_external.output[0],
            code=code("prepare", [sources.FORMATS[STUDY.external.format]]),
        output:
            directory(LAYOUT.external_prepared),
        log:
            LAYOUT.log("prepare_external"),
        benchmark:
            LAYOUT.benchmark("prepare_external")
        conda:
            ENV
        params:
            format=STUDY.external.format,
            prep=PREPARATION,
        shell:
            "hkd prepare --source {input.source} --format {params.format} --split {input.split}"
            " --params '{params.prep}' --out {output} --quiet > {log} 2>&1"

    rule evaluate_teacher_external:
        input:
            run=rules.train_teacher.output.metrics_json,
            ckpt=rules.train_teacher.output.best_pt,
            data=rules.prepare_external.output[0],
            fit_on=rules.prepare.output[0],
            code=code("evaluate"),
        output:
            LAYOUT.teacher_external_eval,
        log:
            LAYOUT.log("evaluate_external", "teacher"),
        benchmark:
            LAYOUT.benchmark("evaluate_external", "teacher")
        conda:
            ENV
        threads: config["train"]["threads"]
        params:
            run=lambda w, input: os.path.dirname(input.run),
            seed=config["teacher"]["seed"],
        shell:
            "hkd evaluate --run {params.run} --data {input.data} --fit-on {input.fit_on} --model-name teacher"
            " --method teacher --width teacher --seed {params.seed} --threads {threads} --out {output}"
            " > {log} 2>&1"

    rule evaluate_student_external:
        input:
            run=STUDENT_RUN["metrics_json"],
            ckpt=STUDENT_RUN["best_pt"],
            data=rules.prepare_external.output[0],
            fit_on=rules.prepare.output[0],
            code=code("evaluate"),
        output:
            LAYOUT.student_external_eval("{method}_w{width}_s{seed}"),
        log:
            LAYOUT.log("evaluate_external", "{method}_w{width}_s{seed}"),
        benchmark:
            LAYOUT.benchmark("evaluate_external", "{method}_w{width}_s{seed}")
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
            "hkd evaluate --run {params.run} --data {input.data} --fit-on {input.fit_on}"
            " --model-name {wildcards.method}_w{wildcards.width} --method {wildcards.method}"
            " --width {wildcards.width} --seed {wildcards.seed} --threads {threads} --out {output} > {log} 2>&1"

    # Scratch students' and chains' evaluations at their own levels of the job DAG (see evaluate.smk).
    use rule evaluate_student_external as evaluate_scratch_external with:
        wildcard_constraints:
            method="scratch",
            width=RUNS.student_label,
            seed="[0-9]+",

    use rule evaluate_student_external as evaluate_chain_external with:
        wildcard_constraints:
            method=RUNS.chain_methods,
            width=RUNS.student_label,
            seed="[0-9]+",
