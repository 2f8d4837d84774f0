"""Speed benchmarks: one command, a printed table, JSON out.

    python benchmarks/run.py                 # every suite
    python benchmarks/run.py data --episodes 200 --json benchmarks/results/data.json

Each figure is measured end to end from the command line, start-up included, the way a user
runs it. Suites: data (record, prepare at 64x64 and from 90x160 sources); train (frames/s of
the real training step of the tokenizer, LAM and dynamics in fp32 and bf16, its FLOPs counted
with torch's FlopCounterMode, attention included (flops.py), as a fraction of this machine's
measured matrix-product rates; the dynamics with cached and on-the-fly tokens); world (ms per
generated frame at a full context with the KV caches on and off, FLOPs per frame, batched
action previews, for a MaskGIT and a DiT world, the first also under bf16 autocast); play (the
play loop headless, previews on and off: frame rate and key-to-frame latency, the fastest
player also in bf16); eval (`genie eval world` at its defaults, in fp32 and in bf16); loop
(`genie train` of each stage against its bare step: the loop's cost and its wait for data).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def genie(*args: str) -> float:
    """Run `genie ARGS` in a fresh process; returns its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "genie", *args, "--quiet"], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def frames_in(dataset: Path) -> int:
    return json.loads((dataset / "meta.json").read_text())["frames"]


def resize_videos(src: Path, dst: Path, height: int, width: int) -> None:
    """Re-encode recorded episodes at another size, to time prepare on larger sources."""
    from genie.data.video import VideoWriter, read_frames

    dst.mkdir()
    for video in sorted(src.glob("*.mp4")):
        with VideoWriter(dst / video.name) as out:
            for frame in read_frames(video, (height, width)):
                out.write(frame.rgb)


def bench_data(args, work: Path) -> list[dict]:
    raw = work / "raw"
    rows = []
    seconds = genie("data", "record", "coinrun", "--out", str(raw), "--episodes",
                    str(args.episodes), "--seed", "0", "--workers", str(args.workers))
    frames = json.loads((raw / "record.json").read_text())["frames"]
    rows.append({"stage": "record coinrun", "source": "procgen", "output": "64x64 mp4",
                 "frames": frames, "seconds": seconds})
    wide = work / "wide"
    resize_videos(raw, wide, 90, 160)
    for source, folder in (("64x64 mp4", raw), ("90x160 mp4", wide)):
        for size in ("64", "90x160"):
            out = work / f"ds_{folder.name}_{size}"
            seconds = genie("data", "prepare", str(folder), "--out", str(out), "--size", size,
                            "--workers", str(args.workers))
            rows.append({"stage": "prepare", "source": source, "output": size,
                         "frames": frames_in(out), "seconds": seconds})
            shutil.rmtree(out)
    for row in rows:
        row["frames_per_s"] = row["frames"] / row["seconds"]
    return rows


def matmul_rate(dtype, shapes=((2048,) * 3, (4096,) * 3), budget_s: float = 20.0) -> float:
    """Best FLOP/s of (m, k) @ (k, n) products; later shapes only while they fit the budget."""
    import torch

    best = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
        start = time.perf_counter()
        a @ b  # warm-up, and a measure of whether the next shape is affordable
        first = time.perf_counter() - start
        reps = max(1, min(50, int(budget_s / 4 / max(first, 1e-6))))
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * m * k * n * reps / (time.perf_counter() - start))
        if first * 8 > budget_s:  # the next size costs 8x: skip it
            break
    return best


