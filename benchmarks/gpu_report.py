"""The summary of ``benchmarks/gpu_check.sh``: its figures as one Markdown table, with the issue's targets.

Reads what the check wrote in ``--out``: ``default.json`` (the default study's wall time and exit status),
``paper.json`` (benchmarks/paper_study.py --json), ``inference.json`` (benchmarks/inference_rate.py --json),
and checks that every training run of the default study (``--study``) ran on the device it was asked to
(``metrics.json``'s ``device``). Writes ``summary.md`` and ``summary.json`` there and prints the table; exits
non-zero when a part is missing or a run trained elsewhere (a missed speed target is reported, not an error).

    python benchmarks/gpu_report.py --out OUT --study results/gpu_check/default --expect cuda
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

TARGETS = {  # what the GPU check is held to on an H200 (issue: the GPU path proven)
    "default_s": 240, "teacher_samples_per_s": 600, "study_hours": 2.0, "student_slices_per_s": 5000,
}


def training_devices(study: Path) -> dict[str, str]:
    """Each training run of the study (its folder under models/) -> the device its metrics.json names."""
    return {str(p.parent.relative_to(study / "models")): json.loads(p.read_text()).get("device", "?")
            for p in sorted((study / "models").rglob("metrics.json"))}


def load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--study", type=Path, required=True, help="the default study's output folder")
    ap.add_argument("--expect", default="cuda", help="the device every training run must report")
    ap.add_argument("--machine", default="", help="the machine in words (nvidia-smi's name, driver)")
    args = ap.parse_args()
    default, paper, infer = (load(args.out / n) for n in ("default.json", "paper.json", "inference.json"))
    runs = training_devices(args.study) if args.study.exists() else {}
    elsewhere = {run: dev for run, dev in runs.items() if not dev.startswith(args.expect)}
    problems = [f"{n} missing" for n, v in (("default.json", default), ("paper.json", paper),
                                            ("inference.json", infer)) if v is None]
    if default and default["rc"] != 0:
        problems.append(f"the default study exited with {default['rc']}")
    if not runs:
        problems.append(f"no training run's metrics.json under {args.study / 'models'}")
    if elsewhere:
        problems.append(f"runs not on {args.expect}: {elsewhere}")

    lines = [f"GPU check, {datetime.date.today().isoformat()}: {args.machine or (paper or {}).get('device', '?')}", "",
             "| figure | measured | target | met |", "| --- | ---: | ---: | :---: |"]
    met = {}

    def row(name: str, value: float | None, target: float, fmt: str, higher: bool) -> None:
        ok = value is not None and (value >= target if higher else value <= target)
        met[name] = ok
        shown = "-" if value is None else format(value, fmt)
        bound = f"{'>=' if higher else '<='} {format(target, fmt)}"
        lines.append(f"| {name} | {shown} | {bound} | {'yes' if ok else 'no'} |")

    if default:
        row(f"default study end to end on {args.expect} ({default['jobs']} jobs, {len(runs)} training runs), s",
            default["seconds"] if default["rc"] == 0 else None, TARGETS["default_s"], ".0f", higher=False)
    if paper:
        teacher = paper["jobs"][0]
        row(f"paper TransUNet training, {paper['precision']}, batch {paper['batch']}, samples/s",
            teacher["samples_per_s"], TARGETS["teacher_samples_per_s"], ".0f", higher=True)
        row("whole paper study, lock-step cohorts, extrapolated, h", paper["lockstep_hours"], TARGETS["study_hours"],
            ".2f", higher=False)
    if infer:
        student = [r for r in infer["rows"] if r["model"] == "student 0.4M"]
        batch = max((b for r in student for b in r["slices_per_s"]), key=int, default="0")
        fastest = max(student, key=lambda r: r["slices_per_s"][batch], default=None)
        row(f"0.4M student inference, batch {batch}, fastest ({fastest and fastest['precision']} "
            f"{fastest and fastest['format']}), slices/s", fastest and fastest["slices_per_s"][batch],
            TARGETS["student_slices_per_s"], ".0f", higher=True)
    if paper:
        lines += ["", f"Training steps ({paper['precision']}, batch {paper['batch']}, {paper['size']} px; "
                      f"matrix-multiply rate measured {paper['peak_tflops']:.3g} TFLOP/s):", "",
                  "| job | model | samples/s | TFLOP/s | of peak | inference slices/s | h per job |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        lines += [f"| {j['job']} | {j['model']} | {j['samples_per_s']:.0f} | {j['tflops']:.1f} | {j['of_peak']:.1%} | "
                  f"{j['inference_slices_per_s']:.0f} | {j['hours_each']:.3f} |" for j in paper["jobs"]]
        lines += ["", f"Whole paper study: {paper['device_hours']:.2f} device-hours one job at a time; "
                      f"{paper['lockstep_hours']:.2f} h with lock-step cohorts. Runtimes (min, x1.5): "
                      f"{json.dumps(paper['lockstep_runtimes_min'])}; host memory peak {paper['host_peak_mb']:.0f} MB"
                      + (f", GPU memory peak {paper['gpu_peak_mb']:.0f} MB" if paper.get("gpu_peak_mb") else "")]
    if infer:
        batches = list(infer["rows"][0]["slices_per_s"]) if infer["rows"] else []
        lines += ["", f"Inference ({infer['size']} px, PyTorch, slices/s; NHWC: channels-last):", "",
                  "| model | params | GFLOP | precision | format | " + " | ".join(f"batch {b}" for b in batches) + " |",
                  "| --- | ---: | ---: | --- | --- | " + " | ".join("---:" for _ in batches) + " |"]
        lines += [f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['gflop']:.2f} | {r['precision']} | {r['format']} | "
                  + " | ".join(f"{r['slices_per_s'][b]:.0f}" for b in batches) + " |" for r in infer["rows"]]
    if problems:
        lines += ["", "Problems: " + "; ".join(problems)]
    text = "\n".join(lines) + "\n"
    (args.out / "summary.md").write_text(text)
    (args.out / "summary.json").write_text(json.dumps({"met": met, "problems": problems, "runs": runs}, indent=1))
    print(text)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
