"""What bounds the paper-size training and inference rates on this machine's GPU: each knob measured alone.

benchmarks/gpu_check.sh measures the rates hkd gets as it runs today; this script varies one thing at a
time around them, in one run, so a missed target comes with what would move it:

1. the paper teacher's training step (the trainer's own ``Run.train_step``, bf16 autocast) at the paper's
   batch: as trained now; with cuDNN's autotuner (``torch.backends.cudnn.benchmark``); in channels-last;
   at twice the batch (a step bound by launches and host work gains from a larger batch, one bound by
   arithmetic or memory does not); compiled (``train.compile``: fewer launches, fused elementwise work), at
   both batches (the compile time, paid once per job, is printed apart from the step's);
2. student training steps (scratch and distilled, 0.4M and 16M): channels-first against channels-last;
3. the 0.4M student's inference: batch 32 and 256, fp32 and bf16, channels-first and channels-last;
4. several training jobs sharing the GPU: 1 and 4 processes, each running the 0.4M distilled student's
   step (teacher online) at the paper's batch, started together; their summed samples/s.

    python benchmarks/gpu_bounds.py                          # the paper config, 224 px
    python benchmarks/gpu_bounds.py --config config.yaml --batch 2 --steps 1 --processes 1 2   # tiny, CPU
    python benchmarks/gpu_bounds.py --parts 1                # the teacher's step only
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))
from inference_rate import seconds_per_pass  # noqa: E402  (sibling scripts)
from paper_study import make_data, sync, time_run  # noqa: E402


def make_run(recipe: dict, spec: dict, prepared: Path, out: Path, device: torch.device, teacher=None, **knobs):
    from hkd.train.config import TrainConfig
    from hkd.train.trainer import Run

    cfg = {**recipe, **knobs, "model": spec, "device": str(device)}
    if teacher is not None:
        cfg.update(method="logits", teacher=teacher[0])
    return Run(TrainConfig.from_dict(cfg), prepared, out, None, teacher[1] if teacher else None, progress=False)


def slices_per_s(model, batch: int, size: int, device: torch.device, bf16: bool, channels_last: bool,
                 runs: int) -> float:
    """Slices per second of ``model`` at ``batch``, in channels-last where asked (the model converted back after)."""
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    rate = batch / seconds_per_pass(model, batch, size, device, bf16, runs, channels_last)
    model.to(memory_format=torch.contiguous_format)
    return rate


def worker(args: tuple) -> None:
    """One training job of the sharing test: build its run, wait for the others, time its steps."""
    recipe, spec, teacher, prepared, out, steps, barrier, results = args
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(1)
    run = make_run(recipe, spec, Path(prepared), Path(out), device, teacher=teacher)
    time_run(run, 1, device)  # warm-up (cuDNN, allocator)
    barrier.wait()
    t0 = time.perf_counter()
    for _ in range(steps):
        gen = torch.Generator().manual_seed(0)
        from hkd.train import augment

        idx = torch.randperm(len(run.train_set), generator=gen)[:recipe["batch_size"]]
        run.train_step(idx, augment.sample_params(recipe["batch_size"], gen))
    sync(device)
    results.put(steps * recipe["batch_size"] / (time.perf_counter() - t0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=REPO / "workflow" / "configs" / "synapse-paper.yaml")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per variant (median)")
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--share-steps", type=int, default=20, help="steps each process of the sharing test times")
    ap.add_argument("--parts", type=int, nargs="+", default=[1, 2, 3, 4], choices=[1, 2, 3, 4],
                    help="which of the four measurements to make (part 2 needs part 1's teacher)")
    args = ap.parse_args()
    torch.set_num_threads(4)
    cfg = yaml.safe_load(args.config.read_text())
    recipe = {k: v for k, v in cfg["train"].items() if k not in ("threads", "tracker")}
    if args.batch:
        recipe["batch_size"] = args.batch
    batch, size = recipe["batch_size"], cfg["data"]["image_size"]
    teacher_spec = cfg["teacher"]["model"]
    student = {"arch": "squeezeunet", "width": "0.4M"}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}; batch {batch}; {size} px")
    from hkd.models.checkpoint import save_state

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prepared = make_data(tmp / "prep", max(2 * batch * (args.steps + 1), args.share_steps * batch, 16), size)
        teacher_variants = (("as trained now", {}, batch, False),
                            ("+ cuDNN autotuner", {}, batch, True),
                            ("+ autotuner, channels-last", {"channels_last": True}, batch, True),
                            (f"+ autotuner, batch {2 * batch}", {}, 2 * batch, True),
                            ("+ autotuner, train.compile", {"compile": True}, batch, True),
                            (f"+ autotuner, train.compile, batch {2 * batch}", {"compile": True}, 2 * batch, True))
        if 1 in args.parts:
            print("1. teacher training step")
        for name, knobs, b, autotune in teacher_variants if 1 in args.parts else teacher_variants[:1]:
            torch.backends.cudnn.benchmark = autotune
            started = time.perf_counter()
            run = make_run({**recipe, "batch_size": b}, teacher_spec, prepared, tmp / "t", device, **knobs)
            sec, gflop = time_run(run, args.steps, device)
            setup = time.perf_counter() - started - (args.steps + 2) * sec  # building, warm-up, compiling
            if 1 in args.parts:
                print(f"   {name:<44} {b / sec:>8.1f} samples/s  {gflop / sec / 1e3:>7.2f} TFLOP/s  "
                      f"(set-up and first steps {setup:.0f} s)")
            if name == "as trained now":
                save_state(tmp / "teacher.pt", run._model_state(0))
            del run
        torch.backends.cudnn.benchmark = True
        teacher = (teacher_spec, tmp / "teacher.pt")
        if 2 in args.parts:
            print("2. student training steps (autotuner on): channels-first and channels-last, samples/s")
        for width, method in (("0.4M", "scratch"), ("16M", "scratch"), ("0.4M", "logits"), ("16M", "logits")):
            if 2 not in args.parts:
                break
            rates = []
            for cl in (False, True):
                run = make_run(recipe, {"arch": "squeezeunet", "width": width}, prepared, tmp / "s", device,
                               teacher=teacher if method != "scratch" else None, channels_last=cl)
                rates.append(batch / time_run(run, args.steps, device)[0])
                del run
            print(f"   {width:<5} {method:<8} {rates[0]:>8.1f} -> {rates[1]:>8.1f} ({rates[1] / rates[0]:.2f}x)")
        if 3 in args.parts:
            print("3. 0.4M student inference (autotuner on), slices/s")
            from hkd.deploy.cost import at_size

            model = at_size(student, size).to(device)
            for b in (32, 256):
                cells = [f"{p}{' CL' if cl else ''}: {slices_per_s(model, b, size, device, p == 'bf16', cl, 10):.0f}"
                         for p in ("fp32", "bf16") for cl in (False, True)]
                print(f"   batch {b:<4} " + "; ".join(cells))
            del model
        if 4 in args.parts:
            print(f"4. 0.4M distilled training jobs sharing the device (batch {batch}, teacher online), samples/s")
        ctx = mp.get_context("spawn")
        for n in args.processes if 4 in args.parts else []:
            barrier, results = ctx.Barrier(n), ctx.Queue()
            procs = [ctx.Process(target=worker, args=((recipe, student, (teacher_spec, str(tmp / "teacher.pt")),
                                                       str(prepared), str(tmp / f"w{i}"), args.share_steps,
                                                       barrier, results),)) for i in range(n)]
            for p in procs:
                p.start()
            rates = [results.get(timeout=600) for _ in procs]
            for p in procs:
                p.join()
            print(f"   {n} process(es): {sum(rates):>8.1f} samples/s in all ({min(rates):.1f}-{max(rates):.1f} each)")

if __name__ == "__main__":
    main()