def model_matmuls(overrides: list[str] = ()) -> dict[str, tuple[int, int, int]]:
    """Products of each tiny model's batch and width, (tokens in a batch, width) @ (width,
    4 x width), from the preset. Near its MLP's (the SwiGLU up-projection is 5.5 x width), they
    show whether that width alone keeps a step from the large-matrix rate."""
    from genie.config import load_config

    config = load_config("tiny", list(overrides))
    shapes = {}
    for stage in ("tokenizer", "lam", "dynamics"):
        cfg = getattr(config, stage)
        frames = cfg.train.seq_len or config.data.seq_len
        if stage == "dynamics":  # tokens of the tokenizer's grid, clips as long as the context
            frames, patch = min(frames, cfg.context), config.tokenizer.patch
        else:
            patch = cfg.patch
        tokens = cfg.train.batch_size * frames * (64 // patch) ** 2
        shapes[stage] = (tokens, cfg.dim, 4 * cfg.dim)
    return shapes


def bench_train(args, work: Path) -> list[dict]:
    """Each stage's real training step (benchmarks/training.py) in fp32 and bf16 autocast, and
    the dynamics step with tokens from the cache against tokens coded on the fly.

    The fractions of the peak pair each round of steps with products of 2048^3 timed just
    before it (training.step_rate); the peak rows above them are this run's best, for scale.
    """
    import torch
    from training import step_rate

    peaks = {"fp32": matmul_rate(torch.float32), "bf16": matmul_rate(torch.bfloat16)}
    rates = {f"matmul {p} (best of 2048^3, 4096^3)": rate for p, rate in peaks.items()}
    for stage, (m, k, n) in model_matmuls(args.set).items():
        rates[f"matmul bf16 {m}x{k} @ {k}x{n} ({stage} MLP)"] = \
            matmul_rate(torch.bfloat16, [(m, k, n)], budget_s=4.0)
    rows = [{"what": what, "frames_per_s": 0.0, "gflop_per_s": rate / 1e9,
             "of_fp32_peak": rate / peaks["fp32"], "of_bf16_peak": rate / peaks["bf16"]}
            for what, rate in rates.items()]

    def reference() -> dict[str, float]:
        return {p: matmul_rate(dtype, [(2048,) * 3], budget_s=1.6)
                for p, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}

    runs = [(stage, precision, False) for stage in ("tokenizer", "lam", "dynamics")
            for precision in ("fp32", "bf16")] + [("dynamics", "fp32", True)]
    for stage, precision, on_the_fly in runs:
        r = step_rate(stage, precision, on_the_fly=on_the_fly, overrides=args.set,
                      reference=reference)
        source = (", tokens on the fly" if on_the_fly else ", tokens cached") \
            if stage == "dynamics" else ""
        rows.append({"what": f"train {stage} tiny {precision}{source}",
                     "frames_per_s": r["frames_per_s"], "gflop_per_s": r["flop_rate"] / 1e9,
                     "of_fp32_peak": r["of_peak"]["fp32"],
                     "of_bf16_peak": r["of_peak"]["bf16"]})
    return rows


def tiny_world(path: str | None, backend: str | None = None, context: int | None = None,
               precision: str = "fp32"):
    """The world at `path`, or the `tiny` preset's architecture with untrained weights (the
    speed of a step does not depend on what the weights learned), with its dynamics backend
    or `backend`, and its context or `context` frames, run in `precision`."""
    import dataclasses

    import genie
    from genie.config import load_config
    from genie.dynamics import new_model
    from genie.lam.model import LatentActionModel
    from genie.tokenizer.model import VideoTokenizer
    from genie.world import SCHEMA, World

    if path:
        return genie.load(path, device="cpu", precision=precision)
    if backend in (None, "maskgit") and context is None:
        from genie.worlds import DEFAULT_WORLD

        if (DEFAULT_WORLD / "world.json").exists():
            return genie.load(DEFAULT_WORLD, device="cpu", precision=precision)
    config = load_config("tiny", [f"dynamics.backend={backend}"] if backend else [])
    dynamics = dataclasses.replace(config.dynamics, context=context or config.dynamics.context)
    tok = VideoTokenizer(height=64, width=64, window=config.tokenizer.train.seq_len,
                         **config.tokenizer.model_kwargs())
    lam = LatentActionModel(height=64, width=64, **config.lam.model_kwargs())
    dyn = new_model(dynamics.backend, tok, config.lam.num_actions, **dynamics.model_kwargs())
    meta = {"schema": SCHEMA, "backend": dynamics.backend,
            "sampler": {"steps": dynamics.sampler_settings()["steps"]}}
    return World(tok, lam, dyn, meta, precision=precision)


def bench_world(args, work: Path) -> list[dict]:
    """ms per generated frame at a full context, with and without the KV caches, for the MaskGIT
    world and the DiT world side by side; the first world in fp32 and under bf16 autocast
    (`--precision bf16`)."""
    import torch

    # Worlds step in fp32 by default; the bf16 rate is the machine's ceiling, the figure
    # training reports.
    peaks = {"fp32": matmul_rate(torch.float32), "bf16": matmul_rate(torch.bfloat16)}
    # The cache's gain grows with the context (the uncached step recomputes the receptive
    # field, depth * (context - 1) + 1 frames): the tiny architecture at a 16-frame context too.
    return [*world_rows(tiny_world(args.world), peaks),
            *world_rows(tiny_world(args.world, precision="bf16"), peaks),
            *world_rows(tiny_world(None, "maskgit", context=16), peaks, previews=False),
            *world_rows(tiny_world(args.dit_world, "dit"), peaks)]


def world_rows(world, peaks: dict[str, float], previews: bool = True) -> list[dict]:
    import numpy as np
    from flops import flop_counter

    h, w = world.size
    prompt = np.random.default_rng(0).integers(0, 256, (world.context, h, w, 3), np.uint8)
    backend = f"{world.meta['backend']} ({world.sampler.settings.steps} steps, " \
        f"{world.precision})"
    rows = []
    for cached in (True, False):
        world.sampler.settings.use_cache = cached
        world.reset(prompt, seed=0)
        world.step(0)  # warm-up
        with flop_counter() as counter:
            world.step(1)
        frames = 8 if cached else 3
        start = time.perf_counter()
        world.rollout([i % world.num_actions for i in range(frames)])
        ms = (time.perf_counter() - start) / frames * 1e3
        flops = counter.get_total_flops()
        rows.append({"what": f"world step, {'cached' if cached else 'uncached'}",
                     "backend": backend, "context": world.context, "ms_per_frame": ms,
                     "frames_per_s": 1e3 / ms, "gflop_per_frame": flops / 1e9,
                     "of_fp32_peak": flops / (ms / 1e3) / peaks["fp32"],
                     "of_bf16_peak": flops / (ms / 1e3) / peaks["bf16"]})
    world.sampler.settings.use_cache = True
    if not previews:
        return rows
    world.reset(prompt, seed=0)
    start = time.perf_counter()
    for _ in range(3):
        world.preview()
    ms = (time.perf_counter() - start) / 3 * 1e3
    rows.append({"what": f"previews of all {world.num_actions} actions (batched)",
                 "backend": backend, "context": world.context, "ms_per_frame": ms,
                 "frames_per_s": 1e3 / ms, "gflop_per_frame": 0.0, "of_fp32_peak": 0.0,
                 "of_bf16_peak": 0.0})
    return rows


def bench_play(args, work: Path) -> list[dict]:
    """The play loop (SDL dummy driver) with previews on and off, for three kinds of player.

    It runs in a fresh process. After the world suite had stepped a world on this process's
    main thread, the play loop's world thread took 136 ms a frame against 69 ms alone: torch
    work done earlier on another thread slows it. A `genie play` session, whose main thread
    only loads the world, does not pay that.
    """
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(play_rows, args.world, work).result()


def play_rows(world_path: str | None, work: Path) -> list[dict]:
    """Each player in fp32, then the first under bf16 autocast (`--precision bf16`)."""
    import numpy as np

    os.environ["SDL_VIDEODRIVER"] = "dummy"
    import pygame

    from genie.play.app import App, Prompt

    worlds = {p: tiny_world(world_path, precision=p) for p in ("fp32", "bf16")}
    world = worlds["fp32"]
    h, w = world.size
    prompt = np.random.default_rng(0).integers(0, 256, (world.context, h, w, 3), np.uint8)
    rng = np.random.default_rng(0)
    taps = rng.uniform(0.1, 0.8, 20)  # seconds between key presses of an irregular player
    players = [("keys as fast as frames come", None, 40, "fp32"),
               ("one key every 0.25 s", 4.0, 20, "fp32"),
               ("irregular taps, 0.1-0.8 s apart", "taps", len(taps), "fp32"),
               ("keys as fast as frames come", None, 40, "bf16")]
    rows = []
    for name, pace, steps, precision in players:
        world = worlds[precision]
        for previews in (False, True):
            script = None if pace == "taps" else [i % world.num_actions for i in range(steps)]
            app = App(world, [Prompt("", lambda: prompt)], previews=previews, script=script,
                      fps_cap=None if pace == "taps" else pace, capture_dir=work).open()
            while app.frame is None:
                app.tick()
            if pace == "taps":  # real key events, as a keyboard would post them
                next_tap, done = time.perf_counter(), 0
                while len(app.compute_ms) < steps:
                    if done < steps and time.perf_counter() >= next_tap:
                        key = pygame.K_1 + done % min(world.num_actions, 8)
                        pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=key, mod=0))
                        pygame.event.post(pygame.event.Event(pygame.KEYUP, key=key, mod=0))
                        next_tap += taps[done]
                        done += 1
                    app.tick()
                app.close()
                summary = app.summary()
            else:
                summary = app.run()
            lat = np.array(app.latency_ms)
            rows.append({"player": name, "precision": precision,
                         "previews": "on" if previews else "off",
                         "frames": summary.frames, "fps": summary.fps,
                         "ms_per_frame": summary.compute_ms, "latency_ms": float(lat.mean()),
                         "latency_p95_ms": float(np.percentile(lat, 95)),
                         "preview_batches": summary.previews})
    return rows


