"""One retraining run: intake -> poisoning screen -> candidate training -> gate -> promote or keep.

``run_retrain(settings, r)`` (``forensics retrain --now``; the scheduler in :mod:`trainer.schedule`):

1. take the Redis lock ``<prefix>:retrain:lock`` (one run at a time across machines; a lost lock
   stops the run at the next step or epoch, before it can promote);
2. load the current model and its training recipe (``report/metrics.json``);
3. intake: clips from ``retrain.data_dirs`` (their face crops) and analysts' labelled alerts
   (their stored evidence crops; a label whose crop has expired is recorded as unusable);
4. screen every new sample against the current model (:mod:`trainer.poisoning`, thresholds from
   its validation split) and cap what one run may add;
5. train a candidate on the base data plus the accepted samples (same split shares and seed as
   the current model, so its validation and test clips stay out of training), warm-started from
   the current weights unless ``retrain.warm_start`` is off; registered unpromoted;
6. gate both models on the same held-out set (:mod:`trainer.gate`); promote and announce on
   Redis if it passes, else keep the candidate unpromoted with the reason.

Every run, whatever its end, writes ``<models>/runs/<run id>.json``: data counts in and
quarantined (with each quarantined sample's numbers), both models' metrics, decision and reason.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import redis
import torch

from forensics.announce import promote_announced
from forensics.config import RetrainSettings, Settings
from forensics.errors import ForensicsError
from forensics.labels import LABELS, labelled_crops
from forensics.lock import LockLost, RedisLock
from forensics.logs import get_logger
from forensics.model import LoadedModel
from forensics.registry import Artifact, Registry
from forensics.streams import Keys
from trainer import refine
from trainer.data import CropCache, CropSet, Video, read_dataset, recipe_cache, recipe_splits
from trainer.gate import decide, gate_metrics, holdout_set, remember_holdout
from trainer.poisoning import Sample, calibrate, screen
from trainer.recipe import TrainConfig
from trainer.train import Trainer


class CandidateTrainer(Trainer):
    """The trainer, plus accepted new crops in the train split, an optional warm start, and a lock check."""

    def __init__(self, cfg: TrainConfig, *, extra: list[Sample], init_weights: Path | None,
                 check: Callable[[], None]):  # fmt: skip
        super().__init__(cfg)
        self.extra = extra
        self.init_weights = init_weights
        self.check = check

    def load_data(self) -> None:
        super().load_data()
        if not self.extra:
            return
        base = self.crops["train"]
        videos = list(base.videos) + [Video(Path(s.id), s.label, s.id) for s in self.extra]
        n0 = len(base.videos)
        self.crops["train"] = CropSet(
            images=np.concatenate([base.images] + [s.images for s in self.extra]),
            labels=np.concatenate([base.labels] + [np.full(len(s.images), s.label, np.int64) for s in self.extra]),
            video=np.concatenate([base.video] + [np.full(len(s.images), n0 + i, np.int64) for i, s in enumerate(self.extra)]),
            frame_index=np.concatenate([base.frame_index] + [np.arange(len(s.images)) for s in self.extra]),
            videos=videos,
        )
        self.fingerprint = self.crops["train"].fingerprint()

    def build_models(self) -> None:
        super().build_models()
        if self.init_weights is not None:
            # Our own registry file, tensors and plain containers only (weights_only): never a pickle.
            state = torch.load(self.init_weights, map_location=self.device, weights_only=True)
            self.D.load_state_dict(state["state_dict"])

    def train_epoch(self, loader, phase: str, eps: float) -> dict[str, float]:
        self.check()
        return super().train_epoch(loader, phase, eps)


def training_recipe(art: Artifact) -> dict[str, Any]:
    """The TrainConfig (as a dict) the version was trained with."""
    try:
        return json.loads((art.path / "report" / "metrics.json").read_text())["config"]
    except (OSError, ValueError, KeyError) as err:
        raise ForensicsError(f"model {art.version} has no training recipe in report/metrics.json ({err})") from None


def _folder_samples(dirs: list[Path], cache: CropCache, exclude: set[Path]) -> tuple[list[Sample], dict[str, Any]]:
    counts: dict[str, Any] = {"dirs": [str(d) for d in dirs], "videos": 0, "excluded": 0, "no_faces": 0}
    if not dirs:
        return [], counts
    videos = read_dataset(dirs)
    fresh = [v for v in videos if v.path.resolve() not in exclude]
    counts["videos"], counts["excluded"] = len(videos), len(videos) - len(fresh)
    cache.build(fresh, progress=False)
    samples = []
    for v in fresh:
        cs = cache.load([v])
        if len(cs) == 0:
            counts["no_faces"] += 1
            continue
        samples.append(Sample(f"dir:{v.path}", str(v.path.parent), v.label, cs.images))
    return samples, counts


def _label_samples(r: redis.Redis, keys: Keys, size: int) -> tuple[list[Sample], dict[str, Any]]:
    samples, unusable = [], []
    found = labelled_crops(r, keys, size)
    for lc in found:
        rec = lc.record
        if lc.images is None:
            unusable.append({"alert_id": rec.get("alert_id"), "reason": lc.problem})
            continue
        samples.append(Sample(f"alert:{rec['alert_id']}", f"alert:{rec.get('source')}", LABELS[rec["label"]], lc.images))
    return samples, {"labels": len(found), "usable": len(samples), "unusable": unusable}


def _already_used(reg: Registry, current: str, accepted_ids: list[str]) -> bool:
    """True if every accepted sample was already in the run that produced the current model."""
    for rec in reversed(reg.run_records()):
        if rec.get("candidate") == current:
            return set(accepted_ids) <= set(rec.get("screen", {}).get("accepted_ids", []))
    return False


def run_retrain(settings: Settings, r: redis.Redis, *, trigger: str = "manual",
                train_overrides: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """One run under the lock; returns its record (also written to ``<models>/runs/``).

    Raises LockHeld if another run holds the lock (nothing is written then), and ForensicsError
    for user-caused problems (no current model, missing data) after recording the failure.
    ``train_overrides`` replaces TrainConfig fields of the candidate (``warm_start`` too).
    """
    keys = Keys(settings.redis.prefix)
    reg = Registry(settings.models_dir)
    lock = RedisLock(r, keys.retrain_lock, ttl_s=settings.retrain.lock_ttl_s)
    lock.acquire()
    started = time.time()
    run_id = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    r.set(keys.retrain_last, json.dumps({"run_id": run_id, "started_at": started}))
    record: dict[str, Any] = {"run_id": run_id, "trigger": trigger, "started_at": started, "lock": lock.owner,
                              "current": reg.current(), "candidate": None, "decision": "running"}  # fmt: skip
    log = get_logger(run=run_id)
    log.info("retraining started", trigger=trigger, current=record["current"])
    try:
        _run(settings, r, reg, keys, lock, record, dict(train_overrides or {}))
    except LockLost as err:
        record.update(decision="aborted", reason=str(err))
    except ForensicsError as err:
        record.update(decision="failed", reason=str(err))
        raise
    except Exception as err:  # a bug: still leave a record, then keep the traceback
        record.update(decision="failed", reason=f"internal error: {type(err).__name__}: {err}")
        raise
    finally:
        record["finished_at"] = time.time()
        record["duration_s"] = round(record["finished_at"] - started, 1)
        reg.write_run_record(record)
        lock.release()
        log.info("retraining finished", decision=record["decision"], reason=record.get("reason"),
                 candidate=record["candidate"], duration_s=record["duration_s"])  # fmt: skip
    return record


def _run(settings: Settings, r: redis.Redis, reg: Registry, keys: Keys, lock: RedisLock, record: dict[str, Any],
         overrides: dict[str, Any]) -> None:  # fmt: skip
    rs = settings.retrain
    cur_art = reg.load()
    current = LoadedModel(cur_art)
    recipe = training_recipe(cur_art)
    base = [str(p) for p in rs.base_data] or list(recipe["data"])
    recipe = {**recipe, "data": base}
    cache_dir = Path(rs.cache_dir or settings.state_dir / "crops")
    cache = recipe_cache(cache_dir, recipe)

    # The current model's own splits: validation calibrates the screen, test is the default holdout.
    base_videos = read_dataset(base)
    splits = recipe_splits(base_videos, recipe)
    cache.build(base_videos, progress=False)
    val = cache.load(splits["val"])
    base_crops = len(cache.load(splits["train"]))
    cal = calibrate(current, val.images, val.labels, val.video, outlier_quantile=rs.outlier_quantile,
                    flip_quantile=rs.flip_quantile)  # fmt: skip
    holdout, holdout_info = holdout_set(rs.holdout_dir, recipe, cache_dir)
    holdout_info["changed"] = remember_holdout(reg.root, holdout_info)
    exclude = {v.path.resolve() for v in base_videos} | {v.path.resolve() for v in holdout.videos}

    folder, folder_counts = _folder_samples(list(rs.data_dirs), cache, exclude)
    labelled, label_counts = _label_samples(r, keys, current.size)
    record["intake"] = {"base_train_crops": base_crops, "folders": folder_counts, "labels": label_counts}
    lock.check()

    result = screen(current, cal, folder + labelled, base_crops=base_crops, max_new_share=rs.max_new_share,
                    max_source_share=rs.max_source_share, source_alpha=rs.source_alpha)  # fmt: skip
    accepted_ids = [s.id for s in result.accepted]
    record["screen"] = {"calibration": cal.to_json(), **result.counts(), "quarantined_samples": result.quarantined,
                        "capped_samples": result.capped, "accepted_ids": accepted_ids}  # fmt: skip
    reg.write_run_record(record)
    if not result.accepted or _already_used(reg, cur_art.version, accepted_ids):
        record.update(decision="skipped", reason="no new accepted data since the current model")
        return
    lock.check()

    warm = bool(overrides.pop("warm_start", rs.warm_start))
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in recipe.items() if k in names})
    fields = {
        "run_dir": str(settings.state_dir / "retrain" / record["run_id"]), "cache_dir": str(cache_dir),
        "models_dir": str(settings.models_dir), "promote": False, "evaluate": False, "progress": False,
        "resume": False, "parent": cur_art.version, "threads": rs.threads or cfg.threads,
        "notes": {"retrain_run": record["run_id"]},
        "gan_epochs": cfg.gan_epochs if rs.gan_epochs is None else rs.gan_epochs,
        "adv_epochs": cfg.adv_epochs if rs.adv_epochs is None else rs.adv_epochs,
    }  # fmt: skip
    state = refine.load_state(r, keys) if rs.refine else None
    if state is not None:
        fields["eps"] = min(max(state["eps"], rs.eps_min), rs.eps_max)
    cfg = dataclasses.replace(cfg, **{**fields, **overrides})
    weights = cur_art.path / cur_art.manifest.get("torch_weights", "discriminator.pt")
    record["train"] = {"gan_epochs": cfg.gan_epochs, "adv_epochs": cfg.adv_epochs, "eps": cfg.eps,
                       "warm_start": warm, "base_train_crops": base_crops,
                       "new_crops": result.counts()["accepted_crops"]}  # fmt: skip
    out = CandidateTrainer(cfg, extra=result.accepted, init_weights=weights if warm else None, check=lock.check).run()
    record["candidate"] = out["version"]
    if rs.refine:
        record["refinement"] = _refine(r, keys, current, val.images, result.accepted, cfg.eps, state, rs)
    reg.write_run_record(record)
    lock.check()

    seed = int(recipe["seed"])
    cur_m = gate_metrics(cur_art, holdout, seed=seed, max_fakes=rs.gate_max_fakes)
    lock.check()
    cand_m = gate_metrics(reg.load(out["version"]), holdout, seed=seed, max_fakes=rs.gate_max_fakes)
    promote, reason = decide(cur_m, cand_m, auc_margin=rs.auc_margin, asr_tolerance=rs.asr_tolerance)
    record["gate"] = {"holdout": holdout_info, "current": cur_m, "candidate": cand_m,
                      "rule": {"auc_margin": rs.auc_margin, "asr_tolerance": rs.asr_tolerance}}  # fmt: skip
    lock.check()  # never promote without the lock: another run may be deciding too
    if promote:
        promote_announced(reg, r, keys, out["version"], reason=f"retrain {record['run_id']}: gate passed")
        record.update(decision="promoted", reason=reason)
    else:
        record.update(decision="kept", reason=f"not promoted: {reason}")


def _refine(r: redis.Redis, keys: Keys, current: LoadedModel, val_images: np.ndarray, accepted: list[Sample],
            eps: float, state: dict[str, Any] | None, rs: RetrainSettings) -> dict[str, Any]:  # fmt: skip
    """Next run's radius from the detector's rate on the accepted new crops vs on clean validation crops."""
    rate = refine.anomaly_rate(current, np.concatenate([s.images for s in accepted]))
    baseline = refine.anomaly_rate(current, val_images)
    new, why = refine.next_eps(rate, baseline, eps, eps_min=rs.eps_min, eps_max=rs.eps_max)
    refine.save_state(r, keys, {"eps": new, "anomaly_rate": rate, "baseline": baseline})
    return {"eps_used": eps, "eps_from_previous_run": state is not None, "anomaly_rate_new": rate,
            "anomaly_rate_clean_val": baseline, "eps_next": new, "changed": new != eps, "why": why}  # fmt: skip
