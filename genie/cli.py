"""The `genie` command.

Only argparse is imported up front: each subcommand imports what it needs when it runs, so
`genie --help` answers at once. Mistakes a user can make raise GenieError, which ends in one line
on stderr and exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from genie.errors import GenieError
from genie.malloc import keep_freed_memory
from genie.plural import plural

SEED_MAX = 2**32 - 1
# Below 0.01 fps a video's rate (kept to 1/1000) and a GIF's frame time (655 s at most) break.
FPS_MIN, FPS_MAX = 0.01, 1000


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line that says where to look, not a usage dump."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _group(sub, name: str, help: str, metavar: str):
    """A command that only holds subcommands (`genie data ...`); returns their adder."""
    parser = sub.add_parser(name, help=help)
    return parser.add_subparsers(dest=f"{name}_command", metavar=metavar, required=True,
                                 parser_class=_Parser)


def _number(convert, ok, wanted: str):
    """An argparse type: `text` as `convert` reads it, refused unless `ok` (nan never is)."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or value != value or not ok(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {wanted}")
        return value
    return parse


_positive_int = _number(int, lambda v: v >= 1, "a whole number of at least 1")
# A seed that numpy, torch and procgen all take.
_seed = _number(int, lambda v: 0 <= v <= SEED_MAX,
                f"a seed: give a whole number from 0 to {SEED_MAX}")
# Frames (or steps) a second; fractions welcome, videos keep them exactly.
_frame_rate = _number(float, lambda v: FPS_MIN <= v <= FPS_MAX,
                      f"a frame rate: give a number of frames a second from {FPS_MIN} to "
                      f"{FPS_MAX} (e.g. 15 or 7.5)")
_non_negative = _number(float, lambda v: 0 <= v < float("inf"), "a number of at least 0")
_top_p = _number(float, lambda v: 0 < v <= 1, "a share of the probability: give a number "
                 "above 0 and at most 1 (e.g. 0.9)")


def _clip_path(text: str) -> str:
    from genie.generate import CLIP_SUFFIXES

    if Path(text).suffix.lower() not in CLIP_SUFFIXES:
        raise argparse.ArgumentTypeError(f"{text!r} is not a clip name: end it in .mp4 or .gif "
                                         "(a video) or .npy (the frames themselves)")
    return text


def _mp4_path(text: str) -> str:
    if Path(text).suffix.lower() != ".mp4":
        raise argparse.ArgumentTypeError(f"{text!r} is not an mp4 name: recordings are mp4 "
                                         "video, so end it in .mp4")
    return text


def _size(text: str) -> tuple[int, int]:
    from genie.data.video import parse_size

    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


# ----------------------------------------------------------------------------------- data


def _data_record(args: argparse.Namespace) -> None:
    from genie.data.record import RecordSettings, record

    settings = RecordSettings(
        game=args.game, episodes=args.episodes, max_steps=args.max_steps, seed=args.seed,
        mode=args.mode, start_level=args.start_level, levels=args.levels, size=args.size,
        lossless=args.lossless, repeat=args.repeat,
    )
    meta = record(args.out, settings, workers=args.workers, overwrite=args.overwrite,
                  progress=not args.quiet)
    rate = meta["frames"] / max(meta["seconds"], 1e-9)
    print(f"recorded {plural(len(meta['episodes']), 'episode')}, "
          f"{plural(meta['frames'], 'frame')} into {args.out} in {meta['seconds']:.1f}s "
          f"({rate:,.0f} frames/s)")


def _data_prepare(args: argparse.Namespace) -> None:
    from genie.data.prepare import PrepareSettings, prepare

    settings = PrepareSettings(
        size=args.size, crop=args.crop, fps=args.fps, val_fraction=args.val_fraction,
        split_scenes=args.split_scenes, scene_threshold=args.scene_threshold,
        shard_mb=args.shard_mb,
    )
    s = prepare(args.src, args.out, settings, workers=args.workers, overwrite=args.overwrite,
                progress=not args.quiet)
    print(f"prepared {args.out}: {plural(s.episodes, 'episode')} ({s.splits['train']} train, "
          f"{s.splits['val']} val), {plural(s.frames, 'frame')} at {args.size[0]}x{args.size[1]} "
          f"from {plural(s.videos, 'video')}; {plural(len(s.skipped), 'file')} skipped; "
          f"{s.seconds:.1f}s ({s.frames / max(s.seconds, 1e-9):,.0f} frames/s)")


def _data_info(args: argparse.Namespace) -> None:
    from genie.data.index import describe

    print(describe(args.dataset))


