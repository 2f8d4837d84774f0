"""Presets and overrides: typed, and every mistake named."""

from __future__ import annotations

import re

import pytest

from genie.cli import main
from genie.config import PRESETS_DIR, load_config
from genie.errors import GenieError


@pytest.mark.parametrize("preset", sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))
def test_every_preset_loads(preset):
    config = load_config(preset)
    assert config.tokenizer.train.steps > 0


def test_overrides_are_typed():
    config = load_config("test", ["tokenizer.train.lr=3e-4", "tokenizer.dim=48",
                                  "tokenizer.train.betas=[0.8, 0.9]", "run.compile=true"])
    assert config.tokenizer.train.lr == 3e-4 and config.tokenizer.dim == 48
    assert config.tokenizer.train.betas == (0.8, 0.9) and config.run.compile is True
    assert load_config("test", ["tokenizer.train.lr=1"]).tokenizer.train.lr == 1.0  # int -> float


@pytest.mark.parametrize(
    "override, message",
    [
        ("tokenizer.dimm=3", "unknown config key tokenizer.dimm"),
        ("tokenizer.dim=wide", "tokenizer.dim must be int, got 'wide'"),
        ("tokenizer.train.steps=1.5", "tokenizer.train.steps must be int"),
        ("run.compile=3", "run.compile must be bool"),
        ("tokenizer.train.betas=[1]", "list of 2 values"),
        ("nonsense", "is not key=value"),
        ("tokenizer.dim.x=1", "dim is a value, not a section"),
    ],
)
def test_mistakes_are_named(override, message):
    with pytest.raises(GenieError, match=message.replace("[", r"\[")):
        load_config("test", [override])


@pytest.mark.parametrize(
    "override, message",
    [
        ("tokenizer.dim=63", "tokenizer.dim must be a multiple of 4 (an even width for each of "
                             "tokenizer.heads=2), got 63"),
        ("lam.dim=34", "lam.dim must be a multiple of 4"),
        ("dynamics.heads=3", "dynamics.dim must be a multiple of 6"),
        ("tokenizer.heads=0", "tokenizer.heads must be at least 1, got 0"),
        ("tokenizer.train.lr=-1", "tokenizer.train.lr must be above 0, got -1.0"),
        ("tokenizer.train.batch_size=0", "tokenizer.train.batch_size must be at least 1, got 0"),
        ("tokenizer.train.steps=0", "tokenizer.train.steps must be at least 1, got 0"),
        ("tokenizer.train.steps=-1", "tokenizer.train.steps must be at least 1, got -1"),
        ("tokenizer.train.seq_len=0", "tokenizer.train.seq_len must be at least 1, got 0"),
        ("tokenizer.codebook_size=0", "tokenizer.codebook_size must be at least 1"),
        ("data.num_workers=-1", "data.num_workers must be at least 0, got -1"),
        ("run.seed=-1", "run.seed must be from 0 to 4294967295, got -1"),
        ("run.precision=fp16", "run.precision must be one of auto, bf16, fp32, got 'fp16'"),
        ("lam.num_actions=0", "lam.num_actions must be at least 1"),
        ("lam.action_dropout=1", "lam.action_dropout must be at least 0 and below 1"),
        ("dynamics.train.checkpoint_every=-5", "checkpoint_every must be at least 0"),
        ("dynamics.context=1", "dynamics.context must be at least 2"),
        ("dynamics.top_p=0", "dynamics.top_p must be above 0 and at most 1"),
        ("dynamics.prediction=v", "dynamics.prediction must be one of velocity, x0, got 'v'"),
        ("dynamics.dit.shift=0", "dynamics.dit.shift must be above 0"),
        ("tokenizer.train.betas=[0.9, 1.0]", "betas must be two numbers at least 0 and below 1"),
        ("lam.train.seq_len=1", "lam.train.seq_len must be at least 2"),
        ("dynamics.train.seq_len=5", "dynamics.train.seq_len 5 exceeds dynamics.context 4"),
        ("dynamics.latent=encoder", "dynamics.latent=encoder is a DiT setting"),
    ],
)
def test_values_out_of_range_are_named(override, message):
    with pytest.raises(GenieError, match=re.escape(message)):
        load_config("test", [override])


def test_a_value_out_of_range_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "tokenizer", "--config", "test", "--data", str(tmp_path), "--out",
                 str(out), "tokenizer.heads=0"])
    assert code == 2 and not out.exists()
    assert capsys.readouterr().err == \
        "genie: error: config key tokenizer.heads must be at least 1, got 0\n"


def test_unknown_preset_and_bad_yaml(tmp_path):
    with pytest.raises(GenieError, match="config nope not found.*tiny"):
        load_config("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tokenizer: [unclosed\n")
    with pytest.raises(GenieError, match="not valid YAML"):
        load_config(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("tokenizer:\n  trian:\n    steps: 3\n")
    with pytest.raises(GenieError, match="unknown config key tokenizer.trian"):
        load_config(typo)


def test_each_backend_gets_only_its_own_model_and_sampler_settings():
    maskgit = load_config("test").dynamics
    assert "context_noise" in maskgit.model_kwargs() and "prediction" not in maskgit.model_kwargs()
    assert set(maskgit.sampler_settings()) == {"steps", "temperature", "top_p",
                                               "confidence_noise"}
    assert "confidence_noise" not in load_config("test", ["dynamics.backend=dit"]
                                                 ).dynamics.sampler_settings()
    dit = load_config("test", ["dynamics.backend=dit", "dynamics.dit.context_noise=0.2"]).dynamics
    assert set(dit.model_kwargs()) == {"dim", "depth", "heads", "context", "prediction",
                                       "latent"}
    # the defaults, unless dynamics.prediction / dynamics.latent
    assert dit.model_kwargs()["prediction"] == "velocity"
    assert dit.model_kwargs()["latent"] == "code"
    assert dit.sampler_settings() == {"steps": 2, "context_noise": 0.2, "shift": 1.0}
    # A DiT's Euler steps can differ from MaskGIT's iterations (the tiny preset: 4 against 2).
    assert load_config("tiny", ["dynamics.backend=dit"]).dynamics.sampler_settings()["steps"] == 4
    with pytest.raises(GenieError, match="dynamics.context_noise swaps MaskGIT tokens"):
        load_config("test", ["dynamics.backend=dit", "dynamics.context_noise=0.1"]
                    ).dynamics.model_kwargs()
    for setting in ("dynamics.prediction=x0", "dynamics.latent=encoder"):
        with pytest.raises(GenieError, match="is a DiT setting"):
            load_config("test", [setting]).dynamics.model_kwargs()


def test_a_dit_picked_by_override_drops_the_presets_maskgit_context_noise():
    assert load_config("tiny", []).dynamics.context_noise > 0  # the preset swaps MaskGIT tokens
    dit = load_config("tiny", ["dynamics.backend=dit"]).dynamics
    assert "context_noise" not in dit.model_kwargs() and dit.sampler_settings()["context_noise"] > 0
    with pytest.raises(GenieError, match="dynamics.context_noise swaps MaskGIT tokens"):
        load_config("tiny", ["dynamics.backend=dit", "dynamics.context_noise=0.1"]).dynamics \
            .model_kwargs()
