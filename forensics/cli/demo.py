"""``forensics demo`` (the README's main command): the whole daemon on generated sample data.

1. generate a small synthetic DFDC-format dataset (``trainer.synth``);
2. train, calibrate, export and register a small model (input 64) unless one exists;
3. start the daemon (embedded Redis, one ingest and one detect process, supervised);
4. drop sample REAL and FAKE videos (never seen in training) into the watch folder;
5. print each file's verdict as its alert arrives;
6. print the console's URL (``forensics web``, started with the daemon) and, on a terminal, keep
   everything running until Ctrl-C so the verdicts can be looked at and labelled there.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
from pathlib import Path

from forensics.alerts import follow_alerts
from forensics.config import Settings
from forensics.errors import ForensicsError
from forensics.logs import get_logger
from forensics.redisconn import connect_settings
from forensics.registry import Registry
from forensics.streams import Keys
from forensics.supervisor import Supervisor
from forensics.web.server import console_url, free_console_port, wait_for_console
from trainer.recipe import TrainConfig


def run_demo(settings: Settings, *, videos: int = 240, samples: int = 6, gan_epochs: int = TrainConfig.gan_epochs,
             adv_epochs: int = TrainConfig.adv_epochs, timeout_s: float = 300.0, config: str | None = None,
             serve: bool | None = None) -> int:  # fmt: skip
    """Run the demo; ``serve``: keep the daemon and console up after the verdicts (default: on a terminal)."""
    log = get_logger()
    root = Path(settings.state_dir)
    data = root / "dataset"
    settings.models_dir = Path(settings.models_dir)
    reg = Registry(settings.models_dir)
    t0 = time.monotonic()
    if reg.current() is None:
        from trainer.synth import generate_dataset
        from trainer.train import train

        if not (data / "done").exists():
            print(f"[demo] generating {videos} synthetic DFDC-format videos in {data} ...", flush=True)
            shutil.rmtree(data, ignore_errors=True)
            generate_dataset(data, videos, seed=11)
            (data / "done").touch()
        print("[demo] training a 64px model (GAN phase, then adversarial phase) ...", flush=True)
        out = train(TrainConfig(data=[str(data)], gan_epochs=gan_epochs, adv_epochs=adv_epochs,
                                run_dir=str(root / "train"), cache_dir=str(root / "crops"),
                                models_dir=str(settings.models_dir)))  # fmt: skip
        adv = out["metrics"]["adversarially_trained"]
        print(f"[demo] model {out['version']}: held-out video AUC {adv['clean_video_auc']:.3f}, "
              f"PGD-10 success at 4/255 {adv['pgd'].get('4/255', {}).get('success_rate', float('nan')):.2f}", flush=True)  # fmt: skip
    art = reg.load()
    print(f"[demo] serving model {art.version} (trained in {time.monotonic() - t0:.0f} s)", flush=True)

    watch = root / "watch"
    settings.ingest.watch_dir = watch
    watch.mkdir(parents=True, exist_ok=True)
    web_port = free_console_port(settings.web.host, settings.web.port)
    sup = Supervisor(settings, [("ingest", ["ingest", "--watch", str(watch)]), ("detect", ["detect"]),
                                ("web", ["web", "--port", str(web_port)])],
                     config=config, log_dir=root / "logs")  # fmt: skip
    url = sup.start()
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_quietly, args=(sup, stop), daemon=True)
    watcher.start()
    try:
        status = _drop_and_wait(settings, url, watch, samples, timeout_s)
        console = console_url(settings.web.host, web_port)
        if not wait_for_console(console):
            print(f"[demo] the console did not start: see {root / 'logs' / 'web.log'}", flush=True)
            return 1
        print(f"[demo] console: {console}  (the verdicts above are on its Live alerts page)", flush=True)
        if serve if serve is not None else sys.stdout.isatty():
            print("[demo] press Ctrl-C to stop the demo", flush=True)
            try:
                while watcher.is_alive():
                    watcher.join(1.0)
            except KeyboardInterrupt:
                pass
        return status
    finally:
        stop.set()
        watcher.join(30)
        log.info("demo stopped")


def _watch_quietly(sup: Supervisor, stop: threading.Event) -> None:
    try:
        sup.watch(stop)
    except ForensicsError as err:
        print(f"[demo] {err}", flush=True)


def _drop_and_wait(settings: Settings, url: str, watch: Path, samples: int, timeout_s: float) -> int:
    from trainer.synth import render_sample_clip

    r = connect_settings(settings, url)
    keys = Keys.for_settings(settings)
    start_id = r.xadd(keys.alerts, {"event": json.dumps({"kind": "marker"})})  # read alerts from here on
    staging = watch.parent / "staging"
    staging.mkdir(exist_ok=True)
    expected = {}
    for i in range(samples):
        fake = i % 2 == 1
        name = f"sample_{i:02d}_{'fake' if fake else 'real'}.mp4"
        render_sample_clip(staging / name, fake=fake, seed=1000 + i, seconds=3.0)
        expected[name] = "FAKE" if fake else "REAL"
        (staging / name).rename(watch / name)  # atomic move: ingest never sees half a file
    print(f"[demo] dropped {samples} videos into {watch}; waiting for verdicts ...", flush=True)
    got: dict[str, dict] = {}
    deadline = time.monotonic() + timeout_s
    for _id, ev in follow_alerts(r, keys, since=start_id, block_ms=1000,
                                 until=lambda: len(got) == len(expected) or time.monotonic() > deadline):  # fmt: skip
        if ev["kind"] != "verdict" or ev.get("file") not in expected:
            continue
        got[ev["file"]] = ev
        mark = "ok" if ev["label"] == expected[ev["file"]] else "WRONG"
        score = "-" if ev["score"] is None else f"{ev['score']:.3f}"
        print(f"[verdict] {ev['file']}: {ev['label']} (score {score}, threshold {ev['threshold']:.3f}, "
              f"{ev['faces_scored']} faces, anomaly rate {ev['anomaly_rate']})  expected "
              f"{expected[ev['file']]}: {mark}", flush=True)  # fmt: skip
    right = sum(got[f]["label"] == expected[f] for f in got)
    print(f"[demo] {len(got)}/{len(expected)} verdicts, {right} as expected", flush=True)
    return 0 if len(got) == len(expected) else 1


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    return run_demo(settings, videos=args.videos, samples=args.samples, config=args.config, serve=args.serve)


def add_parsers(sub) -> None:
    s = sub.add_parser("demo", help="generate data, train a small model, run the daemon on sample videos")
    s.add_argument("--videos", type=int, default=240, help="synthetic training videos")
    s.add_argument("--samples", type=int, default=6, help="sample videos dropped into the watch folder")
    s.add_argument("--serve", action=argparse.BooleanOptionalAction, default=None,
                   help="keep the daemon and console running after the verdicts (default: on a terminal)")
    s.set_defaults(func=cmd_demo, role="demo", needs_train=True)
