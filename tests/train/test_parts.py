"""Models given by path (--model, --tokenizer, --lam, --init-from): the wrong kind of model is
named in one line before anything is loaded, coded or copied."""

from __future__ import annotations

import shutil

from genie.cli import main


def fails(argv: list[str], capfd) -> str:
    """The one line a refused command prints."""
    assert main([*argv, "--device", "cpu"]) == 2
    err = capfd.readouterr().err
    assert err.startswith("genie: error: ") and err.count("\n") == 1, err
    return err


def test_a_model_of_another_kind_is_named(tiny_world, coinrun_dataset, tmp_path, capfd):
    data = str(coinrun_dataset)
    lam_run = tiny_world / "runs" / "lam"
    err = fails(["eval", "tokenizer", "--model", str(lam_run), "--data", data, "--seq-len", "4"],
                capfd)
    assert err == (f"genie: error: {lam_run} is a latent action model, not a tokenizer: give a "
                   "tokenizer run, world or model folder\n")
    err = fails(["eval", "lam", "--model", str(tiny_world / "tokenizer"), "--data", data], capfd)
    assert "tokenizer is a tokenizer, not a latent action model" in err
    out = tmp_path / "dyn"
    err = fails(["train", "dynamics", "--config", "test", "--data", data, "--tokenizer",
                 str(tiny_world), "--lam", str(tiny_world), "--out", str(out), "--init-from",
                 str(tiny_world / "runs" / "tokenizer")], capfd)
    assert "runs/tokenizer is a tokenizer, not a MaskGIT dynamics model" in err
    assert not out.exists()  # refused before the dataset was coded
    # A run stopped before its export says what it is in its run.json.
    unfinished = tmp_path / "unfinished"
    shutil.copytree(lam_run, unfinished)
    shutil.rmtree(unfinished / "model")
    err = fails(["train", "tokenizer", "--config", "test", "--data", data, "--out",
                 str(tmp_path / "tok"), "--init-from", str(unfinished)], capfd)
    assert f"{unfinished} is a latent action model, not a tokenizer" in err


def test_train_world_checks_given_parts_before_copying(tiny_world, coinrun_dataset, small_dataset,
                                                       tmp_path, capfd):
    tok, lam = tiny_world / "runs" / "tokenizer", tiny_world / "runs" / "lam"
    out = tmp_path / "w"
    world = ["train", "world", "--config", "test", "--data", str(coinrun_dataset), "--out",
             str(out), "dynamics.train.steps=2"]
    err = fails([*world, "--tokenizer", str(lam), "--lam", str(lam)], capfd)
    assert f"{lam} is a latent action model, not a tokenizer" in err
    other = small_dataset(tmp_path, 32, 32)
    err = fails(["train", "world", "--config", "test", "--data", str(other), "--out", str(out),
                 "--tokenizer", str(tok)], capfd)
    assert f"--tokenizer {tok} was trained on 64x64 frames but {other} holds 32x32" in err
    assert not out.exists()
    # A world in training holding another part than the one given (as genie once left it, having
    # copied a wrong part before checking it) says so, and how to go on.
    shutil.copytree(lam / "model", out / "tokenizer")
    err = fails([*world, "--tokenizer", str(tok), "--lam", str(lam), "--resume"], capfd)
    assert f"{out / 'tokenizer'} holds another tokenizer than --tokenizer {tok}: delete " in err
    (out / "runs" / "dynamics").mkdir(parents=True)
    (out / "runs" / "dynamics" / "run.json").write_text("{}")
    err = fails([*world, "--tokenizer", str(tok), "--lam", str(lam), "--resume"], capfd)
    assert f"{out} trains its dynamics on another tokenizer than --tokenizer {tok}" in err
    shutil.rmtree(out)
    shutil.copytree(tok / "model", out / "tokenizer")
    assert main([*world, "--tokenizer", str(tok), "--lam", str(lam), "--resume", "--device",
                 "cpu"]) == 0
    assert (out / "world.json").exists()
