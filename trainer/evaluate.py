"""Robustness evaluation of a registered model version on its held-out test split (issue 7).

``evaluate(models_dir, version, data_dirs)`` reproduces the trainer's test split (same
``split_by_group`` shares and seed, read from the version's ``report/metrics.json``), then:

- clean frame/video AUC, log loss and accuracy at the calibrated thresholds of the manifest;
- white-box attacks on the torch discriminator (``discriminator.pt``) against the correctly
  detected fakes: FGSM and PGD at eps in ``EPS_REPORT``, PGD with more steps and restarts,
  unbounded PGD, DeepFool (aimed at the calibrated threshold, not at logit 0);
- query attacks through ONNX Runtime (:mod:`trainer.evaluate_query`): the Square attack with a
  real budget (5,000 queries per image, L-inf 4/255) per frame and per face track (a track is
  fooled when the video verdict flips to REAL), and a decision-based HopSkipJump-style attack;
- an adaptive attack on the whole defence: PGD on a loss pushing the logit below the frame
  threshold *and* the shipped second line's score (``defence.npz``, ported to torch with BPDA
  through its squeezers) below its threshold; versions without ``defence.npz`` fall back to the
  differentiable pooled Mahalanobis score. Run to convergence (steps until success stops rising),
  per frame and per track, in ``result["defence"]`` (:func:`trainer.defence.adaptive_evaluation`);
- the shipped defence's detection rate and AUROC (clean test crops vs adversarial) per attack and
  for the OOD sets (the pooled scorer's numbers stay beside them for comparison), and per OOD set
  the share flagged (by the shipped defence when there is one) or marked low_quality by the
  input-quality gate with the face check of the model's crop detector (``no_face``): "flagged or
  gated", issue 17;
- sanity checks (Carlini et al. 2019 "On evaluating adversarial robustness"): success rises with
  eps, more steps/restarts never lower it, unbounded PGD reaches >= 95%, FGSM <= PGD, DeepFool
  inside 8/255 <= PGD there (``success_within`` on its row: DeepFool is unbounded),
  black-box (HopSkipJump, Square) <= white-box, input gradients are not zero.

Attack success is always the share of correctly detected fakes (frame prob > frame threshold)
whose adversarial version is called real (logit <= log(t / (1 - t))).

The core, :func:`run_evaluation`, takes the model objects directly, so a test can hand it a
deliberately gradient-masked model and see the sanity checks fail.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from forensics.errors import AttackError
from forensics.logs import get_logger
from forensics.quality import face_check_detector, face_checker
from forensics.registry import Registry
from forensics.scoring import MahalanobisScorer
from trainer import attacks
from trainer.attacks_query import SQUARE_QUERIES
from trainer.data import CropSet, as_float_tensor, load_recipe_splits, version_recipe
from trainer.defence import TorchDefence, TorchMahalanobis, WithScore
from trainer.evaluate_query import hop_skip_jump_evaluation, square_evaluation
from trainer.fidelity import generator_fidelity, ssim_pairs
from trainer.metrics import log_loss, logit, predict, roc_auc, sigmoid, video_scores
from trainer.models import LogitsOnly, load_discriminator, load_generator
from trainer.ood import gated_rates, ood_sets
from trainer.recipe import EPS_REPORT
from trainer.sanity import detection, eps_label, sanity_checks

# A model here maps float32 [N,3,S,S] in [0,1] to (logits [N], tuple of features [N, C_l]),
# like trainer.models.Discriminator. A query function maps float32 numpy NCHW to logits [N].
FeatureModel = nn.Module
QueryFn = attacks.QueryFn


# ---- the evaluation --------------------------------------------------------------------------


def _detection(
    scores_adv: np.ndarray, scores_clean: np.ndarray, thr: float, fooled: np.ndarray | None = None
) -> dict:
    out = {
        "detection_rate": float((scores_adv > thr).mean()) if len(scores_adv) else float("nan"),
        "auroc": roc_auc(
            np.concatenate([scores_clean, scores_adv]),
            np.concatenate([np.zeros(len(scores_clean)), np.ones(len(scores_adv))]),
        ),
    }
    if fooled is not None:
        out["detection_rate_fooling"] = (
            float((scores_adv[fooled] > thr).mean()) if fooled.any() else float("nan")
        )
        out["fooled_and_undetected"] = (
            float((fooled & (scores_adv <= thr)).mean()) if len(fooled) else float("nan")
        )
    return out


def run_evaluation(model: FeatureModel, query: QueryFn, scorer: MahalanobisScorer, thresholds: dict,
                   test: CropSet, *, seed: int = 0, max_fakes: int = 200, quick: bool = False,
                   blackbox_images: int | None = None, blackbox_queries: int | None = None,
                   ood_n: int | None = None, generator: nn.Module | None = None,
                   generator_samples: int = 1000, defences: dict | None = None,
                   shipped_defence: str | None = None, square_images: int | None = None,
                   square_tracks: int | None = None, square_queries: int = SQUARE_QUERIES,
                   adaptive_frames: int | None = None, adaptive_tracks: int | None = None,
                   crop_detector: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Everything of :func:`evaluate` on given objects. ``query`` maps float32 NCHW to logits [N].

    ``crop_detector``: the face detector the model's crops were made with (manifest); the OOD table's
    face check (``no_face``) runs it (:func:`forensics.quality.face_check_detector`: BlazeFace if None).

    ``generator`` (the version's DCGAN generator, optional): ``generator_samples`` samples are
    compared by SSIM with their nearest REAL test crops, from clean and adversarial latents.
    ``defences`` (name -> forensics.defence.Defence, optional) with ``shipped_defence`` one of its
    names: the second line of defence's methods table and adaptive attacks (``result["defence"]``).
    """
    log = get_logger()
    t_start = time.monotonic()
    gen = lambda: torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    frame_thr = float(thresholds["frame_prob"])
    z_thr = logit(frame_thr)
    a_thr = float(thresholds["anomaly"])
    scorer = scorer.with_threshold(a_thr, fpr=float(thresholds.get("anomaly_fpr", scorer.fpr)))
    maha = TorchMahalanobis(scorer)

    x = as_float_tensor(test.images)
    y = test.labels.astype(np.float64)
    logits, feats = predict(model, x)
    probs = sigmoid(logits)
    clean_scores = scorer.score(feats)
    vp, vl = video_scores(probs, test.video, test.labels)
    clean: dict[str, Any] = {
        "frames": len(y), "videos": len(vl), "fakes": int((y == 1).sum()),
        "frame_auc": roc_auc(probs, y), "video_auc": roc_auc(vp, vl), "log_loss": log_loss(probs, y),
        "frame_accuracy": float(((probs > frame_thr) == (y == 1)).mean()),
        "video_accuracy": float(((vp > float(thresholds["video_prob"])) == (vl == 1)).mean()),
        "frame_threshold": frame_thr, "video_threshold": float(thresholds["video_prob"]),
        "anomaly_threshold": a_thr, "clean_anomaly_rate": float((clean_scores > a_thr).mean()),
    }  # fmt: skip

    # The shipped second line (defence.npz) scores every attack and OOD set, on uint8-rounded crops as
    # a worker receives them; the pooled scorer's numbers stay in each row for comparison.
    shipped = defences.get(shipped_defence) if (defences and shipped_defence) else None
    if shipped is not None:
        from trainer.defence import crop_features, to_uint8
        from trainer.models import WithChannelStats

        stats_net = WithChannelStats(model).eval()
        defence_score = lambda imgs_u8: shipped.combine(crop_features(shipped, scorer, stats_net, imgs_u8))
        defence_clean = defence_score(test.images)
        clean["defence_threshold"] = shipped.threshold
        clean["defence_clean_fpr"] = float((defence_clean > shipped.threshold).mean())

    detected = np.where((y == 1) & (probs > frame_thr))[0]
    if len(detected) > max_fakes:
        detected = np.sort(rng.choice(detected, max_fakes, replace=False))
    xf = x[detected]
    ones = torch.ones(len(detected))
    lm = LogitsOnly(model)
    n = len(detected)
    log.info("evaluating", frames=len(y), attacked=n, quick=quick)

    attack_rows: dict[str, dict[str, Any]] = {}
    adv_store: dict[str, tuple[torch.Tensor, np.ndarray, np.ndarray]] = {}

    def record(
        name: str, family: str, eps: float | None, xa: torch.Tensor | None, error: str | None = None, **extra
    ):
        row: dict[str, Any] = {"family": family, "eps": eps, "attacked": n, **extra}
        if xa is None:  # the attack could not run (zero gradient everywhere): it moved nothing
            xa = xf.clone()
            row["error"] = error
        la, fa = predict(model, xa)
        fooled = la <= z_thr
        s = scorer.score(fa) if n else np.zeros(0)
        delta = (xa - xf).flatten(1)
        row.update(
            success_rate=float(fooled.mean()) if n else float("nan"),
            linf_max=float(delta.abs().max()) if n else 0.0,
            in_range=bool(n == 0 or (xa.min() >= 0 and xa.max() <= 1)),
            median_l2=float(delta.norm(dim=1).median()) if n else float("nan"),
            median_linf=float(delta.abs().amax(dim=1).median()) if n else float("nan"),
            **_detection(s, clean_scores, a_thr, fooled),
        )
        if shipped is not None:
            ds = defence_score(to_uint8(xa)) if n else np.zeros(0)
            row["defence"] = _detection(ds, defence_clean, shipped.threshold, fooled)
            s = ds  # the report's score histogram shows what ships
        attack_rows[name] = row
        adv_store[name] = (xa, la, s)

    def safe(fn):
        try:
            return fn(), None
        except AttackError as err:
            return None, str(err).splitlines()[0]

    steps = 10
    eps_list = list(EPS_REPORT)
    if n:
        zero_share = attacks.zero_gradient_share(lm, xf, ones)
        for eps in eps_list:
            xa, err = safe(lambda eps=eps: attacks.fgsm(lm, xf, ones, eps))
            record(f"fgsm@{eps_label(eps)}", "fgsm", eps, xa, err)
            xa, err = safe(lambda eps=eps: attacks.pgd(lm, xf, ones, eps, steps=steps, generator=gen()))
            record(f"pgd@{eps_label(eps)}", "pgd", eps, xa, err, steps=steps, restarts=1)
        e4 = 4 / 255
        xa, err = safe(lambda: attacks.pgd(lm, xf, ones, e4, steps=2 * steps, generator=gen()))
        record("pgd20@4/255", "pgd_steps", e4, xa, err, steps=2 * steps, restarts=1)
        restarts = 2 if quick else 3
        xa, err = safe(lambda: attacks.pgd(lm, xf, ones, e4, steps=steps, restarts=restarts, generator=gen()))
        record(f"pgd_r{restarts}@4/255", "pgd_restarts", e4, xa, err, steps=steps, restarts=restarts)
        xa, err = safe(lambda: attacks.pgd(lm, xf, ones, 1.0, steps=2 * steps, alpha=0.05, generator=gen()))
        record("pgd@unbounded", "pgd_unbounded", 1.0, xa, err, steps=2 * steps, restarts=1)
        xa, err = safe(lambda: attacks.deepfool(LogitsOnly(model, z_thr), xf, steps=50))
        record("deepfool", "deepfool", None, xa, err)
        # DeepFool is unbounded (the smallest L2 step over the boundary): its success within an L-inf budget
        # is the share of fakes it fooled with a perturbation inside that ball, comparable with PGD's there.
        df = adv_store["deepfool"][0]
        df_linf = (df - xf).flatten(1).abs().amax(dim=1).numpy()
        df_fooled = adv_store["deepfool"][1] <= z_thr
        attack_rows["deepfool"]["success_within"] = {
            eps_label(e): float((df_fooled & (df_linf <= e + 1e-6)).mean()) for e in (4 / 255, 8 / 255)}  # fmt: skip
        # Adaptive attack on classifier + detector: the shipped defence (BPDA through its squeezers) when
        # the version has one, else the pooled scorer. Run to convergence in result["defence"].
        if shipped is not None:
            det, s_thr, s_clean = TorchDefence(model, scorer, shipped), shipped.threshold, defence_clean
        else:
            det, s_thr, s_clean = WithScore(model, maha), a_thr, clean_scores
        for eps in (4 / 255, 8 / 255):
            xa = attacks.adaptive_attack(det, xf, None, z_thr=z_thr, s_thr=s_thr, z_scale=float(np.std(logits)) or 1.0,
                                         s_scale=float(np.std(s_clean)) or 1.0, eps=eps, steps=2 * steps, gen=gen())  # fmt: skip
            record(f"adaptive@{eps_label(eps)}", "adaptive", eps, xa, None, steps=2 * steps,
                   target="shipped defence (defence.npz)" if shipped is not None else "pooled scorer (scorer.npz)")
    else:
        zero_share = float("nan")

    log.info("white-box attacks done", seconds=round(time.monotonic() - t_start, 1))
    # Decision-based black-box attack through the query function (ONNX Runtime in production).
    bb = hop_skip_jump_evaluation(query, x, y, probs, detected, xf, frame_thr, rng=rng,
                                  images=blackbox_images if blackbox_images is not None else (3 if quick else 8),
                                  budget=blackbox_queries if blackbox_queries is not None else (400 if quick else 1500))  # fmt: skip
    bb_idx = bb.pop("_idx")
    pgd8 = adv_store.get(f"pgd@{eps_label(bb['eps'])}")
    bb["white_box_pgd_same_images"] = float((pgd8[1][bb_idx] <= z_thr).mean()) if (pgd8 and len(bb_idx)) else float("nan")

    # Score-based Square attack through the query function, per frame and per track (issue 17).
    sq_n = square_images if square_images is not None else (16 if quick else 32)
    sq_idx = np.sort(np.random.default_rng(seed + 3).permutation(n)[:sq_n]) if n else np.zeros(0, int)
    sq = square_evaluation(query, x, test.video, test.labels, probs, thresholds, frames=detected[sq_idx],
                           tracks=square_tracks if square_tracks is not None else (2 if quick else 4),
                           n_queries=square_queries, seed=seed, rng=np.random.default_rng(seed + 4),
                           defence=(defence_score, shipped.threshold, shipped.track_threshold) if shipped else None)  # fmt: skip
    pgd4 = adv_store.get("pgd@4/255")
    if "frame" in sq and pgd4 is not None:
        sq["frame"]["white_box_pgd_same_images"] = float((pgd4[1][sq_idx] <= z_thr).mean())

    log.info("query attacks done", seconds=round(time.monotonic() - t_start, 1),
             square={k: v.get("success_rate") for k, v in sq.items() if isinstance(v, dict)})
    # OOD sets against the detector.
    on = ood_n if ood_n is not None else (32 if quick else 200)
    ood: dict[str, Any] = {}
    ood_scores: dict[str, np.ndarray] = {}
    # Gated as served: the quality gate plus the face check of the model's crop detector. In whole-frame
    # mode the worker runs it (quality.face_check "auto"); in face mode the ingest detector ran before
    # the crop existed, so a crop it finds no face in is one face mode would not have cut.
    face_check = face_checker(crop_detector)
    for name, imgs in ood_sets(test.images, n=min(on, len(test)), seed=seed + 2).items():
        _, f = predict(model, as_float_tensor(imgs))
        s = scorer.score(f)
        ood_scores[name] = s
        ood[name] = _detection(s, clean_scores, a_thr)
        flagged = s > a_thr
        if shipped is not None:
            ood_scores[name] = defence_score(imgs)
            ood[name]["defence"] = _detection(ood_scores[name], defence_clean, shipped.threshold)
            flagged = ood_scores[name] > shipped.threshold
        # the target: OOD flagged (by what ships) or gated
        ood[name].update(gated_rates(imgs, flagged, has_face=face_check(imgs)))
        ood[name]["face_check"] = face_check_detector(crop_detector)
    clean["clean_gated_rate"] = gated_rates(test.images, np.zeros(len(test), bool),
                                            has_face=face_check(test.images))["gated_rate"]  # fmt: skip

    result: dict[str, Any] = {
        "clean": clean,
        "attacked_fakes": n,
        "zero_gradient_share": zero_share,
        "attacks": attack_rows,
        "blackbox": bb,
        "square": sq,
        "ood": ood,
        "quick": quick,
        "seed": seed,
        "perturbation_ssim": {
            k: {"ssim_mean": float(v.mean()), "ssim_min": float(v.min())}
            for k, v in ((k, ssim_pairs(xf.numpy(), adv_store[k][0].numpy())) for k in ("pgd@4/255", "pgd@8/255")
                         if k in adv_store and n)
        },
    }
    if generator is not None:
        fid = generator_fidelity(generator, model, test.images[test.labels == 0], logit_thr=z_thr,
                                 n=generator_samples, seed=seed)  # fmt: skip
        result["ssim_generator"] = {k: v for k, v in fid.items() if not k.startswith("_")}
    else:
        result["ssim_generator"] = "skipped: this version has no generator weights (generator.pt)"
        fid = {}
    if defences:  # issue 8: trainer.defence.evaluate_defence
        from trainer.defence import evaluate_defence

        result["defence"] = evaluate_defence(
            model, scorer, defences, test, thresholds, shipped=shipped_defence, query=query, seed=seed, ood_n=on,
            adaptive_frames=adaptive_frames if adaptive_frames is not None else (32 if quick else max_fakes),
            adaptive_tracks=adaptive_tracks if adaptive_tracks is not None else (8 if quick else None))  # fmt: skip
        log.info("defence evaluated", seconds=round(time.monotonic() - t_start, 1))
    result["sanity"] = sanity_checks(result)
    result["timings"] = {"eval_s": time.monotonic() - t_start}
    result["_figures"] = _figure_data(
        model, lm, x, y, probs, defence_clean if shipped is not None else clean_scores, detected, adv_store,
        ood_scores, attack_rows,
    )
    result["_figures"]["anomaly_score"] = {"name": "shipped second line (defence.npz)" if shipped is not None else
                                           "pooled Mahalanobis score (scorer.npz)",
                                           "threshold": shipped.threshold if shipped is not None else a_thr}  # fmt: skip
    if fid:
        result["_figures"]["generator_ssim"] = {"ssim": fid["_ssim"], "examples": fid["_examples"]}
    return result


