"""`genie train lam` and `genie eval lam` end to end, and the mistakes a user can make."""

from __future__ import annotations

import json

import pytest

from genie.cli import main


def test_help(capsys):
    for command in (["train", "lam"], ["eval", "lam"]):
        with pytest.raises(SystemExit) as exit:
            main([*command, "--help"])
        assert exit.value.code == 0
    assert "usage: genie eval lam" in capsys.readouterr().out


def test_a_run_leaves_model_samples_and_action_histogram(lam_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = json.loads((lam_run / "run.json").read_text())
    assert run["stage"] == "lam" and run["model"]["num_actions"] == 8
    assert (lam_run / "model" / "config.json").exists()
    assert (lam_run / "samples" / "step_0000020.png").exists()
    logs = EventAccumulator(str(next((lam_run / "logs").rglob("events.out.tfevents*")))).Reload()
    tags = logs.Tags()["scalars"]
    assert {f"train/action_use/{k}" for k in range(8)} <= set(tags)
    assert {"train/psnr", "train/perplexity", "train/restarted_codes"} <= set(tags)
    shares = [logs.Scalars(f"train/action_use/{k}")[-1].value for k in range(8)]
    assert sum(shares) == pytest.approx(1.0, abs=1e-5)


def test_eval_reports_controllability_and_agreement(lam_run, coinrun_dataset, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", "lam", "--model", str(lam_run), "--data", str(coinrun_dataset),
                 "--seq-len", "4", "--json", str(out), "--device", "cpu"]) == 0
    result = json.loads(out.read_text())
    assert result["split"] == "val" and result["transitions"] == 3 * result["clips"] > 0
    assert result["controllability_gap"] == pytest.approx(
        result["psnr_inferred"] - result["psnr_random"])
    assert sum(result["action_share"]) == pytest.approx(1.0)
    assert 1 <= result["actions_used"] <= 8 and 0 <= result["entropy_bits"] <= 3
    # CoinRun recordings carry true actions: agreement and the mapping to their names.
    assert result["has_true_actions"] and 0 <= result["nmi"] <= 1
    assert result["majority_accuracy"] <= result["many_to_one_accuracy"] <= 1
    names = json.loads((coinrun_dataset / "meta.json").read_text())["action_names"]
    assert result["mapping"] and set(result["mapping"].values()) <= set(names)
    printed = capsys.readouterr().out
    assert "gap" in printed and "NMI" in printed and "maps to" in printed


def test_eval_takes_a_world_or_model_folder(lam_run, coinrun_dataset, tmp_path):
    from genie.lam.evaluate import evaluate_lam

    world = tmp_path / "world"
    world.mkdir()
    (world / "lam").symlink_to(lam_run / "model")
    a = evaluate_lam(world, coinrun_dataset, seq_len=4, clips=2, device="cpu", progress=False)
    b = evaluate_lam(lam_run / "model", coinrun_dataset, seq_len=4, clips=2, device="cpu",
                     progress=False)
    assert a == b


def fails(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_mistakes_are_one_clear_line(lam_run, coinrun_dataset, make_dataset, tmp_path, capsys):
    err = fails(["eval", "lam", "--model", str(tmp_path / "none"), "--data",
                 str(coinrun_dataset)], capsys)
    assert "no lam model in" in err
    one_episode = make_dataset(64, 64, videos=1)
    err = fails(["eval", "lam", "--model", str(lam_run), "--data", str(one_episode)], capsys)
    assert "has no val episodes" in err and "--split" in err
    other_size = make_dataset(32, 48, videos=2)
    err = fails(["eval", "lam", "--model", str(lam_run), "--data", str(other_size)], capsys)
    assert "is 32x48 but the LAM was trained on 64x64" in err
    err = fails(["eval", "lam", "--model", str(lam_run), "--data", str(coinrun_dataset),
                 "--seq-len", "1"], capsys)
    assert "at least 2 frames" in err
    err = fails(["train", "lam", "--config", "test", "--data", str(coinrun_dataset), "--out",
                 str(tmp_path / "short"), "lam.train.seq_len=1"], capsys)
    assert "lam.train.seq_len must be at least 2" in err
    err = fails(["train", "lam", "--config", "test", "--data", str(other_size), "--out",
                 str(tmp_path / "odd"), "lam.patch=12"], capsys)
    assert "32x48, which does not split into 12px patches" in err and "lam.patch" in err


def test_eval_without_true_actions(lam_run, make_dataset, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", "lam", "--model", str(lam_run), "--data", str(make_dataset(64, 64, 2)),
                 "--json", str(out), "--device", "cpu"]) == 0
    result = json.loads(out.read_text())
    assert result["has_true_actions"] is False and "nmi" not in result
    assert result["transitions"] == 7 * result["clips"] > 0
    assert "NMI" not in capsys.readouterr().out
