"""Building each stage's model and data from a preset, and running it on the shared engine."""

from __future__ import annotations

import json
from pathlib import Path

from genie.config import Config, to_dict
from genie.errors import GenieError


def resolve_model_dir(path: str | Path, part: str) -> Path:
    """A model folder from a run folder (RUN/model), a world folder (W/<part>) or itself."""
    path = Path(path).expanduser()
    for candidate in (path / "model", path / part, path):
        if (candidate / "config.json").exists():
            return candidate
    raise GenieError(
        f"no {part} model in {path} (looked for config.json in {path}/model, {path}/{part} and "
        f"{path}): give a finished run, a world folder or a model folder"
    )


# What a model class or a run's stage is, in words.
_CLASSES = {"VideoTokenizer": "a tokenizer", "LatentActionModel": "a latent action model",
            "MaskGITDynamics": "a MaskGIT dynamics model", "DiTDynamics": "a DiT dynamics model"}
_STAGES = {"tokenizer": "a tokenizer", "lam": "a latent action model",
           "dynamics": "a dynamics model"}


def check_kind(cls, path: str | Path, part: str) -> None:
    """Refuse a run or model folder that holds another kind of model than `cls`, by what its
    config.json (or a run's run.json) says: loading it anyway fails deep in the weights, after
    a wall of warnings."""
    path = Path(path).expanduser()
    unfinished = _latest_checkpoint(path)
    saved = unfinished[0] if unfinished else resolve_model_dir(path, part) / "config.json"
    try:
        said = json.loads(saved.read_text())
    except (OSError, ValueError):
        return  # damaged: loading it names that
    if unfinished:
        found, wanted = _STAGES.get(said.get("stage")), _STAGES.get(part)
    else:
        found, wanted = _CLASSES.get(said.get("_class_name")), _CLASSES.get(cls.__name__)
    if found and wanted and found != wanted:
        raise GenieError(f"{path} is {found}, not {wanted}: give {wanted} run, world or model "
                         "folder")


def load_model(cls, path: str | Path, part: str):
    """`cls.from_pretrained` with one clear error for a missing, damaged or foreign folder.

    A run still training (or stopped before its export) has no model folder yet: its latest
    checkpoint is loaded instead, so a run can be evaluated while it trains.
    """
    check_kind(cls, path, part)
    unfinished = _latest_checkpoint(Path(path).expanduser())
    folder = None if unfinished else resolve_model_dir(path, part)
    try:
        if unfinished:
            return _from_checkpoint(cls, *unfinished)
        return cls.from_pretrained(str(folder))
    except Exception as e:  # diffusers/safetensors raise many types for a damaged folder
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        where = unfinished[1] if unfinished else folder
        raise GenieError(
            f"{part} model in {where} could not be loaded ({first}): it is damaged or not a "
            f"{part}; train it again or point to another run"
        ) from e


def _latest_checkpoint(run: Path) -> tuple[Path, Path] | None:
    """(run.json, newest checkpoint) of a run folder without an exported model, else None."""
    if (run / "model" / "config.json").exists() or not (run / "run.json").exists():
        return None
    found = sorted((run / "checkpoints").glob("step_[0-9]*[0-9]"))
    return (run / "run.json", found[-1]) if found else None


def _from_checkpoint(cls, run_json: Path, checkpoint: Path):
    from safetensors.torch import load_file

    model = cls(**json.loads(run_json.read_text())["model"])
    model.load_state_dict(load_file(checkpoint / "model.safetensors"))
    print(f"{run_json.parent} has no exported model yet: using {checkpoint.name}")
    return model


def init_from(model, path: str | Path, part: str) -> None:
    """Start `model` from the weights of another run or world (fine-tuning)."""
    source = load_model(type(model), path, part)
    # Regularisers that shape training but not the weights may change between runs.
    free = getattr(type(model), "training_only_config", ())
    mine = {k: v for k, v in model.config.items() if not k.startswith("_") and k not in free}
    theirs = {k: v for k, v in source.config.items() if not k.startswith("_") and k not in free}
    if mine != theirs:
        diffs = ", ".join(f"{k} {theirs.get(k)} vs {mine.get(k)}" for k in sorted(mine)
                          if mine.get(k) != theirs.get(k))
        raise GenieError(f"--init-from {path}: its {part} differs from this config ({diffs})")
    model.load_state_dict(source.state_dict())


def _train_stage(stage: str, cls, config: Config, data: str | Path, out: str | Path, *,
                 resume: bool, init: str | Path | None, device: str,
                 windowed: bool = False) -> Path:
    """Train `cls` (built from the `stage` section of `config`) on `data` into run folder `out`.

    What every stage shares: windows of the training split, a resolution that splits into the
    model's patches, seeded initial weights, --init-from, provenance, the engine.
    """
    import torch

    from genie.data.dataset import VideoDataset
    from genie.train.engine import Trainer

    cfg = getattr(config, stage)
    seq_len = cfg.train.seq_len or config.data.seq_len
    dataset = VideoDataset(data, seq_len, frame_skip=config.data.frame_skip)
    height, width = dataset.info.size
    if height % cfg.patch or width % cfg.patch:
        raise GenieError(
            f"dataset {data} is {height}x{width}, which does not split into {cfg.patch}px "
            f"patches: prepare it at a multiple of {cfg.patch} or set {stage}.patch"
        )
    torch.manual_seed(config.run.seed)  # the initial weights are part of a seeded run
    # `windowed`: temporal attention never sees more frames than a training clip holds, so a
    # video of any length is coded as well as the training clips were.
    extra = {"window": seq_len} if windowed else {}
    model = cls(height=height, width=width, **cfg.model_kwargs(), **extra)
    if init and not resume:
        init_from(model, init, stage)
    describe = {
        "stage": stage, "config": to_dict(config),
        "dataset": {"path": str(Path(data).resolve()), "frames": dataset.info.meta["frames"],
                    "windows": len(dataset)},
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    # What sets the model settings that are not this stage's own config keys.
    origins = {"height": "--data", "width": "--data",
               "window": f"{stage}.train.seq_len" if cfg.train.seq_len else "data.seq_len"}
    trainer = Trainer(model, dataset, train=cfg.train, run=config.run, data=config.data, out=out,
                      device=device, resume=resume, describe=describe, origins=origins)
    return trainer.fit()


def train_tokenizer(config: Config, data: str | Path, out: str | Path, *, resume: bool = False,
                    init: str | Path | None = None, device: str = "auto") -> Path:
    """Train the video tokenizer; returns the exported model folder (RUN/model)."""
    from genie.tokenizer.model import VideoTokenizer

    return _train_stage("tokenizer", VideoTokenizer, config, data, out, resume=resume, init=init,
                        device=device, windowed=True)


def train_lam(config: Config, data: str | Path, out: str | Path, *, resume: bool = False,
              init: str | Path | None = None, device: str = "auto") -> Path:
    """Train the latent action model; returns the exported model folder (RUN/model)."""
    from genie.lam.model import LatentActionModel

    return _train_stage("lam", LatentActionModel, config, data, out, resume=resume, init=init,
                        device=device, windowed=True)
