r"""The learning rate of every optimizer step: linear warm-up, then constant, cosine or step decay.

The rate is a pure function of the optimizer step ``s`` (0 for the first step) and the run's
settings, written into the optimizer before each step::

    warm-up (s < W):   lr_s = lr * (s + 1) / W                      (W = warmup_steps; lr at s = W - 1)
    constant:          lr_s = lr
    cosine:            lr_s = min_lr + (lr - min_lr) * (1 + cos(pi * (s - W) / (N - W))) / 2
    step:              lr_s = lr * gamma ** floor((s - W) / step_size)

``N`` is the run's number of optimizer steps, ``epochs * ceil(batches per epoch / accumulate)``,
or ``max_steps`` when that is fewer; the cosine reaches ``min_lr`` at ``s = N``, one step after
the last.  Warm-up starts at ``lr / W`` rather than 0, so no step is wasted (as
``torch.optim.lr_scheduler.LinearLR(start_factor=1/W)``); the cosine is SGDR's without restarts
(Loshchilov & Hutter, ICLR 2017) and the step decay ``torch.optim.lr_scheduler.StepLR``'s,
counted in optimizer steps.

Because the rate depends on nothing but ``s`` and the settings, a resumed run continues the
sequence exactly; :meth:`LrSchedule.state_dict` is recorded in the resume state anyway, so a
resume that changes the horizon (``--epochs``, ``--max-steps``) is reported.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class LrSchedule:
    """The learning rate of optimizer step ``s`` (module doc); ``total_steps`` is ``N``."""

    kind: str
    lr: float
    total_steps: int
    warmup_steps: int = 0
    min_lr: float = 0.0
    step_size: int | None = None
    gamma: float = 0.1

    @classmethod
    def from_config(cls, cfg, steps_per_epoch: int) -> "LrSchedule":
        """The schedule of a :class:`~zoo.train.config.TrainConfig` with ``steps_per_epoch`` optimizer steps."""
        total = cfg.epochs * steps_per_epoch
        if cfg.max_steps is not None:
            total = min(total, cfg.max_steps)
        return cls(kind=cfg.schedule, lr=cfg.lr, total_steps=max(total, 1), warmup_steps=cfg.warmup_steps,
                   min_lr=cfg.min_lr, step_size=cfg.step_size, gamma=0.1 if cfg.gamma is None else cfg.gamma)

    def __call__(self, s: int) -> float:
        w = self.warmup_steps
        if s < w:
            return self.lr * (s + 1) / w
        if self.kind == "cosine":
            span = max(self.total_steps - w, 1)
            t = min(s - w, span) / span
            return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))
        if self.kind == "step":
            return self.lr * self.gamma ** ((s - w) // self.step_size)
        return self.lr

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready record (the resume state keeps it)."""
        return asdict(self)

    def changes(self, saved: dict[str, Any] | None) -> str | None:
        """What differs from a recorded :meth:`state_dict` in words (None: nothing that matters)."""
        if not saved:
            return None
        if self.kind == "cosine" and saved.get("total_steps") != self.total_steps:
            return (f"the cosine schedule now spans {self.total_steps} optimizer steps (was {saved.get('total_steps')}): "
                    f"the remaining learning rates follow the new curve")
        return None
