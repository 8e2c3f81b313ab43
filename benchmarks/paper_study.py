"""Wall time of the paper-scale study on this machine, extrapolated from timed steps of each kind of job.

Times the trainer's own step (``Run.train_step``: augmentation, teacher targets, losses, update) at the
paper's size (224 px, ``workflow/configs/synapse-paper.yaml``'s batch size, precision ``auto``) on
synthetic slices, for: the TransUNet R50-ViT-B/16 teacher; per SqueezeUNet preset, a scratch student and
a distilled student (``logits``, teacher online on the augmented batch, the cost every distilled method
pays); and evaluation (inference per slice). Then extrapolates one epoch (the paper's training slices /
batch steps, plus a validation pass) and the whole study: 1 teacher, 4 widths x 3 seeds scratch,
4 widths x 7 methods x 3 seeds distilled, one evaluation per run, with ``--jobs-per-device`` jobs sharing
the device. Prints samples/s, achieved TFLOP/s (``torch.utils.flop_counter``) and its share of this
device's measured matrix-multiply rate in the same precision.

With ``students.lockstep`` (the paper config), the students of a seed train as one cohort with one
teacher pass per batch; the lock-step plan is printed too, with runtimes for the cohort jobs.

    python benchmarks/paper_study.py [--steps 3] [--threads 2] [--batch 4]   # CPU: a smaller batch
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import tempfile
import time
from pathlib import Path

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
TRAIN_SLICES, VAL_SLICES, TEST_SLICES = 2211, 737, 737  # 60/20/20 of the 3,685 slices of the 30 cases


def peak_tflops(device: torch.device, bf16: bool, n: int | None = None) -> float:
    """Best rate of an n x n matrix product on ``device`` in the step's precision (TFLOP/s)."""
    n = n or (8192 if device.type == "cuda" else 2048)  # long enough to run well past launch overhead
    dtype = torch.bfloat16 if bf16 else torch.float32
    a = torch.rand(n, n, device=device, dtype=dtype)
    b = torch.rand(n, n, device=device, dtype=dtype)
    best = math.inf
    for _ in range(5):
        sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e12


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_data(root: Path, n_train: int, size: int) -> Path:
    """A prepared dataset of ``n_train`` synthetic ``size`` px training slices (the cost does not depend on them)."""
    import h5py
    import numpy as np

    from hkd.io import write_json

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for part, n in (("train", n_train), ("val", 8)):
        with h5py.File(root / f"{part}.h5", "w") as f:
            f["image"] = rng.random((n, size, size), dtype=np.float32)
            f["label"] = rng.integers(0, 9, (n, size, size), dtype=np.uint8)
            f["case"] = np.array([b"0001"] * n)
            f["slice"] = np.arange(n)
    classes = ["background", "spleen", "right_kidney", "left_kidney", "gallbladder", "liver", "stomach",
               "aorta", "pancreas"]
    write_json(root / "dataset.json", {"classes": classes, "image_size": size, "hu_window": [-125, 275],
                                      "slices": {"train": n_train, "val": 8}})
    return root


def time_run(run, steps: int, device: torch.device) -> tuple[float, float]:
    """Median seconds per step (after one warm-up step) and GFLOP per step."""
    from hkd.train import augment

    gen = torch.Generator().manual_seed(0)
    batch = run.cfg.batch_size
    plan = [(torch.randperm(len(run.train_set), generator=gen)[:batch], augment.sample_params(batch, gen))
            for _ in range(steps + 1)]
    run.model.train()
    run.train_step(*plan[0])
    with FlopCounterMode(display=False) as flops:
        run.train_step(*plan[0])
    times = []
    for idx, aug in plan[1:]:
        sync(device)
        t0 = time.perf_counter()
        run.train_step(idx, aug)
        sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2], flops.get_total_flops() / 1e9