def _add_data(sub) -> None:
    dsub = _group(sub, "data", "record gameplay, prepare videos, inspect datasets", "COMMAND")

    rec = dsub.add_parser(
        "record", help="record gameplay videos with a random agent",
        description="Record gameplay of a built-in game (procgen's CoinRun) played by a random "
        "agent that holds each action for a few steps: one mp4 per episode plus a sidecar "
        "<name>.actions.npy of the true actions. Same arguments, same files.",
    )
    rec.add_argument("game", choices=["coinrun"], help="the game to record")
    rec.add_argument("--out", required=True, help="folder for the videos (created)")
    rec.add_argument("--episodes", type=_positive_int, default=10,
                     help="episodes to record (default: 10)")
    rec.add_argument("--max-steps", type=_positive_int, default=1000,
                     help="cap on actions per episode (default: 1000, CoinRun's own limit)")
    rec.add_argument("--seed", type=_seed, default=0,
                     help="seed for levels and agent (default: 0)")
    rec.add_argument("--mode", choices=["easy", "hard"], default="hard",
                     help="procgen distribution mode (default: hard)")
    rec.add_argument("--start-level", type=int, default=0,
                     help="first level of the range (default: 0)")
    rec.add_argument("--levels", type=int, default=0,
                     help="number of levels in the range; 0 = unlimited (default)")
    rec.add_argument("--size", type=int, default=64, help="frame size in pixels (default: 64)")
    rec.add_argument("--repeat", type=_positive_int, default=1,
                     help="game steps per recorded frame, the action held through them "
                     "(default: 1); more makes each action's effect visible in one frame")
    rec.add_argument("--lossless", action="store_true", help="lossless H.264 RGB video")
    rec.add_argument("--workers", type=_positive_int, help="processes (default: all cores)")
    rec.add_argument("--overwrite", action="store_true", help="replace an earlier recording")
    rec.add_argument("--quiet", action="store_true", help="no progress bar")
    rec.set_defaults(func=_data_record)

    prep = dsub.add_parser(
        "prepare", help="turn a folder of videos into a training dataset",
        description="Decode every video under SRC (recursive; anything PyAV reads: mp4, mkv, "
        "webm, avi, mov, gif, ...) into uint8 frame shards with an episode index. Damaged files "
        "keep their decodable frames or are skipped with a note. Sidecar <name>.actions.npy "
        "files follow their frames. If SRC holds train/ and val/ folders they decide the split.",
    )
    prep.add_argument("src", help="folder of videos (or one video file)")
    prep.add_argument("--out", required=True, help="dataset folder to create")
    prep.add_argument("--size", type=_size, default=(64, 64),
                      help="frame size, N or HxW (default: 64; e.g. 90x160)")
    prep.add_argument("--crop", choices=["center"],
                      help="crop to the target aspect before resizing (default: resize only)")
    prep.add_argument("--fps", type=_frame_rate,
                      help="subsample to this frame rate (default: keep all)")
    prep.add_argument("--val-fraction", type=float, default=0.05,
                      help="share of episodes held out for validation (default: 0.05)")
    prep.add_argument("--split-scenes", action="store_true",
                      help="cut videos into episodes at hard scene cuts")
    prep.add_argument("--scene-threshold", type=float, default=30.0,
                      help="mean absolute frame change (0-255) that counts as a cut (default: 30)")
    prep.add_argument("--shard-mb", type=float, default=256.0,
                      help="target shard size in MiB (default: 256)")
    prep.add_argument("--workers", type=_positive_int, help="processes (default: all cores)")
    prep.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    prep.add_argument("--quiet", action="store_true", help="no progress bar")
    prep.set_defaults(func=_data_prepare)

    info = dsub.add_parser("info", help="summarise a prepared dataset")
    info.add_argument("dataset", help="dataset folder")
    info.set_defaults(func=_data_info)


# ----------------------------------------------------------------------------------- models


def _add_compute_args(parser: argparse.ArgumentParser,
                      threads_default: str = "torch's choice") -> None:
    parser.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto",
                        help="where to compute (default: auto = cuda, then mps, then cpu)")
    parser.add_argument("--threads", type=_positive_int,
                        help=f"CPU threads for torch (default: {threads_default})")


def _add_precision_arg(parser: argparse.ArgumentParser, default: str = "fp32") -> None:
    parser.add_argument("--precision", choices=["fp32", "bf16", "auto"], default=default,
                        help="run the world in fp32 or under bf16 autocast; auto = bf16 where "
                        "this machine multiplies bf16 fast (faster there; sampled frames "
                        f"differ a little from fp32's). Default: {default}")


