"""Run presets: one YAML file per preset in configs/, loaded into typed dataclasses.

A preset has shared `data` and `run` sections and one section per model, each holding the
model's architecture and its own `train` settings. Overrides are dotted `key=value` strings
(`tokenizer.train.lr=3e-4`); an unknown key, a value of the wrong type or out of range is a
GenieError that names it. A resumed run goes on with the settings it was started with
(resume_config).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from genie.errors import GenieError

PRESETS_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class TrainConfig:
    """How one model is trained (the same engine trains all three)."""

    steps: int = 1000
    batch_size: int = 8
    seq_len: int | None = None  # frames per training clip; None = data.seq_len
    grad_accum: int = 1
    lr: float = 3e-4
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    ema_decay: float = 0.0  # 0 turns EMA weights off
    log_every: int = 10
    sample_every: int = 500
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    # Stop (and export) after this much training time, the cosine decay ending there too;
    # 0 = no limit.
    max_minutes: float = 0.0


@dataclass
class DataConfig:
    seq_len: int = 16
    frame_skip: int = 1
    num_workers: int = 2


@dataclass
class RunConfig:
    seed: int = 0
    precision: str = "auto"  # auto (bf16 where the hardware runs it fast), bf16, fp32
    attention: str = "sdpa"  # sdpa or xformers
    compile: bool = False


@dataclass
class TokenizerConfig:
    """Architecture of the video tokenizer (its `__init__` arguments) plus its training."""

    patch: int = 4
    dim: int = 256
    encoder_depth: int = 4
    decoder_depth: int = 4
    heads: int = 4
    code_dim: int = 32
    codebook_size: int = 1024
    commitment: float = 0.25
    train: TrainConfig = field(default_factory=TrainConfig)

    def model_kwargs(self) -> dict:
        return _model_kwargs(self)


@dataclass
class LamConfig:
    """Architecture of the latent action model (its `__init__` arguments) plus its training."""

    patch: int = 8
    dim: int = 128
    encoder_depth: int = 2
    decoder_depth: int = 2
    heads: int = 4
    num_actions: int = 8
    code_dim: int = 32
    commitment: float = 0.25
    # Collapse guards, defaults chosen by the README's ablation: restarts are what keeps the
    # codes alive; dropout adds a little control; the entropy term costs control, so it is off.
    restart_after: int = 100  # restart a code unused this many steps; 0 = never
    action_dropout: float = 0.1  # dropout on the action features before quantization
    entropy_weight: float = 0.0  # weight of the batch code-entropy term
    train: TrainConfig = field(default_factory=TrainConfig)

    def model_kwargs(self) -> dict:
        return _model_kwargs(self)


@dataclass
class DiTSamplingConfig:
    """How a DiT world samples (dynamics.backend=dit); written into world.json."""

    steps: int | None = None  # Euler steps per frame; unset, dynamics.sample_steps
    context_noise: float = 0.1  # noise level the context frames are held at
    shift: float = 1.0  # timestep shift of the denoising grid (> 1: more steps at high noise)


@dataclass
class DynamicsConfig:
    """Architecture of the dynamics model, its backend, default sampling, plus its training."""

    backend: str = "maskgit"  # maskgit or dit
    dim: int = 256
    depth: int = 4
    heads: int = 4
    context: int = 16  # frames the model attends to (the sliding window at play time)
    # MaskGIT only: chance that a visible training token is swapped for a random code. (A DiT
    # needs no such noise: diffusion forcing trains it on noisy context anyway.)
    context_noise: float = 0.0
    # DiT only: what the network predicts, "velocity" or "x0" (genie/dynamics/dit/model.py);
    # unset, velocity: x0 led after 15 minutes on CoinRun, but its rollouts sharpen without
    # bound, and the only DiT that beats copy at every horizon 1-16 predicts v (README).
    prediction: str | None = None
    # DiT only: what a frame's latents are, "code" (its codes' normalized codebook vectors) or
    # "encoder" (the tokenizer's pre-quantization unit vectors); unset, code (README).
    latent: str | None = None
    sample_steps: int = 8  # MaskGIT iterations or DiT denoising steps per generated frame
    temperature: float = 1.0  # MaskGIT sampling temperature (0 = greedy)
    top_p: float | None = None  # MaskGIT: sample among the codes holding this probability
    # MaskGIT: scale of the Gumbel noise on the confidences that pick which tokens to keep,
    # annealed to 0 over the steps (genie/dynamics/maskgit/sampler.py).
    confidence_noise: float = 1.0
    dit: DiTSamplingConfig = field(default_factory=DiTSamplingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def model_kwargs(self) -> dict:
        """The model's `__init__` arguments this section sets, for the chosen backend."""
        exclude = ("train", "backend", "sample_steps", "temperature", "top_p", "confidence_noise",
                   "dit")
        if self.backend == "dit":
            if self.context_noise:
                raise GenieError("dynamics.context_noise swaps MaskGIT tokens and means nothing "
                                 "to a DiT: drop it (the DiT's is dynamics.dit.context_noise)")
            return _model_kwargs(self, exclude=exclude + ("context_noise",)) | {
                "prediction": self.prediction or "velocity", "latent": self.latent or "code"}
        for key in ("prediction", "latent"):
            if getattr(self, key) is not None:
                raise GenieError(f"dynamics.{key}={getattr(self, key)} is a DiT setting: drop "
                                 "it or add dynamics.backend=dit")
        return _model_kwargs(self, exclude=exclude + ("prediction", "latent"))

    def sampler_settings(self) -> dict:
        """The default sampler settings of the chosen backend (world.json's `sampler`)."""
        if self.backend == "dit":
            return {"steps": self.dit.steps or self.sample_steps,
                    "context_noise": self.dit.context_noise,
                    "shift": self.dit.shift}
        return {"steps": self.sample_steps, "temperature": self.temperature,
                "top_p": self.top_p, "confidence_noise": self.confidence_noise}