def _figure_data(
    model, lm, x, y, probs, clean_scores, detected, adv_store, ood_scores, rows
) -> dict[str, Any]:
    """Arrays for the report's figures (not part of metrics.json)."""
    from sklearn.metrics import roc_curve

    figs: dict[str, Any] = {"clean_scores": clean_scores, "ood_scores": ood_scores, "adv_scores": {}}
    if len(np.unique(y)) == 2:
        fpr, tpr, _ = roc_curve(y, probs)
        figs["roc"] = {"fpr": fpr, "tpr": tpr}
    for name in ("pgd@4/255", "pgd@8/255", "adaptive@8/255", "deepfool"):
        if name in adv_store:
            figs["adv_scores"][name] = adv_store[name][2]
    k = min(6, len(detected))
    key = "pgd@8/255" if "pgd@8/255" in adv_store else None
    if k and key:
        xa, la, sa = adv_store[key]
        cl, _ = predict(model, x[detected[:k]])
        figs["samples"] = {
            "attack": key,
            "clean": x[detected[:k]].numpy(), "adv": xa[:k].numpy(),
            "clean_prob": sigmoid(cl), "adv_prob": sigmoid(la[:k]),
            "clean_score": clean_scores[detected[:k]], "adv_score": sa[:k],
        }  # fmt: skip
        xs = x[detected[:k]].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(lm(xs).sum(), xs)
        figs["saliency"] = {"images": x[detected[:k]].numpy(), "grad": g.abs().amax(dim=1).numpy()}
        if isinstance(getattr(model, "blocks", None), nn.ModuleList):  # a Discriminator: Grad-CAM too
            from trainer.saliency import grad_cam, region_shares

            cam = grad_cam(model, x[detected[:k]])
            figs["saliency"]["cam"] = cam
            figs["saliency"]["regions"] = [region_shares(c) for c in cam]
    return figs