def _add_sampler_args(parser: argparse.ArgumentParser) -> None:
    """Overrides of the world's sampler settings (_SAMPLER_OPTIONS)."""
    parser.add_argument("--sampling-steps", type=_positive_int,
                        help="sampling steps per frame (default: the world's)")
    parser.add_argument("--temperature", type=_non_negative,
                        help="MaskGIT: sampling temperature, 0 = greedy (default: the world's)")
    parser.add_argument("--top-p", type=_top_p,
                        help="MaskGIT: sample only among the most likely codes that together "
                             "hold this much probability, above 0 and at most 1 (default: the "
                             "world's; 1 = all)")
    parser.add_argument("--confidence-noise", type=_non_negative,
                        help="MaskGIT: scale of the noise on the confidences that pick the "
                             "tokens each step keeps (default: the world's)")


# The sampler options by the setting each overrides (named as in world.json's "sampler").
_SAMPLER_OPTIONS = {"steps": "--sampling-steps", "temperature": "--temperature",
                    "top_p": "--top-p", "confidence_noise": "--confidence-noise"}


def _sampler_overrides(args: argparse.Namespace, world: str | Path | None) -> dict:
    """The sampler settings given on the command line, by the samplers' names. Options that
    `world`'s backend does not take (a DiT has no temperature) are refused before it loads."""
    given = {name: getattr(args, option[2:].replace("-", "_"))
             for name, option in _SAMPLER_OPTIONS.items()}
    given = {name: value for name, value in given.items() if value is not None}
    if world is not None and given:
        from genie.dynamics import setting_names
        from genie.world import read_meta

        backend = read_meta(world).get("backend", "maskgit")
        known = setting_names(backend)
        foreign = [_SAMPLER_OPTIONS[name] for name in given if name not in known]
        if foreign:
            kind = {"dit": "DiT"}.get(backend, backend)
            takes = ", ".join(o for name, o in _SAMPLER_OPTIONS.items() if name in known)
            verb, them = ("apply", "them") if len(foreign) > 1 else ("applies", "it")
            raise GenieError(f"{' and '.join(foreign)} {verb} only to MaskGIT worlds and {world} "
                             f"is a {kind} world: leave {them} out (of the sampling options a "
                             f"{kind} world takes {takes})")
    return given


def _setup_compute(args: argparse.Namespace) -> None:
    from genie.train.compute import set_threads

    set_threads(args.threads)


def _train_part(args: argparse.Namespace) -> None:
    """`genie train tokenizer` and `genie train lam`: one model on its own."""
    from genie.train import stages

    _setup_compute(args)
    config = _train_config(args, args.overrides, Path(args.out) / "run.json")
    train = {"tokenizer": stages.train_tokenizer, "lam": stages.train_lam}[args.part]
    model_dir = train(config, args.data, args.out, resume=args.resume, init=args.init_from,
                      device=args.device)
    _say_once(f"{args.part} trained: {model_dir}{_training_summary(model_dir)}")


def _train_config(args: argparse.Namespace, overrides: list[str], saved: Path):
    """--config and the overrides; resuming, the settings the run was started with (kept in
    `saved`) with the overrides on top."""
    from genie.config import load_config, resume_config

    if args.resume:
        return resume_config(Path(args.out), saved, args.config, overrides)
    return load_config(args.config or "tiny", overrides)


def _training_summary(model_dir) -> str:
    """' (N steps in M min, F frames/s, P% of it waiting for data)' from the export's
    training.json; models trained before frames and waiting were counted give less."""
    import json

    path = Path(model_dir) / "training.json"
    if not path.exists():
        return ""
    trained = json.loads(path.read_text())
    seconds = max(trained["seconds"], 1e-9)
    said = [f"{trained['steps']:,} steps in {seconds / 60:.1f} min"]
    if "frames" in trained:
        said.append(f"{trained['frames'] / seconds:,.0f} frames/s")
    if "data_seconds" in trained:
        said.append(f"{trained['data_seconds'] / seconds:.1%} of it waiting for data")
    return f" ({', '.join(said)})"


def _say_once(message: str) -> None:
    if os.environ.get("RANK", "0") == "0":  # once, not once per process under accelerate launch
        print(message)


def _save_json(path: str | None, result: dict) -> None:
    if path:
        from genie.data.files import write_json_atomic

        write_json_atomic(path, result)


