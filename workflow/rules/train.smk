# Training: the teacher, then every student (method x width x seed). Every value a run depends on
# reaches it through params (the JSON training config), so changing one reruns exactly that run.

TRAIN_CODE = code(
    "train/trainer.py",
    "train/losses.py",
    "train/augment.py",
    "data/dataset.py",
    "devices.py",
    "io.py",
    "models/__init__.py",
    "distill/__init__.py",
    "distill/base.py",
)
USES_GPU = config["device"] == "auto" or config["device"].startswith("cuda")
TEACHER_DIR = f"{OUT}/models/teacher"
STUDENT_DIR = f"{OUT}/models/students/{{method}}/w{{width}}/s{{seed}}"
RUN_FILES = ("best.pt", "last.pt", "log.csv", "metrics.json")


def train_config(section, model, seed, method="scratch"):
    """The JSON training config of one run: shared recipe, section overrides, model, method, seed."""
    recipe = {**config["train"], **config[section]["train"]}
    recipe.pop("threads")
    return {
        **recipe,
        "model": model,
        "seed": int(seed),
        "device": config["device"],
        "method": method,
        "method_options": config["distill"].get(method, {}),
        "teacher": config["teacher"]["model"] if method != "scratch" else None,
    }


def student_model(width):
    return {"arch": config["students"]["arch"], "width": width}


def run_outputs(folder):
    return {name.replace(".", "_"): f"{folder}/{name}" for name in RUN_FILES}


rule train_teacher:
    output:
        **run_outputs(TEACHER_DIR),
    input:
        data=rules.prepare.output[0],
        code=TRAIN_CODE + code("models/transunet.py", "distill/scratch.py"),
    params:
        cfg=as_json(
            train_config("teacher", config["teacher"]["model"], config["teacher"]["seed"])
        ),
        out=TEACHER_DIR,
        work=f"{OUT}/work/teacher",
    threads: config["train"]["threads"]
    resources:
        gpu=int(USES_GPU),
        mem_mb=config["teacher"]["resources"]["mem_mb"],
        runtime=config["teacher"]["resources"]["runtime"],
    log:
        f"{OUT}/logs/train_teacher.log",
    benchmark:
        f"{OUT}/benchmarks/train_teacher.tsv"
    conda:
        ENV
    shell:
        "hkd train --data {input.data} --params '{params.cfg}' --out {params.out}"
        " --work {params.work} --threads {threads} --quiet > {log} 2>&1"


rule train_student:
    output:
        **run_outputs(STUDENT_DIR),
    input:
        data=rules.prepare.output[0],
        teacher=lambda w: [] if w.method == "scratch" else rules.train_teacher.output.best_pt,
        code=lambda w: TRAIN_CODE
        + code("models/squeezeunet.py", f"distill/{w.method}.py", "distill/functional.py")
        + ([] if w.method == "scratch" else code("models/transunet.py")),
    params:
        cfg=lambda w: as_json(
            train_config("students", student_model(w.width), w.seed, w.method)
        ),
        out=STUDENT_DIR,
        work=f"{OUT}/work/students/{{method}}/w{{width}}/s{{seed}}",
        teacher=lambda w, input: f"--teacher {input.teacher}" if input.teacher else "",
    wildcard_constraints:
        method="[a-z0-9_]+",
        width="[0-9.]+M?",
        seed="[0-9]+",
    threads: config["train"]["threads"]
    resources:
        gpu=int(USES_GPU),
        mem_mb=config["students"]["resources"]["mem_mb"],
        runtime=config["students"]["resources"]["runtime"],
    log:
        f"{OUT}/logs/train_student/{{method}}_w{{width}}_s{{seed}}.log",
    benchmark:
        f"{OUT}/benchmarks/train_student/{{method}}_w{{width}}_s{{seed}}.tsv"
    conda:
        ENV
    shell:
        "hkd train --data {input.data} --params '{params.cfg}' --out {params.out}"
        " --work {params.work} {params.teacher} --threads {threads} --quiet > {log} 2>&1"


STUDENT_RUNS = expand(
    f"{STUDENT_DIR}/metrics.json",
    method=config["students"]["methods"],
    width=config["students"]["widths"],
    seed=config["students"]["seeds"],
)
