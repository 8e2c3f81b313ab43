"""Several students of one seed trained together, one teacher pass per batch for all of them.

Students with the same seed, data and schedule draw the same batches and augmentations (the data order
and augmentation depend only on the seed and the epoch), so their training steps can advance side by
side: at each step the teacher runs once on the augmented batch and every distilled student reads its
features from that one pass (:class:`SharedTeacher`). Each student keeps its own random-number state
(:class:`RngSlot`; dropout draws from the global generator), so every student ends bit for bit as it
would alone: lock-step changes the cost, never the numbers (``tests/unit/test_lockstep.py``).

:func:`train_cohort` trains the members of a cohort into ``root/<name>/`` and skips a member whose
folder already holds a completed run of the same identity (configuration, data, teacher and code; the
run store, :mod:`hkd.train.run_store`), so changing one method's options retrains only that method's
students; the others are copied out again unchanged.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from hkd import distill
from hkd.devices import resolve_device
from hkd.guard import claim_folder
from hkd.run_files import RUN_FILES
from hkd.train import run_store
from hkd.train.config import TrainConfig
from hkd.train.teacher_targets import OnlineTeacher, load_teacher
from hkd.train.trainer import Run

log = logging.getLogger(__name__)
MEMBER_FILES = RUN_FILES + (run_store.IDENTITY_FILE,)  # what a member's folder of the store holds


class SharedTeacher(OnlineTeacher):
    """An online teacher that computes the union of its students' features once per batch.

    The features of the last batch are kept with that batch; a later call with an identical batch (same
    slices, same augmented pixels, checked exactly) is answered from them, any other batch recomputes.
    """

    def __init__(self, teacher: torch.nn.Module, spec: dict, image_size: int, device: torch.device, autocast,
                 names: tuple[str, ...] = ()):
        super().__init__(teacher, spec, image_size, device, autocast)
        self.names = tuple(dict.fromkeys(names))
        self.passes = self.calls = 0
        self._last: tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]] | None = None

    def __call__(self, idx: torch.Tensor, x: torch.Tensor, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
        self.calls += 1
        last = self._last
        if not (last is not None and torch.equal(last[0], idx) and last[1].shape == x.shape
                and torch.equal(last[1], x)):
            self.passes += 1
            last = self._last = (idx.clone(), x.clone(), super().__call__(idx, x, self.names))
        return {k: last[2][k] for k in names}


class RngSlot:
    """A private copy of the global random-number state (CPU and CUDA), swapped in while one run steps."""

    def __init__(self):
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def __enter__(self):
        self._outer = (torch.get_rng_state(), torch.cuda.get_rng_state_all() if self.cuda is not None else None)
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
        return self

    def __exit__(self, *exc):
        self.cpu = torch.get_rng_state()
        torch.set_rng_state(self._outer[0])
        if self.cuda is not None:
            self.cuda = torch.cuda.get_rng_state_all()
            torch.cuda.set_rng_state_all(self._outer[1])
        return False


def advance_together(runs: list[Run]) -> None:
    """Step every run once per round until all have finished; each steps with its own random state."""
    active = [(run, run.steps(), RngSlot()) for run in runs]
    while active:
        still = []
        for run, steps, rng in active:
            with rng:
                try:
                    next(steps)
                    still.append((run, steps, rng))
                except StopIteration:
                    pass
        active = still


def train_cohort(members: dict[str, TrainConfig | dict], prepared: str | Path, root: str | Path,
                 teacher_ckpt: str | Path | None = None, progress: bool = False,
                 publish: dict[str, Path] | None = None, trackers: dict | None = None) -> dict[str, dict]:
    """Train the cohort ``members`` (name -> training config, parsed or a dict) in lock-step into ``root/<name>``.

    Members whose folder already holds a completed run of the same identity are kept as they are.
    ``trackers`` (name -> :class:`~hkd.train.tracking.Tracker`) receive the epochs of the members trained now.
    ``publish`` (name -> folder) receives a copy of each named member's run, trained now or kept.
    Returns, per member, its identity and whether it was trained now, and the number of teacher passes
    and of teacher reads (one per distilled step) the training took.
    """
    prepared, root = Path(prepared), Path(root)
    teacher_ckpt = Path(teacher_ckpt) if teacher_ckpt else None
    run_store.check_publish(publish or {}, {"--data": prepared, "--teacher": teacher_ckpt, "--root": root})
    for name, folder in (publish or {}).items():
        claim_folder(folder, f"--publish '{name}'", create=False, names=RUN_FILES)
    cfgs = {name: cfg if isinstance(cfg, TrainConfig) else TrainConfig.from_dict(cfg) for name, cfg in members.items()}
    schedule = {(c.seed, c.epochs, c.batch_size, c.augment, c.device) for c in cfgs.values()}
    if len(schedule) > 1:
        raise ValueError("cohort members must share seed, epochs, batch_size, augment and device; got "
                         f"{sorted(schedule)}")
    shared = None
    runs, identities, trained, data = [], {}, {}, None
    for name, cfg in cfgs.items():
        distilled = cfg.method != "scratch"
        if distilled and shared is None:
            if teacher_ckpt is None:
                raise ValueError(f"cohort member '{name}' (method '{cfg.method}') needs --teacher")
            image_size = json.loads((prepared / "dataset.json").read_text())["image_size"]
            shared = load_teacher(teacher_ckpt, cfg, int(image_size), resolve_device(cfg.device), SharedTeacher)
        claim_folder(root / name, f"--root {root}: member folder", create=False, names=MEMBER_FILES)
        run = Run(cfg, prepared, root / name, root / name / ".work", None, progress,
                  teacher=shared if distilled else None, data=data, tracker=(trackers or {}).get(name))
        data = run.data
        identities[name] = run_store.member_identity(run.fingerprint, cfg.method, prepared, teacher_ckpt,
                                                     run_store.code_digest(cfg.method))
        trained[name] = not run_store.is_complete(root / name, identities[name])
        if trained[name]:
            claim_folder(root / name, f"--root {root}: member folder", names=MEMBER_FILES)
            run_store.forget_entry(root / name)
            runs.append(run)
    if shared is not None:
        shared.names = tuple(dict.fromkeys(
            n for run in runs if run.cfg.method != "scratch"
            for n in distill.get(run.cfg.method).required_teacher_features({**run.cfg.method_options})))
    log.info("cohort: training %s; up to date: %s", [n for n in cfgs if trained[n]] or "-",
             [n for n in cfgs if not trained[n]] or "-")
    for name, folder in (publish or {}).items():  # hkd's before a tracker writes its curves there
        if trained[name]:
            claim_folder(folder, f"--publish '{name}'", names=RUN_FILES)
    advance_together(runs)
    for name in [n for n in cfgs if trained[n]]:
        run_store.record_entry(root / name, identities[name])
    for name, folder in (publish or {}).items():
        claim_folder(folder, f"--publish '{name}'", names=RUN_FILES)
        run_store.publish(root / name, folder)
    passes, reads = (shared.passes, shared.calls) if shared is not None else (0, 0)
    log.info("cohort: %d teacher passes for %d distilled steps", passes, reads)
    return {"members": {name: {"identity": identities[name], "trained": trained[name]} for name in cfgs},
            "teacher_passes": passes, "teacher_reads": reads}