def _eval_tokenizer(args: argparse.Namespace) -> None:
    from genie.tokenizer.evaluate import evaluate_tokenizer

    _setup_compute(args)
    result = evaluate_tokenizer(args.model, args.data, split=args.split, seq_len=args.seq_len,
                                clips=args.clips, device=args.device)
    print(f"tokenizer on {result['clips']} {args.split} clips of {result['frames_per_clip']} "
          f"frames: PSNR {result['psnr']:.2f} dB, SSIM {result['ssim']:.4f}, codebook "
          f"{result['codes_used']}/{result['codebook_size']} used "
          f"({100 * result['codebook_usage']:.1f}%), perplexity {result['perplexity']:.1f}")
    _save_json(args.json, result)


def _eval_lam(args: argparse.Namespace) -> None:
    from genie.lam.evaluate import evaluate_lam, format_report

    _setup_compute(args)
    result = evaluate_lam(args.model, args.data, split=args.split, seq_len=args.seq_len,
                          clips=args.clips, device=args.device, seed=args.seed)
    print(format_report(result))
    _save_json(args.json, result)


def _eval_world(args: argparse.Namespace) -> None:
    from pathlib import Path

    from genie.eval.report import write_report
    from genie.eval.world import EvalSettings, evaluate_world
    from genie.worlds import default_world

    _setup_compute(args)
    # The shipped world's folder belongs to the installed package: its report goes here instead.
    out = args.out or (Path(args.world) / "eval" if args.world else Path("eval") / "coinrun-tiny")
    args.world = args.world or str(default_world())
    settings = EvalSettings(split=args.split, context=args.context, horizon=args.horizon,
                            clips=args.clips, seed=args.seed, drift_steps=args.drift_steps,
                            drift_clips=args.drift_clips, batch=args.batch,
                            preview_prompts=args.preview_prompts)
    result = evaluate_world(args.world, args.data, settings, device=args.device,
                            sampler=_sampler_overrides(args, args.world),
                            precision=args.precision,
                            progress=not args.quiet)
    report = write_report(result, out)
    m = result.metrics
    i = min(4, len(m["horizons"])) - 1
    psnr = {way: f"{values[i]:.2f}" for way, values in m["psnr"].items()}
    _say_once(f"world on {m['clips']} clips, PSNR at h={i + 1}: inferred {psnr['inferred']}, "
              f"random {psnr['random']}, copy {psnr['copy']}, ceiling {psnr['ceiling']} dB; "
              f"ΔtPSNR({i + 1}) {m['delta_psnr'][i]:+.2f} dB\nreport: {report}")


def _eval_compare(args: argparse.Namespace) -> None:
    from genie.eval.report import compare_table

    print(compare_table(args.dirs))


def _add_train(sub) -> None:
    tsub = _group(sub, "train", "train the tokenizer, LAM, dynamics or a whole world", "STAGE")
    tok = tsub.add_parser(
        "tokenizer", help="train the VQ video tokenizer",
        description="Train the ST-transformer VQ-VAE video tokenizer. Settings come from a "
        "preset (configs/NAME.yaml or a path) and key=value overrides, e.g. "
        "tokenizer.train.lr=3e-4 tokenizer.train.steps=2000. The run folder keeps checkpoints, "
        "TensorBoard logs, sample reconstructions and, at the end, the model (RUN/model).",
    )
    lam = tsub.add_parser(
        "lam", help="train the latent action model",
        description="Train the latent action model: from pixels it learns a few discrete "
        "actions (lam.num_actions, default 8) that explain each frame-to-frame change, without "
        "action labels. Settings as for the tokenizer, under lam.*, e.g. lam.train.steps=2000 "
        "lam.entropy_weight=0.05. The run folder keeps checkpoints, TensorBoard logs (with "
        "each action's share, train/action_use/K), pictures of what each action does and, at "
        "the end, the model (RUN/model).",
    )
    for part, parser in (("tokenizer", tok), ("lam", lam)):
        _add_run_args(parser)
        parser.add_argument("--init-from", metavar="PATH",
                            help="start from the weights of another run, world or model folder")
        _add_compute_args(parser)
        parser.set_defaults(func=_train_part, part=part)
    _add_world_stages(tsub)


def _train_dynamics(args: argparse.Namespace) -> None:
    from genie.train.world import train_dynamics

    _setup_compute(args)
    config = _train_config(args, _with_backend(args), Path(args.out) / "run.json")
    model_dir = train_dynamics(config, args.data, args.out, tokenizer=args.tokenizer, lam=args.lam,
                               resume=args.resume, init=args.init_from, device=args.device)
    _say_once(f"dynamics trained: {model_dir}{_training_summary(model_dir)}")


