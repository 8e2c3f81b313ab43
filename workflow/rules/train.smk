# Training: the teacher, then every student (method x width x seed). Every value a run depends on
# reaches it through params (the JSON training config), so changing one reruns exactly that run.


rule train_teacher:
    input:
        data=rules.prepare.output[0],
        code=method_code("train", ["scratch"]),  # the teacher learns from the labels alone
    output:
        **LAYOUT.run_files(LAYOUT.teacher_dir),
    log:
        LAYOUT.log("train_teacher"),
    benchmark:
        LAYOUT.benchmark("train_teacher")
    conda:
        ENV
    threads: config["train"]["threads"]
    resources:
        **GPU.resources(),
        **TRACKING,
        jobs_per_gpu=config["jobs_per_gpu"],  # scheduling only: a resource, so changing it reruns nothing
        mem_mb=config["teacher"]["resources"]["mem_mb"],
        runtime=config["teacher"]["resources"]["runtime"],
    params:
        cfg=as_json(RECIPES.teacher_config()),
        out=lambda w, output: os.path.dirname(output.metrics_json),
        work=LAYOUT.work(),
    shell:
        "hkd train --data {input.data} --params '{params.cfg}' --out {params.out}"
        " --work {params.work} --threads {threads} --jobs-per-gpu {resources.jobs_per_gpu} --quiet"
        f" {TRACKING_ARGS} --run-name teacher > {{log}} 2>&1"


rule teacher_cache:
    input:
        teacher=rules.train_teacher.output.best_pt,
        data=rules.prepare.output[0],
        code=lambda w: method_code("teacher-cache", [w.method]),
    output:
        LAYOUT.teacher_cache("{method}"),
    log:
        LAYOUT.log("teacher_cache", "{method}"),
    benchmark:
        LAYOUT.benchmark("teacher_cache", "{method}")
    wildcard_constraints:
        method="[a-z0-9_]+",
    conda:
        ENV
    threads: config["train"]["threads"]
    resources:
        **GPU.resources(),
        mem_mb=config["teacher"]["resources"]["mem_mb"],
        runtime=config["teacher"]["resources"]["runtime"],
    params:
        options=lambda w: as_json(config["distill"].get(w.method, {})),
        device=config["device"],
    shell:
        "hkd teacher-cache --teacher {input.teacher} --data {input.data} --method {wildcards.method}"
        " --options '{params.options}' --device {params.device} --threads {threads}"
        " --out {output} > {log} 2>&1"


if not config["students"]["lockstep"]:

    rule train_student:
        input:
            data=rules.prepare.output[0],
            teacher=lambda w: RUNS.teacher_input(w.method, w.seed),
            code=lambda w: method_code("train", [w.method]),
        output:
            **LAYOUT.run_files(LAYOUT.student_dir("{method}", "{width}", "{seed}")),
        log:
            LAYOUT.log("train_student", "{method}_w{width}_s{seed}"),
        benchmark:
            LAYOUT.benchmark("train_student", "{method}_w{width}_s{seed}")
        wildcard_constraints:
            method=RUNS.distilled_methods,
            width=RUNS.student_label,
            seed="[0-9]+",
        conda:
            ENV
        threads: config["train"]["threads"]
        resources:
            **GPU.resources(bundled=True),  # the SLURM profile bundles students
            **TRACKING,
            jobs_per_gpu=config["jobs_per_gpu"],
            mem_mb=config["students"]["resources"]["mem_mb"],
            runtime=config["students"]["resources"]["runtime"],
        params:
            cfg=lambda w: as_json(RECIPES.student_config(w.width, w.seed, w.method)),
            out=lambda w, output: os.path.dirname(output.metrics_json),
            work=LAYOUT.work("{method}", "{width}", "{seed}"),
            teacher=lambda w, input: teacher_argument(input.teacher),
        shell:
            "hkd train --data {input.data} --params '{params.cfg}' --out {params.out}"
            " --work {params.work} {params.teacher} --threads {threads}"
            " --jobs-per-gpu {resources.jobs_per_gpu} --quiet"
            f" {TRACKING_ARGS} --run-name {{wildcards.method}}_w{{wildcards.width}}_s{{wildcards.seed}}"
            " > {log} 2>&1"

    # Scratch students need no teacher: their own rule, so that in the report's rule graph (one node per
    # rule and level of the job DAG) they do not show train_student a second time, a level earlier.
    use rule train_student as train_scratch with:
        wildcard_constraints:
            method="scratch",
            width=RUNS.student_label,
            seed="[0-9]+",

    # Chains' students (students.chains) wait for their assistant, a student: their own rule, for the same
    # reason (a chain of chains shows it once per level).
    use rule train_student as train_chain with:
        wildcard_constraints:
            method=RUNS.chain_methods,
            width=RUNS.student_label,
            seed="[0-9]+",

else:

    # Lock-step: the students of one seed train in one job, one teacher pass per batch for all of them
    # (hkd/train/lockstep.py). The job keeps each student's run in its store (<out>/cohorts/s<seed>/) and
    # retrains only those whose configuration, data, teacher or code changed; the others are copied out
    # again unchanged (their evaluations rerun).
    rule train_cohort:
        input:
            data=rules.prepare.output[0],
            teacher=rules.train_teacher.output.best_pt,
            code=method_code("train-cohort", RUNS.methods),
        output:
            manifest=LAYOUT.cohort_manifest("{seed}"),
            runs=[
                path
                for method in RUNS.methods
                for width in RUNS.students
                for path in LAYOUT.run_files(
                    LAYOUT.student_dir(method, width, "{seed}")
                ).values()
            ],
        log:
            LAYOUT.log("train_cohort", "s{seed}"),
        benchmark:
            LAYOUT.benchmark("train_cohort", "s{seed}")
        wildcard_constraints:
            seed="[0-9]+",
        conda:
            ENV
        threads: config["train"]["threads"]
        resources:
            **GPU.resources(),
            **TRACKING,
            jobs_per_gpu=config["jobs_per_gpu"],
            mem_mb=config["students"]["resources"]["mem_mb"],
            runtime=config["students"]["resources"]["runtime"]
            * len(config["students"]["methods"])
            * len(RUNS.students),
        params:
            members=lambda w: as_json(RECIPES.cohort_members(w.seed)),
            publish=lambda w: as_json(RUNS.cohort_folders(w.seed)),
            root=LAYOUT.cohort("{seed}"),
        shell:
            "hkd train-cohort --data {input.data} --members '{params.members}' --root {params.root}"
            " --teacher {input.teacher} --publish '{params.publish}' --manifest {output.manifest}"
            " --threads {threads} --jobs-per-gpu {resources.jobs_per_gpu} --quiet"
            f" {TRACKING_ARGS} > {{log}} 2>&1"
