"""The loop both stages share: train steps, held-out evaluation, early stopping, and keeping the
weights of the best held-out evaluation (restored at the end, so what is saved is the best)."""
from __future__ import annotations

import math
import time
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import Protocol

import torch
from torch import nn
from tqdm import tqdm

from segmentation_node.training.resume import StageResume


class StageTrainer(Protocol):
    name: str

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]: ...

    def session(self) -> AbstractContextManager[None]:
        """Puts the model in this stage's training configuration, and back afterwards."""

    steps_done: int  # the next train_step is step steps_done + 1; set on resume
    optimizer: torch.optim.Optimizer

    def train_step(self) -> float: ...

    def held_out_loss(self) -> float: ...


@dataclass
class EarlyStopping:
    """Stops after `patience` held-out evaluations in a row without a new best (0: never)."""

    patience: int
    min_delta: float = 0.0
    best_loss: float = math.inf
    best_step: int | None = None
    evaluations_without_improvement: int = 0

    def update(self, step: int, loss: float) -> bool:
        """Record an evaluation; True if it is a new best. NaN never improves."""
        if loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_step = loss, step
            self.evaluations_without_improvement = 0
            return True
        self.evaluations_without_improvement += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.evaluations_without_improvement >= self.patience


@dataclass
class StageReport:
    stage: str
    steps_run: int
    seconds_per_step: float
    train_losses: list[float]                               # one per step
    held_out: list[tuple[int, float]] = field(default_factory=list)  # (step, loss); step 0: before
    best_step: int = 0
    best_held_out: float = math.inf
    stop_reason: str = ""
    resumed_at: int = 0  # the step a resumed run continued after (0: ran from the start)

    def as_dict(self) -> dict:
        """JSON-ready: a non-finite loss (diverged, never evaluated) becomes null."""
        values = asdict(self)
        values["train_losses"] = [_finite(v) for v in self.train_losses]
        values["held_out"] = [(step, _finite(v)) for step, v in self.held_out]
        values["best_held_out"] = _finite(self.best_held_out)
        return values

    def summary(self) -> str:
        train = (f"{self.train_losses[0]:.4g} -> {self.train_losses[-1]:.4g}"
                 if self.train_losses else "n/a")
        held = f"{self.held_out[0][1]:.4g} -> {self.held_out[-1][1]:.4g}"
        return "\n".join((
            f"{self.stage}: {self.steps_run} steps, {self.seconds_per_step:.2f} s/step",
            f"  train loss     {train}",
            f"  held-out loss  {held} (best {self.best_held_out:.4g} at step {self.best_step}; "
            f"step 0 = before training)",
            f"  stopped: {self.stop_reason}" + (f" (resumed after step {self.resumed_at})" if self.resumed_at else "")))


def run_stage(trainer: StageTrainer, steps: int, eval_every: int, patience: int,
              progress: bool = True, resume: StageResume | None = None) -> StageReport:
    """Train up to `steps` steps, evaluating held-out loss before training and every
    `eval_every` steps; the model ends with the weights of the best evaluation. With `resume`:
    continue from its saved state, and save every `resume.every` steps and at the end."""
    if steps < 0 or eval_every < 1 or patience < 0:
        raise ValueError("need steps >= 0, eval_every >= 1 and patience >= 0")
    saved = resume.load() if resume else None
    if saved is not None and saved["finished"]:
        _restore(trainer, saved["weights"])
        return StageReport(**saved["report"])
    stopper = EarlyStopping(patience)
    report = StageReport(trainer.name, 0, 0.0, [], stop_reason=f"reached --steps {steps}")
    training_seconds, first = 0.0, 1
    with trainer.session():
        if saved is None:
            held_out = trainer.held_out_loss()
            report.held_out.append((0, held_out))
            stopper.update(0, held_out)
            best = _snapshot(trainer)
        else:  # where the saved state left off
            _restore(trainer, saved["weights"])
            trainer.optimizer.load_state_dict(saved["optimizer"])
            report, stopper, best = StageReport(**saved["report"]), EarlyStopping(**saved["stopper"]), saved["best"]
            held_out, training_seconds = report.held_out[-1][1], saved["training_seconds"]
            trainer.steps_done, first = report.steps_run, report.steps_run + 1
            report.resumed_at = report.steps_run

        def state(finished: bool) -> dict:
            return {"finished": finished, "weights": _snapshot(trainer), "best": best, "report": asdict(report),
                    "stopper": asdict(stopper), "optimizer": trainer.optimizer.state_dict(),
                    "training_seconds": training_seconds}

        bar = tqdm(range(first, steps + 1), desc=trainer.name, unit="step", disable=not progress)
        for step in bar:
            start = time.perf_counter()
            loss = trainer.train_step()
            training_seconds += time.perf_counter() - start
            report.train_losses.append(loss)
            report.steps_run = step
            if not math.isfinite(loss):
                report.stop_reason = f"train loss became {loss} at step {step}; kept the best weights"
                break
            if step % eval_every == 0 or step == steps:
                held_out = trainer.held_out_loss()
                report.held_out.append((step, held_out))
                if stopper.update(step, held_out):
                    best = _snapshot(trainer)
                elif stopper.should_stop:
                    report.stop_reason = (f"early stop: held-out loss did not improve for {patience} "
                                          f"evaluations")
                    break
            bar.set_postfix(train=f"{loss:.4g}", held_out=f"{held_out:.4g}")
            if resume and resume.due(step):
                resume.save(state(finished=False), step)
        bar.close()
        _restore(trainer, best)
    report.seconds_per_step = training_seconds / max(report.steps_run, 1)
    report.best_step = stopper.best_step if stopper.best_step is not None else 0
    report.best_held_out = stopper.best_loss
    if resume:
        resume.save(state(finished=True), report.steps_run)
    return report


def _snapshot(trainer: StageTrainer) -> dict[str, torch.Tensor]:
    # Only what this stage trains can change; frozen weights need no copy.
    return {name: p.detach().clone() for name, p in trainer.trainable_parameters()}


def _restore(trainer: StageTrainer, snapshot: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, parameter in trainer.trainable_parameters():
            parameter.copy_(snapshot[name])


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