def _train_world(args: argparse.Namespace) -> None:
    from genie.train.world import SETTINGS, train_world

    _setup_compute(args)
    config = _train_config(args, _with_backend(args), Path(args.out) / SETTINGS)
    world = train_world(config, args.data, args.out, resume=args.resume, device=args.device,
                        tokenizer=args.tokenizer, lam=args.lam, init=args.init_from,
                        preset=args.config)
    for part in ("tokenizer", "lam", "dynamics"):
        _say_once(f"{part}: {world / part}{_training_summary(world / part)}")
    _say_once(f"world ready: {world} (try: genie generate --world {world} --out clip.mp4)")


def _with_backend(args: argparse.Namespace) -> list[str]:
    """The overrides, with --backend NAME as the dynamics.backend=NAME it stands for."""
    return [*args.overrides, *([f"dynamics.backend={args.backend}"] if args.backend else [])]


def _add_backend_arg(parser: argparse.ArgumentParser) -> None:
    from genie.dynamics import BACKENDS

    parser.add_argument("--backend", choices=BACKENDS,
                        help="dynamics backend, short for dynamics.backend=NAME (default: the "
                        "preset's)")


def _add_run_args(parser: argparse.ArgumentParser, out_help: str = "run folder") -> None:
    parser.add_argument("--config", help="preset name or YAML path (default: tiny; with --resume, "
                        "the settings the run was started with)")
    parser.add_argument("--data", required=True, help="prepared dataset folder")
    parser.add_argument("--out", required=True, help=out_help)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the latest checkpoint, with the run's own settings "
                        "and any KEY=VALUE given on top")


def _add_world_stages(tsub) -> None:
    dyn = tsub.add_parser(
        "dynamics", help="train the dynamics model on a frozen tokenizer and LAM",
        description="Train the dynamics model to predict the next frame from past frames and "
        "latent actions: maskgit (masked code prediction, the default) or dit (diffusion "
        "forcing over the codes' vectors; --backend dit). The dataset is coded once by the "
        "frozen tokenizer and LAM into RUN/tokens (reused while they do not change).",
    )
    _add_run_args(dyn)
    _add_backend_arg(dyn)
    dyn.add_argument("--tokenizer", required=True, help="tokenizer run, world or model folder")
    dyn.add_argument("--lam", required=True, help="latent action model run, world or model folder")
    dyn.add_argument("--init-from", metavar="PATH",
                     help="start from the weights of another dynamics run or world")
    _add_compute_args(dyn)
    dyn.set_defaults(func=_train_dynamics)
    world = tsub.add_parser(
        "world", help="train tokenizer, LAM and dynamics into a playable world folder",
        description="Train every part of a world in turn into OUT (run state under OUT/runs/, "
        "each stage resumable with --resume), then write OUT/prompts and OUT/world.json. "
        "--tokenizer and --lam reuse models already trained instead.",
    )
    _add_run_args(world, out_help="world folder")
    _add_backend_arg(world)
    world.add_argument("--tokenizer", help="use this trained tokenizer instead of training one")
    world.add_argument("--lam", help="use this trained latent action model instead")
    world.add_argument("--init-from", metavar="WORLD",
                       help="start each stage trained here from that world's part (fine-tune)")
    _add_compute_args(world)
    world.set_defaults(func=_train_world)


def _generate(args: argparse.Namespace) -> None:
    import genie
    from genie import generate as gen
    from genie.prompts import load_prompt
    from genie.worlds import default_world

    recipe = gen.recipe_path(args.out)  # refused now, not after every frame is made
    _check_frame_options(args)
    path = args.world or default_world()
    sampler = _sampler_overrides(args, path)
    _setup_compute(args)
    world = genie.load(path, device=args.device, sampler=sampler, precision=args.precision)
    context = min(args.prompt_frames or world.context, world.context)
    source = load_prompt(args.prompt, world.size, args.frames and context + args.frames,
                         world.prompt_files(), "--prompt") if args.side_by_side else None
    prompt = source[:context] if source is not None else \
        load_prompt(args.prompt, world.size, context, world.prompt_files(), "--prompt")
    if args.side_by_side and len(source) <= len(prompt):
        raise GenieError(f"--side-by-side needs the real continuation, but --prompt {args.prompt} "
                         f"has only {len(source)} frames: give a longer video or a dataset "
                         "episode (--prompt DATASET:EPISODE)")
    actions = _generate_actions(args, world, prompt)
    frames = gen.generate(world, prompt, actions, seed=args.seed)
    if args.side_by_side:
        frames = gen.side_by_side(frames, source[:len(frames)])
    out = Path(args.out)
    written = [gen.save_clip(frames, out, fps=args.fps, scale=args.scale)]
    if args.gif and out.suffix.lower() != ".gif":
        gif = out.with_suffix(".gif")
        written.append(gen.save_clip(frames, gif, fps=args.fps, scale=args.scale))
    written.append(gen.save_recipe(
        recipe, world, prompt=args.prompt, prompt_frames=len(prompt),
        actions=actions, seed=args.seed, side_by_side=args.side_by_side, fps=args.fps,
        scale=args.scale))
    print(f"{plural(len(actions), 'frame')} generated after {plural(len(prompt), 'prompt frame')}: "
          f"{', '.join(map(str, written))}")