SUITES = {"data": bench_data, "train": bench_train, "world": bench_world, "play": bench_play}


def bench_eval(args, work: Path) -> list[dict]:
    """`genie eval world` at its defaults on the shipped world: 64 clips x 16 horizons rolled
    out with inferred and random actions, then 4 drift rollouts of 256 frames. Clips/s of the
    prediction part, each part's seconds, and their FLOP rates against the machine's product
    rates; in fp32 (the default) and under bf16 autocast (`--precision bf16`)."""
    import dataclasses

    import torch
    from flops import flop_counter

    from genie.eval.clips import real_stretches, select_clips
    from genie.eval.drift import measure_drift
    from genie.eval.world import TokenizedWorld, score_horizons

    raw, data = work / "raw", work / "ds"
    genie("data", "record", "coinrun", "--out", str(raw), "--episodes", "16", "--max-steps",
          "300", "--seed", "0", "--workers", str(args.workers))
    genie("data", "prepare", str(raw), "--out", str(data), "--val-fraction", "0.25",
          "--workers", str(args.workers))
    peaks = {"fp32": matmul_rate(torch.float32), "bf16": matmul_rate(torch.bfloat16)}
    worlds = {p: TokenizedWorld(tiny_world(args.world, precision=p), batch=32)
              for p in ("fp32", "bf16")}
    context, horizon = min(4, worlds["fp32"].context), 16
    clips = select_clips(data, "val", context + horizon, 64, seed=0)
    stretches = real_stretches(data, "val", context + 256, max_frames=2048)

    def predict(world, some):
        score_horizons(world, some, context, horizon, seed=0, batch=32, progress=False)

    def drift(world):
        measure_drift(world, clips.frames[:4, :context], stretches, context, 256, seed=0,
                      batch=32, progress=False)

    # Every clip costs the same FLOPs, so 4 counted clips give the 64; drift is counted whole.
    # The count is the same in either precision.
    few = dataclasses.replace(clips, frames=clips.frames[:4], actions=clips.actions[:4])
    with flop_counter() as counter:
        predict(worlds["fp32"], few)
    predict_flops = counter.get_total_flops() * len(clips) / len(few)
    with flop_counter() as counter:
        drift(worlds["fp32"])
    drift_flops = counter.get_total_flops()

    def row(what, seconds, flops, frames, clips_done):
        return {"what": what, "seconds": seconds, "clips_per_s": clips_done / seconds,
                "ms_per_generated_frame": seconds / frames * 1e3,
                "gflop_per_s": flops / seconds / 1e9,
                "of_fp32_peak": flops / seconds / peaks["fp32"],
                "of_bf16_peak": flops / seconds / peaks["bf16"]}

    parts = [(f"{len(clips)} clips x {horizon} horizons (inferred, random, ceiling)",
              lambda world: predict(world, clips), predict_flops, 2 * len(clips) * horizon,
              len(clips)),
             ("drift: 4 rollouts x 256 frames, real range", drift, drift_flops, 4 * 256, 4)]
    rows = []
    for precision, world in worlds.items():
        done = []
        for what, run, flops, frames, n in parts:
            start = time.perf_counter()
            run(world)
            done.append(row(f"{precision}: {what}", time.perf_counter() - start, flops, frames, n))
        done.append(row(f"{precision}: both", sum(r["seconds"] for r in done),
                        predict_flops + drift_flops, sum(p[3] for p in parts), len(clips)))
        rows += done
    return rows


