"""Training verbs: ``synth``, ``train``, ``eval``, ``retrain``, ``trainer``. They need the ``train``
extra; without it they end in one line saying so (see :func:`forensics.cli.main`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from forensics.cli.stop import stop_event
from forensics.config import Settings
from forensics.errors import ConfigError
from trainer.recipe import AUGMENTS, TrainConfig

# The recipe's defaults come from TrainConfig alone (the CLI used to disagree with it).
RECIPE = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}


def cmd_synth(args: argparse.Namespace, settings: Settings) -> int:
    from trainer.synth import generate_dataset

    out = generate_dataset(
        args.out,
        args.videos,
        seed=args.seed,
        width=args.width,
        height=args.height,
        fps=args.fps,
        seconds=args.seconds,
        difficulty=args.difficulty,
        parts=args.parts,
    )
    print(out)
    return 0


def _pixel_eps(text: str) -> float:
    """'4/255' or '0.0157' -> float."""
    try:
        if "/" in text:
            a, b = text.split("/", 1)
            return float(a) / float(b)
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a radius like 4/255 or 0.0157") from None


def _objective(args: argparse.Namespace) -> str:
    """--adv-objective, else the legacy --adv-mode's (pgd, fgsm: fgsm-rs), else the recipe's default."""
    if args.adv_objective:
        return args.adv_objective
    return {"pgd": "pgd", "fgsm": "fgsm-rs"}.get(args.adv_mode or "", RECIPE["adv_objective"])


def train_config(args: argparse.Namespace, settings: Settings) -> TrainConfig:
    """The run's recipe from ``forensics train``'s options."""
    if not args.data and not args.real_only:
        raise ConfigError("train needs --data DIR (labelled DFDC-format video) or --real-only DIR (real footage)")
    resnet = args.arch == "resnet"
    return TrainConfig(
        data=[str(d) for d in args.data or []],
        real_only=[str(d) for d in args.real_only or []],
        test_data=[str(d) for d in args.test_data or []],
        max_minutes=args.max_minutes,
        fakes=args.fakes or ("self-blended" if not args.data else "labelled"),
        arch=args.arch,
        width=args.width,
        augment=args.augment,
        crop_size=args.crop_size,
        train_frames=args.train_frames,
        eval_subset=args.eval_subset,
        gen_weight=args.gen_weight,
        # A BatchNorm classifier takes a larger step than the GAN recipe's discriminator.
        lr=args.lr if args.lr is not None else (1e-3 if resnet else RECIPE["lr"]),
        adv_lr=args.lr / 2 if args.lr is not None else (5e-4 if resnet else RECIPE["adv_lr"]),
        pgd_train_steps=args.pgd_steps,
        image_size=args.size,
        frames_per_video=args.frames,
        gan_epochs=args.gan_epochs,
        adv_epochs=args.adv_epochs,
        batch_size=args.batch_size,
        adv_objective=_objective(args),
        adv_mix=args.adv_mix,
        adv_beta=args.adv_beta,
        grad_align=args.grad_align,
        adv_time_s=args.adv_time,
        adv_clock=args.adv_clock,
        eps_schedule=args.eps_schedule,
        eps_ramp=args.eps_ramp,
        eps=args.eps,
        defence=args.defence,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        resume=args.resume,
        promote=args.promote,
        evaluate=not args.no_eval,
        progress=not args.no_progress,
        run_dir=str(settings.state_dir / "train"),
        cache_dir=str(settings.state_dir / "crops"),
        models_dir=str(settings.models_dir),
    )


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from trainer.train import train

    out = train(train_config(args, settings))
    if out:
        adv = out["metrics"]["adversarially_trained"]
        summary = {
            "version": out["version"],
            "promoted": out["promoted"],
            "clean_video_auc": adv["clean_video_auc"],
            "clean_frame_auc": adv["clean_frame_auc"],
            "pgd_success": {k: v["success_rate"] for k, v in adv["pgd"].items()},
            "standard_pgd_success": {k: v["success_rate"] for k, v in out["metrics"]["standard"]["pgd"].items()},
            # flagged by the shipped defence or gated, per set (by_set, the parts, stays in metrics.json)
            "ood_detection": {k: v for k, v in out["metrics"]["ood_detection"].items() if k != "by_set"},
            "anomaly_on_pgd": adv.get("anomaly_on_pgd"),
            "skipped_videos": out["manifest"].get("provenance", {}).get("skipped_videos"),
            "trained_on": out["manifest"].get("provenance"),
        }
        print(json.dumps(summary, indent=1))
    return 0


def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    from trainer.evaluate import evaluate, summary

    models = Path(args.models) if args.models else settings.models_dir
    out = Path(args.out) if args.out else models / args.model / "report" / "eval"
    extra = {k: getattr(args, k) for k in ("blackbox_images", "blackbox_queries", "square_images", "square_tracks",
                                           "square_queries", "adaptive_frames", "adaptive_tracks")
             if getattr(args, k) is not None}  # fmt: skip
    result = evaluate(
        models, args.model, [str(d) for d in args.data], out_dir=out, seed=args.seed, max_fakes=args.max_fakes,
        quick=args.quick, cache_dir=args.cache or str(settings.state_dir / "crops"), **extra,
    )  # fmt: skip
    print(json.dumps(summary(result), indent=1, default=str))
    return 0


def _print_run(record: dict) -> None:
    screen = record.get("screen", {})
    gate = record.get("gate", {})
    summary = {
        "run_id": record["run_id"], "decision": record["decision"], "reason": record.get("reason"),
        "current": record.get("current"), "candidate": record.get("candidate"),
        "screen": {k: screen.get(k) for k in ("samples_in", "accepted", "quarantined", "capped")},
        "gate": {m: {k: gate[m].get(k) for k in ("clean_frame_auc", "attack_success_rate")}
                 for m in ("current", "candidate") if m in gate},
    }  # fmt: skip
    print(json.dumps(summary, indent=1, default=str))


def cmd_retrain(args: argparse.Namespace, settings: Settings) -> int:
    if not args.now:
        raise ConfigError("retraining runs on a schedule with `forensics trainer`; add --now for one run now")
    from forensics.redisconn import redis_for
    from trainer.retrain import run_retrain

    with redis_for(settings) as (r, _url):
        _print_run(run_retrain(settings, r, trigger="manual"))
    return 0


def cmd_trainer(args: argparse.Namespace, settings: Settings) -> int:
    from forensics.redisconn import redis_for
    from trainer.schedule import Scheduler

    stop = stop_event()
    with redis_for(settings) as (r, _url):
        Scheduler(settings, r).run(stop)
    return 0


def add_parsers(sub) -> None:
    s = sub.add_parser("synth", help="write a synthetic DFDC-format dataset (REAL clips and face-swapped FAKEs)")
    s.add_argument("--out", required=True, type=Path, metavar="DIR")
    s.add_argument("--videos", type=int, default=8, help="total clips, REAL and FAKE")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--width", type=int, default=320)
    s.add_argument("--height", type=int, default=240)
    s.add_argument("--fps", type=int, default=15)
    s.add_argument("--seconds", type=float, default=2.0)
    s.add_argument("--difficulty", type=float, default=0.5, help="0 obvious swaps .. 1 subtle swaps")
    s.add_argument("--parts", type=int, default=1, help="number of dfdc_train_part_K folders")
    s.set_defaults(func=cmd_synth, role="synth", needs_train=True)

    s = sub.add_parser("train", help="train, calibrate, export and register a model from DFDC-format data")
    s.add_argument("--data", action="append", type=Path, metavar="DIR", help="labelled DFDC-format data (repeatable)")
    s.add_argument("--real-only", nargs="+", type=Path, metavar="DIR",
                   help="folders of real footage alone (every video REAL); fakes are self-blended")
    s.add_argument("--test-data", nargs="+", type=Path, metavar="PART",
                   help="test on these labelled parts (e.g. another dataset; videos sharing an original with "
                        "--data are left out); --data is then split into train and validation only")
    s.add_argument("--max-minutes", type=float, default=RECIPE["max_minutes"],
                   help="wall-time cap: training stops at the last epoch boundary that fits (the clean phase ends "
                        "early to keep the PGD epochs), then calibrates, exports and registers as usual (0: no cap)")
    s.add_argument("--fakes", choices=["labelled", "self-blended", "both"],
                   help="fake source: labelled FAKE videos, self-blended fakes of the real faces, or both "
                        "(default: labelled; self-blended with --real-only alone)")
    s.add_argument("--arch", choices=["dcgan", "resnet"], default=RECIPE["arch"],
                   help="detector: spectral-norm DCGAN discriminator or a small from-scratch ResNet")
    s.add_argument("--width", type=int, default=RECIPE["width"],
                   help="detector capacity: first-stage channels, doubling per stage (0: 32 dcgan, 16 resnet)")
    s.add_argument("--augment", choices=AUGMENTS, default=RECIPE["augment"],
                   help="flip: mirror only; basic: + rotation and scale; strong: + JPEG, resize, blur, colour, cut-out")
    s.add_argument("--crop-size", type=int, help="cache crops at this size (default --size); e.g. 256 to share one cache")
    s.add_argument("--train-frames", type=int, default=RECIPE["train_frames"],
                   help="at most this many crops per training video (0: all)")
    s.add_argument("--eval-subset", type=int, default=RECIPE["eval_subset"],
                   help="crops attacked per epoch and at the end (PGD curves)")
    s.add_argument("--gen-weight", type=float, default=RECIPE["gen_weight"],
                   help="weight of DCGAN generator samples among fakes (0: off)")
    s.add_argument("--lr", type=float, help="learning rate (default 2e-4 dcgan, 1e-3 resnet; half in the adversarial phase)")
    s.add_argument("--pgd-steps", type=int, default=RECIPE["pgd_train_steps"], help="PGD steps per adversarial training example")
    s.add_argument("--size", type=int, default=RECIPE["image_size"], help="input size S (64, 128, 256)")
    s.add_argument("--frames", type=int, default=RECIPE["frames_per_video"], help="face crops taken from this many frames per video")
    s.add_argument("--gan-epochs", type=int, default=RECIPE["gan_epochs"])
    s.add_argument("--adv-epochs", type=int, default=RECIPE["adv_epochs"])
    s.add_argument("--batch-size", type=int, default=RECIPE["batch_size"])
    s.add_argument("--adv-objective", choices=["pgd", "trades", "mart", "fgsm-rs"], default=None,
                   help=f"adversarial-phase objective: PGD-AT, TRADES, MART, or FGSM with random start (default "
                        f"{RECIPE['adv_objective']}: README, Adversarial training)")
    s.add_argument("--adv-mode", choices=["pgd", "fgsm"], default=None,
                   help="legacy: pgd = --adv-objective pgd, fgsm = --adv-objective fgsm-rs")
    s.add_argument("--adv-mix", type=float, default=RECIPE["adv_mix"],
                   help="share of each batch made adversarial (pgd, fgsm-rs; 1: Madry's all-adversarial)")
    s.add_argument("--adv-beta", type=float, default=RECIPE["adv_beta"], help="weight of the KL term (trades, mart)")
    s.add_argument("--grad-align", type=float, default=RECIPE["grad_align"], help="GradAlign weight for fgsm-rs (0: off)")
    s.add_argument("--adv-time", type=float, default=RECIPE["adv_time_s"], metavar="SECONDS",
                   help="adversarial phase's training-time budget (0: --adv-epochs decides; else that is a cap)")
    s.add_argument("--adv-clock", choices=["wall", "cpu"], default=RECIPE["adv_clock"],
                   help="clock of --adv-time: wall, or this process's CPU seconds (equal compute on a shared machine)")
    s.add_argument("--eps-schedule", choices=["steps", "ramp", "constant"], default=RECIPE["eps_schedule"],
                   help="training radius over the adversarial phase")
    s.add_argument("--eps-ramp", type=float, default=RECIPE["eps_ramp"], help="ramp: share of the phase to reach --eps")
    s.add_argument("--eps", type=_pixel_eps, default=RECIPE["eps"], help="final adversarial training radius, e.g. 6/255")
    s.add_argument("--defence", default=RECIPE["defence"],
                   help="second line shipped in defence.npz: a name of trainer.defence.CANDIDATES, e.g. "
                        "channel+median3 (default, 1 extra model pass) or channel+squeeze (4)")  # fmt: skip
    s.add_argument("--seed", type=int, default=RECIPE["seed"])
    s.add_argument("--device", choices=["cpu", "cuda"], default=RECIPE["device"])
    s.add_argument("--threads", type=int, default=RECIPE["threads"], help="torch threads (0: default)")
    s.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    s.add_argument("--promote", action="store_true", help="promote the new version (the first one always is)")
    s.add_argument("--no-progress", action="store_true")
    s.add_argument("--no-eval", action="store_true", help="skip the quick robustness report at the end")
    s.set_defaults(func=cmd_train, role="trainer", needs_train=True)

    s = sub.add_parser("eval", help="robustness evaluation of a model version on its held-out test split (report)")
    s.add_argument("--model", required=True, metavar="VERSION")
    s.add_argument("--data", required=True, action="append", type=Path, metavar="DIR", help="repeatable")
    s.add_argument("--out", metavar="DIR", help="default: <models>/<version>/report/eval/")
    s.add_argument("--models", metavar="DIR", help="model registry (default: from settings)")
    s.add_argument("--cache", metavar="DIR", help="face crop cache (default: <state_dir>/crops)")
    s.add_argument("--quick", action="store_true", help="small subsets: fewer fakes, queries and OOD crops")
    s.add_argument("--max-fakes", type=int, default=200, help="correctly detected test fakes attacked")
    s.add_argument("--blackbox-images", type=int, help="images for the black-box attack")
    s.add_argument("--blackbox-queries", type=int, help="query budget per image for the black-box attack")
    s.add_argument("--square-images", type=int, help="detected fakes for the Square attack (default 32, quick 16)")
    s.add_argument("--square-tracks", type=int, help="fake videos for the per-track Square attack (default 4, quick 2)")
    s.add_argument("--square-queries", type=int, help="Square query budget per crop (default 5000)")
    s.add_argument("--adaptive-frames", type=int, help="detected fakes for the converged adaptive attack "
                   "(default --max-fakes, quick 32)")
    s.add_argument("--adaptive-tracks", type=int, help="fake videos for the per-track adaptive attack (default all, quick 8)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_eval, role="eval", needs_train=True)

    s = sub.add_parser("retrain", help="one retraining run: intake, poisoning screen, candidate, gate")
    s.add_argument("--now", action="store_true", help="run now (the schedule is `forensics trainer`)")
    s.set_defaults(func=cmd_retrain, role="trainer", needs_train=True)

    s = sub.add_parser("trainer", help="scheduled retraining (retrain.interval_s or retrain.cron)")
    s.set_defaults(func=cmd_trainer, role="trainer", needs_train=True)