def _check_frame_options(args: argparse.Namespace) -> None:
    """What generate's options ask for, where they contradict each other (before any loading)."""
    if args.random_actions and args.frames and args.random_actions != args.frames:
        raise GenieError(f"--random-actions {args.random_actions} and --frames {args.frames} "
                         "both say how many frames to make: give one of them")
    if args.side_by_side and args.prompt is None:
        raise GenieError("--side-by-side shows the real frames after the prompt, which the "
                         "world's own prompts lack: give --prompt with a video or a dataset "
                         "episode (--prompt DATASET:EPISODE)")


def _generate_actions(args: argparse.Namespace, world, prompt) -> list[int]:
    """One latent action per frame to make: --frames of them when it is given."""
    from genie import generate as gen
    from genie.prompts import load_prompt

    if args.actions is not None:
        actions = gen.parse_actions(args.actions, world.num_actions)
        # As play's --actions: the list repeated in turn for as many frames as asked.
        return gen.repeated(actions, args.frames) if args.frames else actions
    if args.actions_from:
        video = load_prompt(args.actions_from, world.size, None, name="--actions-from")
        # The prompt's own video: its actions from the prompt's last frame on.
        skip = len(prompt) - 1 if args.actions_from == args.prompt else 0
        actions = gen.actions_from_video(world, video)[skip:]
        if args.frames and len(actions) < args.frames:
            raise GenieError(f"--actions-from {args.actions_from} gives {len(actions)} actions, "
                             f"fewer than --frames {args.frames}: give a longer video or fewer "
                             "--frames")
        return actions[:args.frames] if args.frames else actions
    return gen.random_actions(args.frames or args.random_actions or 32, world.num_actions,
                              args.seed)


def _add_generate(sub) -> None:
    gen = sub.add_parser(
        "generate", help="generate a clip from prompt frames and latent actions",
        description="Prompt a world with real frames and roll it forward. Latent actions are "
        "numbered 0..A-1 (0,0,3x4 = 0, 0, then 3 four times); without --actions or "
        "--actions-from, random actions held for a few steps each. A JSON beside the clip "
        "records world, prompt, actions, seed and sampler settings.",
    )
    gen.add_argument("--world", help="world folder (default: the world shipped with genie)")
    gen.add_argument("--prompt", help="image, video, .npy clip or DATASET[:EPISODE] (default: "
                     "the world's first prompt)")
    gen.add_argument("--prompt-frames", type=_positive_int,
                     help="context frames taken from a video prompt (default: the world's "
                     "context)")
    how = gen.add_mutually_exclusive_group()
    how.add_argument("--actions", help="latent actions, e.g. 0,0,3x4 (repeated in turn when "
                     "--frames asks for more; default: random ones)")
    how.add_argument("--random-actions", type=_positive_int, metavar="N",
                     help="N random actions, each held 1-4 steps")
    how.add_argument("--actions-from", metavar="VIDEO",
                     help="the actions the world's LAM reads off a video, .npy clip or "
                     "DATASET[:EPISODE] (the prompt's own: from its last prompt frame on)")
    gen.add_argument("--frames", type=_positive_int,
                     help="frames to generate (default: one per action given, 32 random)")
    gen.add_argument("--side-by-side", action="store_true",
                     help="show the prompt video's real continuation to the left")
    gen.add_argument("-o", "--out", required=True, type=_clip_path,
                     help="output clip: .mp4 or .gif (scaled up by --scale), or .npy for the "
                     "frames themselves (uint8 T,H,W,3 at the world's size)")
    gen.add_argument("--gif", action="store_true", help="also write a .gif beside the video")
    gen.add_argument("--seed", type=_seed, default=0, help="sampling seed (default: 0)")
    _add_sampler_args(gen)
    gen.add_argument("--fps", type=_frame_rate, default=15,
                     help="frame rate of the video (default: 15)")
    gen.add_argument("--scale", type=_positive_int, default=4,
                     help="upscale the .mp4 or .gif by this factor, pixels kept sharp "
                     "(default: 4)")
    _add_compute_args(gen)
    _add_precision_arg(gen)
    gen.set_defaults(func=_generate)