# ---- loading a registered version --------------------------------------------------------------


def load_test_split(data_dirs, config: dict, cache_dir: str | Path, *, workers: int = 2) -> CropSet:
    """The trainer's held-out test crops: same split shares and seed as recorded in its config."""
    return load_recipe_splits(data_dirs, config, cache_dir, which=("test",), workers=workers)["test"]


def _subset(cs: CropSet, frac: float, seed: int) -> CropSet:
    """A random share of the test videos (all their crops), for quick runs."""
    keep_v = np.random.default_rng(seed).permutation(len(cs.videos))[: max(2, round(frac * len(cs.videos)))]
    mask = np.isin(cs.video, keep_v)
    return CropSet(cs.images[mask], cs.labels[mask], cs.video[mask], cs.frame_index[mask], cs.videos)


def evaluate(models_dir, version, data_dirs, *, out_dir=None, seed: int = 0, max_fakes: int = 200,
             quick: bool = False, cache_dir=None, video_share: float = 1.0, **kwargs) -> dict[str, Any]:  # fmt: skip
    """Evaluate a registered version on its held-out test split; write the report to ``out_dir`` if given.

    ``cache_dir`` defaults to the crop cache in the version's training config. ``video_share`` < 1
    evaluates a random share of the test videos. Extra keyword arguments go to :func:`run_evaluation`.
    Returns the result dict (``_figures`` holds arrays for the report; everything else is JSON).
    """
    from forensics.runtime import OnnxDiscriminator

    art = Registry(models_dir).load(version)
    meta, config = version_recipe(art)
    test = load_test_split(data_dirs, config, cache_dir or config.get("cache_dir", ".forensics/crops"))
    if video_share < 1:
        test = _subset(test, video_share, seed)
    if quick:
        max_fakes = min(max_fakes, 48)
    model = load_discriminator(art.path / "discriminator.pt")
    if (art.path / "generator.pt").exists():
        kwargs.setdefault("generator", load_generator(art.path / "generator.pt"))
    if "defence.npz" in art.manifest["files"]:
        from forensics.defence import Defence

        kwargs.setdefault("defences", {"shipped (defence.npz)": Defence.load(art.path / "defence.npz")})
        kwargs.setdefault("shipped_defence", "shipped (defence.npz)")
    onnx = OnnxDiscriminator(art.model_path, intra_op_threads=1)
    scorer = MahalanobisScorer.load(art.scorer_path)
    kwargs.setdefault("crop_detector", art.manifest.get("preprocessing", {}).get("crop", {}).get("detector"))
    result = run_evaluation(model, lambda xs: onnx.run_float(xs).logits, scorer, art.manifest["thresholds"], test,
                            seed=seed, max_fakes=max_fakes, quick=quick, **kwargs)  # fmt: skip
    result["version"] = art.version
    result["data"] = [str(d) for d in data_dirs]
    result["model_sha256"] = art.sha256
    if out_dir is not None:
        from trainer.report import write_report

        result["report"] = str(write_report(result, meta.get("history", []), out_dir))
    return result