@torch.no_grad()
def time_inference(model, batch: int, size: int, device: torch.device, precision_autocast) -> float:
    """Seconds per slice of inference at ``size`` px."""
    x = torch.rand(batch, 1, size, size, device=device)
    model.eval().to(device)
    with precision_autocast():
        model(x)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(3):
            model(x)
        sync(device)
    return (time.perf_counter() - t0) / (3 * batch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3, help="timed steps per kind of job (median)")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default: the paper config's)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads")
    ap.add_argument("--jobs-per-device", type=int, default=1, help="jobs sharing the device in the plan")
    ap.add_argument("--config", type=Path, default=REPO / "workflow" / "configs" / "synapse-paper.yaml")
    ap.add_argument("--json", type=Path, default=None, help="write the figures printed here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from hkd.devices import autocast
    from hkd.models.checkpoint import save_state
    from hkd.train.config import TrainConfig
    from hkd.train.trainer import Run

    cfg = yaml.safe_load(args.config.read_text())
    recipe = {k: v for k, v in cfg["train"].items() if k not in ("threads", "tracker")}
    batch = {"batch_size": args.batch} if args.batch else {}  # --batch over every section's
    recipe.update(batch)
    size = cfg["data"]["image_size"]
    teacher_spec = cfg["teacher"]["model"]
    students = cfg["students"]
    seeds, widths = len(students["seeds"]), [str(w) for w in students["widths"]]
    distilled_methods = len([m for m in students["methods"] if m != "scratch"])
    # each role's recipe as the study builds it: the shared train: section under the role's own train:
    t_recipe = {**recipe, **cfg["teacher"].get("train", {}), **batch}
    s_recipe = {**recipe, **students.get("train", {}), **batch}
    if t_recipe["batch_size"] != s_recipe["batch_size"]:
        raise SystemExit("paper_study.py plans one batch size: teacher.train and students.train differ in it")
    t_epochs, s_epochs = t_recipe["epochs"], s_recipe["epochs"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as training does: fixed shapes, algorithms chosen once
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {args.threads} threads"
    bf16 = recipe.get("precision", "auto") == "bf16" or (device.type == "cuda" and recipe.get("precision", "auto") == "auto")
    peak = peak_tflops(device, bf16)
    print(f"device: {name}; {'bf16' if bf16 else 'fp32'}; matrix-multiply rate {peak:.2f} TFLOP/s; "
          f"batch {recipe['batch_size']}; {size} px; median of {args.steps} steps per job kind")
    infer = lambda: autocast(device, recipe.get("precision", "auto"))  # noqa: E731
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prepared = make_data(tmp / "prep", max(recipe["batch_size"] * (args.steps + 1), 16), size)
        teacher_run = Run(TrainConfig.from_dict({**t_recipe, "model": teacher_spec, "device": str(device)}),
                          prepared, tmp / "teacher", None, None, progress=False)
        save_state(tmp / "teacher.pt", teacher_run._model_state(0))
        sec, gflop = time_run(teacher_run, args.steps, device)
        t_inf = time_inference(teacher_run.model, 8, size, device, infer)
        rows.append(("teacher", "TransUNet", 1, t_epochs, sec, gflop, t_inf))
        del teacher_run
        for width in widths:
            for method in ("scratch", "logits"):
                run = Run(TrainConfig.from_dict({**s_recipe, "model": {"arch": students["arch"], "width": width},
                                                 "method": method, "device": str(device),
                                                 "teacher": teacher_spec if method != "scratch" else None}),
                          prepared, tmp / f"{width}_{method}", None,
                          tmp / "teacher.pt" if method != "scratch" else None, progress=False)
                sec, gflop = time_run(run, args.steps, device)
                t_inf = time_inference(run.model, 8, size, device, infer)
                count = seeds * (1 if method == "scratch" else distilled_methods)
                rows.append((method if method == "scratch" else "distilled", width, count, s_epochs, sec, gflop, t_inf))
                del run
    print(f"{'job':<10} {'model':<10} {'jobs':>4} {'s/step':>8} {'samples/s':>10} {'TFLOP/s':>8} {'of peak':>8} "
          f"{'epoch min':>9} {'job h':>7}")
    total_h, plan = 0.0, []
    for job, model, count, epochs, sec, gflop, t_inf in rows:
        steps = math.ceil(TRAIN_SLICES / recipe["batch_size"])
        epoch_s = steps * sec + VAL_SLICES * t_inf
        job_h = (epochs * epoch_s + TEST_SLICES * t_inf) / 3600
        total_h += count * job_h
        tflops = gflop / sec / 1e3
        print(f"{job:<10} {model:<10} {count:>4} {sec:>8.3f} {recipe['batch_size'] / sec:>10.1f} {tflops:>8.2f} "
              f"{tflops / peak:>7.1%} {epoch_s / 60:>9.2f} {job_h:>7.2f}")
        plan.append({"job": job, "model": model, "count": count, "s_per_step": sec,
                     "samples_per_s": recipe["batch_size"] / sec, "tflops": tflops, "of_peak": tflops / peak,
                     "inference_slices_per_s": 1 / t_inf, "hours_each": job_h})
    wall = total_h / args.jobs_per_device
    print(f"whole study ({sum(r[2] for r in rows)} trainings and their evaluations): {total_h:.1f} device-hours; "
          f"{wall:.1f} h wall with {args.jobs_per_device} job(s) per device on one device "
          "(teacher first, then the students)")
    runtimes = {f"{p['job']} {p['model']}": math.ceil(p["hours_each"] * 60 * 1.5) for p in plan}
    print("per-job runtimes for the paper config's resources (minutes, x1.5 margin): " + json.dumps(runtimes))

    # Lock-step (students.lockstep): one job per seed; per step one teacher forward pass for the whole
    # cohort, then every student's step without its own teacher pass (a distilled step's time less the
    # teacher's inference on the batch).
    teacher = rows[0]
    teacher_forward = recipe["batch_size"] * teacher[6]
    steps = math.ceil(TRAIN_SLICES / recipe["batch_size"])
    cohort_step = teacher_forward
    student_inference = 0.0
    for job, model, count, epochs, sec, gflop, t_inf in rows[1:]:
        per_seed = count // seeds
        cohort_step += per_seed * (sec if job == "scratch" else max(sec - teacher_forward, 0.0))
        student_inference += per_seed * t_inf
    cohort_h = s_epochs * (steps * cohort_step + VAL_SLICES * student_inference) / 3600
    evals_h = TEST_SLICES * student_inference * seeds / 3600
    teacher_h = plan[0]["hours_each"]
    lockstep_h = teacher_h + seeds * cohort_h + evals_h
    print(f"lock-step: {cohort_step:.3f} s per cohort step (one teacher pass of {teacher_forward:.3f} s for "
          f"{sum(r[2] for r in rows[1:]) // seeds} students); {cohort_h:.2f} h per seed; whole study "
          f"{lockstep_h:.1f} h on one device (teacher, {seeds} cohorts one after another, evaluations)")
    lock_runtimes = {"train_teacher": math.ceil(teacher_h * 60 * 1.5), "train_cohort": math.ceil(cohort_h * 60 * 1.5)}
    print("lock-step runtimes for the paper config's resources (minutes, x1.5 margin): " + json.dumps(lock_runtimes))
    # One process ran every kind of job above, one after another: its peak host memory bounds each job's.
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    gpu_mb = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    print(f"host memory: peak {peak_mb:.0f} MB over all the jobs above; mem_mb for every training rule "
          f"(x1.5 margin, an upper bound): {math.ceil(peak_mb * 1.5)}"
          + (f"; GPU memory: peak {gpu_mb:.0f} MB allocated" if gpu_mb is not None else ""))
    if args.json:
        args.json.write_text(json.dumps({
            "device": name, "precision": "bf16" if bf16 else "fp32", "peak_tflops": peak,
            "batch": recipe["batch_size"], "size": size, "jobs": plan, "device_hours": total_h,
            "lockstep_hours": lockstep_h, "cohort_hours": cohort_h, "runtimes_min": runtimes,
            "lockstep_runtimes_min": lock_runtimes, "host_peak_mb": peak_mb, "gpu_peak_mb": gpu_mb}, indent=1))


if __name__ == "__main__":
    main()
