"""``--max-minutes``: a wall-time cap on a training run that still ends in a complete version.

The cap is checked at epoch boundaries only, so a capped run calibrates, fits its anomaly detector
and defence, exports and registers exactly as a full run does. The adversarial (PGD) phase is kept:
when the clean epochs left would leave no time for the planned adversarial epochs (their cost
estimated from the last clean epoch), the clean phase ends early; the adversarial phase then runs
until its next epoch would end past the cap (at least one adversarial epoch always runs).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


def adversarial_cost(pgd_steps: int, objective: str = "pgd") -> float:
    """Cost of an adversarial epoch in clean epochs (forward+backward passes per example): ``pgd`` and
    ``fgsm-rs`` attack half of each batch (``pgd_steps`` or one extra pass), ``trades`` and ``mart`` the
    whole batch and score its clean and adversarial halves (measured: 2x a ``pgd`` epoch, README)."""
    if objective in ("trades", "mart"):
        return 2 + pgd_steps
    return 1 + 0.5 * (1 if objective in ("fgsm", "fgsm-rs") else pgd_steps)


@dataclass
class TimeCap:
    minutes: float  # 0: no cap
    adv_cost: float = 1.0  # see adversarial_cost
    start: float = field(default_factory=time.monotonic)
    capped: bool = False  # the cap cut the planned schedule

    def left_s(self) -> float:
        return self.start + 60 * self.minutes - time.monotonic()

    def end_clean_phase(self, last_epoch_s: float | None, adv_epochs: int, log) -> bool:
        """Before a clean epoch: True when it and the adversarial epochs would end past the cap."""
        if not self.minutes or last_epoch_s is None:
            return False
        hit = last_epoch_s * (1 + adv_epochs * self.adv_cost) > self.left_s()
        if hit:
            self.capped = True
            log.warning("time cap: the clean phase ends early", minutes=self.minutes, left_s=round(self.left_s()))
        return hit

    def stop(self, last_epoch_s: float | None, adv_done: int, adv_epochs: int, log) -> bool:
        """Before an adversarial epoch: True when it would end past the cap (never before one has run,
        unless none is planned)."""
        if not adv_epochs:
            return True  # reached only when the clean phase was cut and no adversarial epoch is planned
        if not self.minutes or last_epoch_s is None or adv_done == 0:
            return False
        hit = last_epoch_s > self.left_s()
        if hit:
            self.capped = True
            log.warning("time cap: training stops early", minutes=self.minutes, adversarial_epochs=adv_done)
        return hit

    def record(self, epochs_done: int, clean_epochs: int, cfg) -> dict:
        """Epochs run (clean, adversarial) against the plan, for the manifest's provenance."""
        return {"clean": min(epochs_done, clean_epochs), "adversarial": max(0, epochs_done - clean_epochs),
                "planned": [cfg.gan_epochs, cfg.adv_epochs], "time_capped": self.capped}  # fmt: skip