SQUARE_SUMMARY = ("attacked", "success_rate", "median_queries", "fooled_and_undetected")


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """Headline numbers for the CLI (detection numbers: the shipped defence's when the version has one)."""
    rows = result["attacks"]
    d = result.get("defence") or {}
    return {
        "version": result.get("version"),
        "clean_frame_auc": result["clean"]["frame_auc"],
        "clean_video_auc": result["clean"]["video_auc"],
        "frame_accuracy": result["clean"]["frame_accuracy"],
        "attacked_fakes": result["attacked_fakes"],
        "success": {k: v["success_rate"] for k, v in rows.items()},
        "deepfool_median_l2": rows.get("deepfool", {}).get("median_l2"),
        "deepfool_median_linf": rows.get("deepfool", {}).get("median_linf"),
        "deepfool_success_within": rows.get("deepfool", {}).get("success_within"),
        "blackbox": {
            k: result["blackbox"][k]
            for k in ("success_rate", "median_linf", "median_l2", "median_queries", "images")
        },
        "square": {part: {k: v for k, v in row.items() if k in SQUARE_SUMMARY}
                   for part, row in (result.get("square") or {}).items() if isinstance(row, dict)},
        "adaptive_fooled_and_undetected": {
            k: detection(v).get("fooled_and_undetected") for k, v in rows.items() if v["family"] == "adaptive"
        },
        "adaptive_converged": {part: {k: d[part][k] for k in ("combined_success", "steps", "converged", "attacked")}
                               for part in ("adaptive_frame", "adaptive_track") if part in d},
        "anomaly_detection_rate": {k: detection(v)["detection_rate"] for k, v in rows.items()},
        "ood_detection_rate": {k: detection(v)["detection_rate"] for k, v in result["ood"].items()},
        "ood_flagged_or_gated": {k: v.get("flagged_or_gated_rate") for k, v in result["ood"].items()},
        "clean_gated_rate": result["clean"].get("clean_gated_rate"),
        "sanity_failed": [c["name"] for c in result["sanity"] if not c["passed"]],
        "generator_ssim": {k: v for k, v in result["ssim_generator"].items() if k in ("clean", "adversarial")}
        if isinstance(result.get("ssim_generator"), dict) else result.get("ssim_generator"),
        "perturbation_ssim": result.get("perturbation_ssim"),
        "report": result.get("report"),
    }