def _add_eval(sub) -> None:
    esub = _group(sub, "eval", "measure a trained model", "WHAT")
    tok = esub.add_parser(
        "tokenizer", help="reconstruction PSNR/SSIM and codebook use on held-out clips",
        description="Encode and decode held-out clips: PSNR and SSIM per frame (definitions in "
        "README, \"Metrics\"), codebook usage (codes covering at least 0.01% of tokens) and "
        "perplexity.",
    )
    _add_eval_args(tok, seq_len=16)
    tok.set_defaults(func=_eval_tokenizer)
    lam = esub.add_parser(
        "lam", help="controllability and meaning of the latent actions on held-out clips",
        description="Infer the latent actions of held-out clips and measure: next-frame PSNR "
        "with the inferred action vs a random one (their difference is the controllability "
        "the dynamics model can inherit), code usage and entropy and, where the dataset has "
        "true actions, NMI with them and the accuracy of mapping each latent action to the "
        "true action it co-occurs with most (with the mapping).",
    )
    _add_eval_args(lam, seq_len=8)
    lam.add_argument("--seed", type=_seed, default=0,
                     help="seed of the random actions (default: 0)")
    lam.set_defaults(func=_eval_lam)
    _add_eval_world(esub)


def _add_eval_world(esub) -> None:
    world = esub.add_parser(
        "world", help="prediction quality, drift and action meaning of a world",
        description="Prompt the world with C real frames of held-out clips and generate H "
        "frames with the latent actions the LAM infers from the real continuation, with random "
        "ones, and by copying the last frame: PSNR/SSIM per horizon against the real frames, "
        "ΔtPSNR = inferred - random, and the tokenizer's reconstruction as the ceiling. Then "
        "drift of long random rollouts against the range of real video, and agreement of the "
        "latent actions with true ones. Writes metrics.json, report.md, plots and videos.",
    )
    world.add_argument("--world", help="world folder (default: the world shipped with genie)")
    world.add_argument("--data", required=True, help="prepared dataset of the world's size")
    world.add_argument("--split", default="val", help="dataset split (default: val)")
    world.add_argument("--context", type=_positive_int,
                       help="real prompt frames (default: 4, at most the world's context)")
    world.add_argument("--horizon", type=int, default=16,
                       help="frames generated after the prompt (default: 16)")
    world.add_argument("--clips", type=_positive_int, default=64,
                       help="held-out clips, spread over the episodes (default: 64)")
    world.add_argument("--seed", type=_seed, default=0,
                       help="seed of clip choice, actions and sampling (default: 0)")
    world.add_argument("--out", help="output folder (default: WORLD/eval, or eval/coinrun-tiny "
                       "here for the shipped world)")
    world.add_argument("--drift-steps", type=int, default=256,
                       help="frames per drift rollout; 0 skips drift (default: 256)")
    world.add_argument("--drift-clips", type=_positive_int, default=4,
                       help="drift rollouts (default: 4)")
    world.add_argument("--preview-prompts", type=int, default=20,
                       help="prompts for the per-action preview separation; 0 skips it "
                       "(default: 20)")
    world.add_argument("--batch", type=_positive_int, default=32,
                       help="clips rolled out at once; lower it to save memory (default: 32)")
    _add_sampler_args(world)
    world.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_compute_args(world)
    _add_precision_arg(world)
    world.set_defaults(func=_eval_world)
    compare = esub.add_parser(
        "compare", help="several world evaluations side by side",
        description="Print a table of the main numbers (PSNR per way at a few horizons, "
        "ΔtPSNR(4), drift steps, NMI) of folders written by genie eval world.",
    )
    compare.add_argument("dirs", nargs="+", metavar="DIR",
                         help="evaluation folders (or world folders holding eval/)")
    compare.set_defaults(func=_eval_compare)