def _model_kwargs(section, exclude=("train",)) -> dict:
    return {f.name: getattr(section, f.name) for f in dataclasses.fields(section)
            if f.name not in exclude}


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    run: RunConfig = field(default_factory=RunConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    lam: LamConfig = field(default_factory=LamConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)


# The values each setting may take, checked as a config is built: a value out of range is one
# line naming it, not a traceback mid-training or an export of an untrained model.


def _at_least(low):
    return (lambda v: v >= low), f"at least {low}"


def _above(low):
    return (lambda v: v > low), f"above {low}"


def _from(low, high, *, below: bool = False):
    """low <= v <= high, or below high with `below`."""
    if below:
        return (lambda v: low <= v < high), f"at least {low} and below {high}"
    return (lambda v: low <= v <= high), f"from {low} to {high}"


def _one_of(*names):
    return (lambda v: v in names), f"one of {', '.join(names)}"


_POSITIVE, _COUNT = _at_least(1), _at_least(0)
_FRACTION = _from(0, 1, below=True)  # probabilities and decays that must leave something
_LIMITS = {
    TrainConfig: {
        "steps": _POSITIVE, "batch_size": _POSITIVE, "seq_len": _POSITIVE,
        "grad_accum": _POSITIVE, "lr": _above(0), "min_lr_ratio": _from(0, 1),
        "warmup_steps": _COUNT, "weight_decay": _at_least(0),
        "betas": ((lambda v: all(0 <= b < 1 for b in v)), "two numbers at least 0 and below 1"),
        "grad_clip": _above(0), "ema_decay": _FRACTION, "log_every": _POSITIVE,
        "sample_every": _COUNT, "checkpoint_every": _COUNT, "keep_checkpoints": _POSITIVE,
        "max_minutes": _at_least(0),
    },
    DataConfig: {"seq_len": _POSITIVE, "frame_skip": _POSITIVE, "num_workers": _COUNT},
    # numpy's generator, which set_seed seeds too, takes 32 bits.
    RunConfig: {"seed": _from(0, 2**32 - 1), "precision": _one_of("auto", "bf16", "fp32"),
                "attention": _one_of("sdpa", "xformers")},
    TokenizerConfig: {
        "patch": _POSITIVE, "dim": _POSITIVE, "encoder_depth": _POSITIVE,
        "decoder_depth": _POSITIVE, "heads": _POSITIVE, "code_dim": _POSITIVE,
        "codebook_size": _POSITIVE, "commitment": _at_least(0),
    },
    LamConfig: {
        "patch": _POSITIVE, "dim": _POSITIVE, "encoder_depth": _POSITIVE,
        "decoder_depth": _POSITIVE, "heads": _POSITIVE, "num_actions": _POSITIVE,
        "code_dim": _POSITIVE, "commitment": _at_least(0), "restart_after": _COUNT,
        "action_dropout": _FRACTION, "entropy_weight": _at_least(0),
    },
    DiTSamplingConfig: {"steps": _POSITIVE, "context_noise": _FRACTION, "shift": _above(0)},
    DynamicsConfig: {
        "backend": _one_of("maskgit", "dit"), "dim": _POSITIVE, "depth": _POSITIVE,
        "heads": _POSITIVE, "context": _at_least(2), "context_noise": _FRACTION,
        "prediction": _one_of("velocity", "x0"), "latent": _one_of("code", "encoder"),
        "sample_steps": _POSITIVE, "temperature": _at_least(0),
        "top_p": ((lambda v: 0 < v <= 1), "above 0 and at most 1"),
        "confidence_noise": _at_least(0),
    },
}


def _check_limits(section, where: str) -> None:
    """Every setting of `section` in its range, and a width its heads can share."""
    for key, (ok, allowed) in _LIMITS.get(type(section), {}).items():
        value = getattr(section, key)
        if value is not None and not ok(value):
            raise GenieError(f"config key {where}.{key} must be {allowed}, got {value!r}")
    if hasattr(section, "heads"):
        # Each head's width must be even for its rotary positions; the LAM's fixed sin-cos
        # positions also split the width in four.
        multiple = math.lcm(2 * section.heads, 4 if isinstance(section, LamConfig) else 1)
        if section.dim % multiple:
            sincos = " and a multiple of 4 for its sin-cos positions" \
                if isinstance(section, LamConfig) else ""
            raise GenieError(f"config key {where}.dim must be a multiple of {multiple} (an even "
                             f"width for each of {where}.heads={section.heads}{sincos}), got "
                             f"{section.dim}")


def _check_stages(config: Config) -> None:
    """Settings that only make sense together, across sections."""
    if (config.lam.train.seq_len or config.data.seq_len) < 2:
        raise GenieError("lam.train.seq_len must be at least 2: an action is a transition "
                         "between two frames")
    dynamics = config.dynamics
    if (dynamics.train.seq_len or dynamics.context) > dynamics.context:
        raise GenieError(f"dynamics.train.seq_len {dynamics.train.seq_len} exceeds "
                         f"dynamics.context {dynamics.context}: the model never attends that "
                         "far; lower it")
    dynamics.model_kwargs()  # refuses settings of the other backend, now rather than at its stage


def load_config(preset: str | Path | None, overrides: list[str] | tuple[str, ...] = (), *,
                saved: dict | None = None) -> Config:
    """Load a preset by name (`tiny`) or path (`configs/tiny.yaml`), or instead the `saved`
    config of a run (as to_dict gave it), and apply overrides."""
    import yaml

    raw = copy.deepcopy(saved) if saved is not None else _read_preset(preset)
    overridden = set()
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise GenieError(f"override {item!r} is not key=value (e.g. tokenizer.train.lr=3e-4)")
        _set_dotted(raw, key.strip(), yaml.safe_load(text))
        overridden.add(key.strip())
    dynamics = raw.get("dynamics")
    if ("dynamics.backend" in overridden and "dynamics.context_noise" not in overridden
            and isinstance(dynamics, dict) and dynamics.get("backend") == "dit"):
        # The preset's context noise is its MaskGIT's (token swaps); a DiT picked by override
        # (--backend dit) keeps its own, dynamics.dit.context_noise.
        dynamics.pop("context_noise", None)
    config = from_dict(Config, raw)
    _check_stages(config)
    return config


def resume_config(run: Path, saved: Path, preset: str | None,
                  overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The settings a run resumes with: those it was started with (under "config" in `saved`,
    its run.json), the overrides on top, so that it goes on as it began.

    A `preset` given as well must give the same settings: one that differs (another preset,
    or one changed since) would otherwise be ignored without a word. Runs that saved no
    settings resume with the preset (default tiny).
    """
    started = json.loads(saved.read_text()).get("config") if saved.exists() else None
    if started is None:
        return load_config(preset or "tiny", overrides)
    config = load_config(None, overrides, saved=started)
    if preset is not None:
        differ = differences(to_dict(config), to_dict(load_config(preset, overrides)))
        if differ:
            more = ", ..." if len(differ) > 3 else ""
            raise GenieError(f"{run} was started with other settings than --config {preset} "
                             f"gives ({', '.join(differ[:3])}{more}): drop --config to resume "
                             "with its own, adding KEY=VALUE for what should change")
    return config


def differences(mine: dict, theirs: dict, where: str = "") -> list[str]:
    """'key mine, not theirs' for every setting that differs, by dotted key."""
    found = []
    for key in sorted(set(mine) | set(theirs)):
        name, a, b = f"{where}.{key}" if where else key, mine.get(key), theirs.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += differences(a, b, name)
        elif a != b:
            found.append(f"{name} {a}, not {b}")
    return found


def _read_preset(preset: str | Path) -> dict:
    import yaml

    path = Path(preset)
    if not path.suffix:
        path = PRESETS_DIR / f"{preset}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))
        raise GenieError(f"config {preset} not found: give a YAML file or a preset ({known})")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise GenieError(f"config {path} is not valid YAML: {e}") from e


def _set_dotted(tree: dict, key: str, value) -> None:
    *parents, leaf = key.split(".")
    for name in parents:
        child = tree.setdefault(name, {})
        if not isinstance(child, dict):
            raise GenieError(f"override {key}: {name} is a value, not a section")
        tree = child
    tree[leaf] = value


def from_dict(cls, data: dict, where: str = ""):
    """Build dataclass `cls` from nested dicts, checking every key, type and range."""
    if not isinstance(data, dict):
        raise GenieError(f"config section {where or 'top level'} must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        name = f"{where}.{key}" if where else key
        if key not in fields:
            raise GenieError(
                f"unknown config key {name}: expected one of {', '.join(sorted(fields))}"
            )
        kwargs[key] = _coerce(hints[key], value, name)
    section = cls(**kwargs)
    _check_limits(section, where)
    return section


def _coerce(hint, value, name: str):
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, name)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        return _coerce(hint, value, name)
    if origin is tuple:
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise GenieError(f"config key {name} must be a list of {len(args)} values")
        return tuple(_coerce(a, v, f"{name}[{i}]") for i, (a, v) in enumerate(zip(args, value,
                                                                                      strict=True)))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML reads 3e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise GenieError(
            f"config key {name} must be {hint.__name__}, got {value!r} ({type(value).__name__})"
        )
    return value


def to_dict(config) -> dict:
    """The plain nested dict of a config (what YAML and provenance records hold)."""
    return dataclasses.asdict(config)
