"""Training the dynamics model on a frozen tokenizer and LAM, and assembling a world folder.

`genie train world --out W` runs every stage into W/runs/<stage>/ (each resumable, with the
settings kept in W/runs/config.json), copies each finished model into W/<part>/, and writes
W/prompts/ and W/world.json last, so a folder with a world.json is always a whole world.
"""

from __future__ import annotations

import filecmp
import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from genie.config import Config, differences, to_dict
from genie.data.files import write_json_atomic
from genie.data.index import open_dataset
from genie.errors import GenieError
from genie.train.stages import check_kind, init_from, load_model, resolve_model_dir

PARTS = ("tokenizer", "lam", "dynamics")
# The preset and settings a world in training was started with (and last resumed with), which
# `--resume` goes on with.
SETTINGS = Path("runs") / "config.json"


def train_dynamics(config: Config, data: str | Path, out: str | Path, *, tokenizer: str | Path,
                   lam: str | Path, resume: bool = False, init: str | Path | None = None,
                   device: str = "auto") -> Path:
    """Train the dynamics model on `data` coded by a frozen tokenizer and LAM."""
    import torch
    from accelerate import PartialState

    from genie.dynamics import new_model
    from genie.dynamics.tokens import TokenDataset, build_token_cache, fingerprint
    from genie.lam.model import LatentActionModel
    from genie.tokenizer.model import VideoTokenizer
    from genie.train.compute import pick_device
    from genie.train.engine import Trainer

    cfg, out = config.dynamics, Path(out)
    tok = load_model(VideoTokenizer, tokenizer, "tokenizer")
    lam_model = load_model(LatentActionModel, lam, "lam")
    if (lam_model.config.height, lam_model.config.width) != (tok.config.height, tok.config.width):
        raise GenieError(f"the LAM {lam} sees {lam_model.config.height}x{lam_model.config.width} "
                         f"frames but the tokenizer {tokenizer} codes {tok.config.height}x"
                         f"{tok.config.width}: train both on the same dataset")
    made_from = fingerprint(Path(data), resolve_model_dir(tokenizer, "tokenizer"),
                            resolve_model_dir(lam, "lam"))
    # The model first: a wrong --init-from fails now, not after minutes of coding the dataset.
    torch.manual_seed(config.run.seed)
    model = new_model(cfg.backend, tok, lam_model.config.num_actions, **cfg.model_kwargs())
    if init and not resume:
        init_from(model, init, "dynamics")
        if hasattr(model, "same_codebook") and not model.same_codebook(tok.quantizer.codebook):
            raise GenieError(f"--init-from {init} is a DiT trained on another tokenizer: start "
                             "from one trained on this tokenizer, or from scratch")
    dev = pick_device(device)
    encoder_latents = cfg.backend == "dit" and cfg.latent == "encoder"
    with PartialState().main_process_first():  # one process codes the dataset, the rest read it
        started = time.perf_counter()
        cache = build_token_cache(tok.to(dev), lam_model.to(dev), data, out / "tokens",
                                  made_from=made_from, device=dev, latents=encoder_latents)
        coding_seconds = time.perf_counter() - started
    del tok, lam_model
    dataset = TokenDataset(cache, cfg.train.seq_len or cfg.context, latents=encoder_latents)
    describe = {
        "stage": "dynamics", "config": to_dict(config),
        "dataset": {"path": str(Path(data).resolve()), "frames": made_from["frames"],
                    "windows": len(dataset)},
        "tokenizer": str(Path(tokenizer).resolve()), "lam": str(Path(lam).resolve()),
        "token_cache_seconds": round(coding_seconds, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    origins = {"vocab_size": "--tokenizer", "grid_h": "--tokenizer", "grid_w": "--tokenizer",
               "code_dim": "--tokenizer", "num_actions": "--lam"}
    trainer = Trainer(model, dataset, train=cfg.train, run=config.run, data=config.data, out=out,
                      device=device, resume=resume, describe=describe, origins=origins)
    return trainer.fit()


def _config_of(path: str | Path, part: str) -> dict:
    return json.loads((resolve_model_dir(path, part) / "config.json").read_text())


def train_world(config: Config, data: str | Path, out: str | Path, *, resume: bool = False,
                device: str = "auto", tokenizer: str | Path | None = None,
                lam: str | Path | None = None, init: str | Path | None = None,
                preset: str | None = None) -> Path:
    """Train (or take) each part into the world folder `out`; returns it.

    `init`: a world whose parts start every stage trained here (fine-tuning); parts given as
    `tokenizer` or `lam` are taken as they are. `preset`: the name world.json records (resumed
    and not given: the one the world was started with).
    """
    from accelerate import PartialState

    from genie.dynamics import model_class
    from genie.lam.model import LatentActionModel
    from genie.tokenizer.model import VideoTokenizer
    from genie.train.stages import train_lam, train_tokenizer

    out = Path(out)
    if (out / "world.json").exists():
        raise GenieError(f"{out} already holds a finished world: choose a new --out "
                         "(nothing was overwritten)")
    classes = {"tokenizer": VideoTokenizer, "lam": LatentActionModel,
               "dynamics": model_class(config.dynamics.backend)}
    # Wrong parts fail now, before anything is copied and not after an hour of training.
    given = {"tokenizer": tokenizer, "lam": lam}
    sources = {part: _given_part(classes[part], path, part, data)
               for part, path in given.items() if path}
    if init:
        missing = [p for p in PARTS if not (Path(init) / p / "config.json").exists()]
        if missing:
            raise GenieError(f"--init-from {init} is not a world folder (no {', '.join(missing)} "
                             "in it): give a world made by `genie train world`")
        for part in PARTS:
            check_kind(classes[part], Path(init) / part, part)
    # Settings alone are what a first stage that failed at once leaves: nothing to resume.
    if out.exists() and any(p != out / SETTINGS for p in out.rglob("*") if p.is_file()) \
            and not resume:
        raise GenieError(f"{out} already holds a world in training: add --resume to continue "
                         "it, or choose a new --out (nothing was overwritten)")
    for part, source in sources.items():
        _check_held(out, part, source, given[part])
    settings = out / SETTINGS
    if settings.exists():
        saved = json.loads(settings.read_text())
        preset = preset or saved.get("preset")
        now = json.loads(json.dumps(to_dict(config)))  # tuples as the saved file has lists
        _check_trained_settings(out, now, saved.get("config") or {}, given)
    preset = preset or "tiny"
    if PartialState().is_main_process:
        settings.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(settings, {"preset": preset, "config": to_dict(config)})
    trainers = {"tokenizer": train_tokenizer, "lam": train_lam}
    for part in ("tokenizer", "lam"):
        if not (out / part / "config.json").exists():
            if given[part]:
                source = sources[part]
            else:
                run = out / "runs" / part
                source = trainers[part](config, data, run, resume=(run / "run.json").exists(),
                                        init=init and Path(init) / part, device=device)
            _copy_folder(source, out / part)
    if not (out / "dynamics" / "config.json").exists():
        run = out / "runs" / "dynamics"
        if init:
            _reuse_token_cache(Path(init), data, out)
        source = train_dynamics(config, data, run, tokenizer=out / "tokenizer", lam=out / "lam",
                                resume=(run / "run.json").exists(), device=device,
                                init=init and Path(init) / "dynamics")
        _copy_folder(source, out / "dynamics")
    write_prompts(data, out / "prompts", frames=min(4, config.dynamics.context))
    meta = world_meta(config, data, out, preset)
    if init:
        meta["provenance"]["init_from"] = str(Path(init).resolve())
    write_json_atomic(out / "world.json", meta)
    return out


def _given_part(cls, path: str | Path, part: str, data: str | Path) -> Path:
    """The model folder of a part given by path, once it is known to be a `cls` of the
    dataset's frame size."""
    check_kind(cls, path, part)
    source = resolve_model_dir(path, part)
    model = json.loads((source / "config.json").read_text())
    size, frames = open_dataset(data).size, (model["height"], model["width"])
    if frames != size:
        raise GenieError(f"--{part} {path} was trained on {frames[0]}x{frames[1]} frames but "
                         f"{data} holds {size[0]}x{size[1]}: give a {part} trained on this "
                         "dataset, or a dataset of its size")
    return source


def _check_trained_settings(out: Path, now: dict, started: dict, given: dict) -> None:
    """Refuse settings of a part the world has trained already: they would change nothing, yet
    be kept in its settings as if they had."""
    for part in ("tokenizer", "lam"):
        if given[part] or not (out / part / "config.json").exists() or part not in started:
            continue
        changed = differences(now[part], started[part], part)
        if changed:
            raise GenieError(f"the {part} of {out} is trained already and would not take a "
                             f"change to its settings ({changed[0]}): leave the change out, or "
                             "train the world into a new --out")


def _check_held(out: Path, part: str, source: Path, path: str | Path) -> None:
    """Refuse a part given for a world in training that already holds another."""
    held = out / part
    if not (held / "config.json").exists():
        return
    names = [p.name for p in source.iterdir() if p.is_file()]
    _, mismatch, errors = filecmp.cmpfiles(source, held, names, shallow=False)
    if not mismatch and not errors:
        return
    if (out / "dynamics").exists() or (out / "runs" / "dynamics" / "run.json").exists():
        raise GenieError(f"{out} trains its dynamics on another {part} than --{part} {path}: "
                         f"resume without --{part} to go on with it, or train into a new --out")
    raise GenieError(f"{held} holds another {part} than --{part} {path}: delete {held} to take "
                     f"it instead, or resume without --{part} to keep the one there")


def _reuse_token_cache(init: Path, data: str | Path, out: Path) -> None:
    """Copy the token cache of the world `init` when it was made from this dataset, tokenizer
    and LAM (a dynamics fine-tune given that world's parts): coding it again takes minutes (9
    for the CoinRun dataset of the shipped world), copying it seconds."""
    from genie.dynamics.tokens import fingerprint

    source, target = init / "runs" / "dynamics" / "tokens", out / "runs" / "dynamics" / "tokens"
    if target.exists() or not (source / "index.json").exists():
        return
    made_from = fingerprint(Path(data), out / "tokenizer", out / "lam")
    if json.loads((source / "index.json").read_text()).get("made_from") != made_from:
        return
    _copy_folder(source, target)


def _copy_folder(source: Path, target: Path) -> None:
    """Copy under a temporary name, then rename: an interrupted copy never looks finished."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def write_prompts(data: str | Path, folder: Path, *, frames: int, count: int = 8) -> None:
    """A few real clips from the validation episodes (train if none), evenly spread."""
    info = open_dataset(data)
    episodes = [ep for ep in info.split("val") if ep["length"] >= frames] or \
        [ep for ep in info.split("train") if ep["length"] >= frames]
    folder.mkdir(parents=True, exist_ok=True)
    picks = np.linspace(0, len(episodes) - 1, min(count, len(episodes))).round().astype(int)
    for i, e in enumerate(dict.fromkeys(picks.tolist())):
        ep = episodes[e]
        shard = np.load(info.path / ep["shard"], mmap_mode="r")
        clip = np.array(shard[ep["offset"]: ep["offset"] + frames])  # (frames, H, W, 3)
        np.save(folder / f"prompt_{i:02d}.npy", clip)


def world_meta(config: Config, data: str | Path, out: Path, preset: str) -> dict:
    """world.json: what a player, an evaluator and a reader of provenance need.

    Training time is what each part's training.json counts over all its resumed sessions, plus
    coding the dataset for the dynamics: the wall time of this call would miss every session
    before a --resume.
    """
    from genie import world

    tok = _config_of(out / "tokenizer", "tokenizer")
    lam = _config_of(out / "lam", "lam")
    info = open_dataset(data)
    parts = {p: json.loads((out / p / "training.json").read_text())
             for p in PARTS if (out / p / "training.json").exists()}
    coding = out / "runs" / "dynamics" / "run.json"
    coding_seconds = json.loads(coding.read_text()).get("token_cache_seconds", 0.0) \
        if coding.exists() else 0.0
    return {
        "schema": world.SCHEMA,
        "backend": config.dynamics.backend,
        "resolution": [tok["height"], tok["width"]],
        "context": config.dynamics.context,
        "num_actions": lam["num_actions"],
        "action_names": [f"action {i + 1}" for i in range(lam["num_actions"])],
        "key_map": {},
        "sampler": config.dynamics.sampler_settings(),
        "provenance": {
            "preset": preset, "config": to_dict(config),
            "dataset": {"path": str(info.path.resolve()), "frames": info.meta["frames"],
                        "episodes": info.meta["episodes"],
                        "hash": _dataset_hash(info.path)},
            "code_version": _code_version(),
            "parts": parts,
            "token_coding_seconds": coding_seconds,
            "training_seconds": round(sum(p["seconds"] for p in parts.values())
                                      + coding_seconds, 1),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    }


def _dataset_hash(path: Path) -> str:
    """sha1 of the dataset's index and meta: names its content without reading every frame."""
    import hashlib

    h = hashlib.sha1()
    for name in ("meta.json", "index.json"):
        h.update((path / name).read_bytes())
    return h.hexdigest()[:16]


def _code_version() -> str:
    from genie import __version__

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__