def _add_eval_args(parser: argparse.ArgumentParser, seq_len: int) -> None:
    parser.add_argument("--model", required=True,
                        help="run folder, world folder or model folder")
    parser.add_argument("--data", required=True, help="prepared dataset folder")
    parser.add_argument("--split", default="val", help="dataset split (default: val)")
    parser.add_argument("--seq-len", type=_positive_int, default=seq_len,
                        help=f"frames per clip (default: {seq_len})")
    parser.add_argument("--clips", type=_positive_int,
                        help="at most this many clips, spread evenly (default: all)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    _add_compute_args(parser)


# ----------------------------------------------------------------------------------- play


def _play(args: argparse.Namespace) -> None:
    from genie.play.launch import play
    from genie.worlds import default_world

    # A replay takes no sampler options: play() says so.
    sampler = _sampler_overrides(args, None if args.replay else args.world or default_world())
    # No _setup_compute: the world steps on a thread of its own, which sets --threads itself.
    summary = play(world=args.world, prompt=args.prompt, replay=args.replay, scale=args.scale,
                   fps_cap=args.fps_cap, record=args.record, previews=not args.no_previews,
                   seed=args.seed, headless=args.headless, steps=args.steps,
                   actions=args.actions, device=args.device, threads=args.threads,
                   precision=args.precision, sampler=sampler)
    if args.headless:
        print(summary.line())
    for path in summary.recorded:
        print(f"recorded {path}")


def _calibrate(args: argparse.Namespace) -> None:
    from genie.play.calibrate import calibrate, format_calibration

    _setup_compute(args)
    print(format_calibration(calibrate(args.world, args.data, clips=args.clips,
                                       device=args.device)))


def _add_play(sub) -> None:
    play = sub.add_parser(
        "play", help="play a world with the keyboard (or replay a dataset)",
        description="Open a window on a world: keys 1-8 pick latent actions, arrows/WASD/space "
        "follow the world's key map (genie calibrate), R resets, Backspace undoes, P pauses, N "
        "takes the next prompt, S saves a screenshot, V records, H shows all keys, Esc quits. "
        "The side panel previews what each action would do. --headless runs the same loop "
        "without a window and prints the speed.",
    )
    play.add_argument("--world", help="world folder (default: the world shipped with genie)")
    play.add_argument("--prompt", help="image, video, .npy clip or DATASET[:EPISODE] to start "
                      "from (default: the world's prompts/)")
    play.add_argument("--replay", metavar="DATASET[:EPISODE]",
                      help="step through recorded episodes instead of a world")
    play.add_argument("--scale", type=_positive_int, default=8,
                      help="window pixels per frame pixel (default: 8)")
    play.add_argument("--fps-cap", type=_frame_rate,
                      help="at most this many steps a second (default: 15; headless: none)")
    play.add_argument("--record", metavar="OUT.mp4", type=_mp4_path,
                      help="record from the start into this mp4")
    play.add_argument("--no-previews", action="store_true",
                      help="do not compute what each action would do")
    play.add_argument("--seed", type=_seed, default=0, help="sampling seed (default: 0)")
    play.add_argument("--headless", action="store_true",
                      help="no window: run --steps scripted steps and print the speed")
    play.add_argument("--steps", type=_positive_int,
                      help="frames to generate headless (default: 64)")
    play.add_argument("--actions", default="random",
                      help="headless actions: random, or 0-based latent actions such as 0,1,2 "
                      "(repeated in turn; default: random)")
    _add_sampler_args(play)
    _add_compute_args(play, threads_default="the cores other work leaves idle")
    # Play is for speed; generate and eval default to fp32, so that their clips and figures do
    # not hinge on whether the machine has fast bf16.
    _add_precision_arg(play, default="auto")
    play.set_defaults(func=_play)

    cal = sub.add_parser(
        "calibrate", help="name a world's latent actions and map keys to them",
        description="With a dataset that has true actions (recorded games): match each true "
        "action to the latent action most associated with it (lift of P(latent|true) over the "
        "latent's base rate), name latent actions after their true action and bind arrows, "
        "WASD and space to LEFT, RIGHT, UP, DOWN and jump. Without true actions: order latent "
        "actions by how much they change the picture. Writes world.json; prints the mapping.",
    )
    cal.add_argument("--world", required=True, help="world folder to calibrate (updated)")
    cal.add_argument("--data", required=True, help="prepared dataset of the world's size")
    cal.add_argument("--clips", type=_positive_int,
                     help="at most this many clips, spread evenly (default: all)")
    _add_compute_args(cal)
    cal.set_defaults(func=_calibrate)


# ----------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="genie",
        description="Genie-style world models: turn unlabeled gameplay video into a world you "
        "can play.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=_Parser)
    _add_data(sub)
    _add_train(sub)
    _add_eval(sub)
    _add_generate(sub)
    _add_play(sub)
    return parser


def _version() -> str:
    from genie import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    # Library banners (pygame's hello, TensorFlow-style logs) are noise on a command line.
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    args = build_parser().parse_args(argv)
    keep_freed_memory()
    try:
        args.func(args)
    except GenieError as e:
        print(f"genie: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("genie: interrupted", file=sys.stderr)
        return 130
    return 0