SUITES["eval"] = bench_eval


def bench_loop(args, work: Path) -> list[dict]:
    """`genie train` itself for each stage, the loop around the step included (loader, clipping,
    optimizer, schedule, logging), against the bare step of the train suite timed in this
    process just before and after it: what the loop costs, the share of its time spent
    waiting for data (training.json's data_seconds), and the loop's FLOP rate (the bare step's
    FLOPs per frame at the loop's frames/s) against bf16 products of 2048^3 timed before and
    after. Checkpoints and samples, every 500 steps in the preset, do not fall in these few
    steps. The dataset was just written, so its pages are in the OS's cache, as they are after
    a run's first epoch."""
    import torch
    from training import step_rate

    from genie.train.compute import pick_precision
    from genie.worlds import DEFAULT_WORLD

    raw, data = work / "raw", work / "ds"
    genie("data", "record", "coinrun", "--out", str(raw), "--episodes", "40", "--seed", "0",
          "--workers", str(args.workers))
    genie("data", "prepare", str(raw), "--out", str(data), "--workers", str(args.workers))
    world = Path(args.world or DEFAULT_WORLD)
    rows = []
    for stage in ("tokenizer", "lam", "dynamics"):
        out = work / f"run_{stage}"
        extra = ["--tokenizer", str(world / "tokenizer"), "--lam", str(world / "lam")] \
            if stage == "dynamics" else []
        precision = pick_precision("auto", torch.device("cpu"))  # what the preset picks
        # The bare step and the product rate are timed before and after the run, as this
        # machine's speed drifts.
        peak = matmul_rate(torch.bfloat16, [(2048,) * 3], budget_s=1.6)
        before = step_rate(stage, precision, rounds=5, overrides=args.set)
        subprocess.run([sys.executable, "-m", "genie", "train", stage, "--data", str(data),
                        "--out", str(out), *extra, f"{stage}.train.steps={args.loop_steps}",
                        *args.set], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        after = step_rate(stage, precision, rounds=5, overrides=args.set)
        peak = (peak + matmul_rate(torch.bfloat16, [(2048,) * 3], budget_s=1.6)) / 2
        trained = json.loads((out / "model" / "training.json").read_text())
        bare = (before["frames_per_s"] + after["frames_per_s"]) / 2
        loop = trained["frames"] / trained["seconds"]
        flops_per_frame = before["flops_per_step"] / (before["frames_per_s"]
                                                      * before["seconds_per_step"])
        rows.append({"what": f"genie train {stage} ({trained['steps']} steps, "
                             f"{trained['precision']})",
                     "loop_frames_per_s": loop, "bare_before": before["frames_per_s"],
                     "bare_after": after["frames_per_s"], "of_bare_step": loop / bare,
                     "of_data_wait": trained["data_seconds"] / trained["seconds"],
                     "of_bf16_peak": loop * flops_per_frame / peak})
    return rows


SUITES["loop"] = bench_loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suites", nargs="*", help=f"any of {', '.join(SUITES)} (default: all)")
    parser.add_argument("--episodes", type=int, default=200, help="CoinRun episodes to record")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--world", help="world folder for the world, play and eval suites "
                        "(default: the shipped world)")
    parser.add_argument("--dit-world", help="DiT world folder for the world suite, beside "
                        "--world (default: the tiny preset as a DiT, untrained)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override the tiny preset in the train suite (repeatable), e.g. "
                        "--set lam.dim=96 --set lam.encoder_depth=2")
    parser.add_argument("--loop-steps", type=int, default=150,
                        help="steps of each `genie train` in the loop suite")
    parser.add_argument("--json", default="benchmarks/results/benchmarks.json")
    args = parser.parse_args()
    unknown = set(args.suites) - set(SUITES)
    if unknown:
        parser.error(f"unknown suite {', '.join(sorted(unknown))}: choose from {', '.join(SUITES)}")
    from genie.config import load_config
    from genie.errors import GenieError

    try:
        load_config("tiny", args.set)
    except GenieError as e:
        parser.error(str(e))
    # In-process suites (train, world) run with the allocator settings the genie command uses.
    from genie.malloc import keep_freed_memory

    keep_freed_memory()
    results = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                           "python": platform.python_version()},
               "overrides": args.set, "suites": {}}
    for name in args.suites or SUITES:
        with tempfile.TemporaryDirectory() as tmp:
            results["suites"][name] = SUITES[name](args, Path(tmp))
    for name, rows in results["suites"].items():
        print(f"\n## {name}" + (f" (tiny with {' '.join(args.set)})" if args.set else "") + "\n")
        keys = list(rows[0])
        print("| " + " | ".join(keys) + " |")
        print("|" + "---|" * len(keys))
        for row in rows:
            cells = [f"{v:.1%}" if key.startswith("of_") else f"{v:,.1f}"
                     if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)
                     for key, v in row.items()]
            print("| " + " | ".join(cells) + " |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=1, default=float))
    print(f"\nwritten {args.json}")


if __name__ == "__main__":
    main()
