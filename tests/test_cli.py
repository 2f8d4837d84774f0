"""The `genie` command: help everywhere, light start-up, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from genie.cli import main

COMMANDS = [[], ["data"], ["data", "record"], ["data", "prepare"], ["data", "info"],
            ["train"], ["train", "tokenizer"], ["eval"], ["eval", "tokenizer"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "genie")
def test_help_everywhere(command, capsys):
    with pytest.raises(SystemExit) as exit:
        main([*command, "--help"])
    assert exit.value.code == 0
    assert "usage: genie" in capsys.readouterr().out


def test_help_imports_nothing_heavy():
    code = (
        "import sys; from genie.cli import build_parser; build_parser(); "
        "print(sorted({'torch', 'av', 'pygame', 'numpy', 'procgen'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    done = subprocess.run([sys.executable, "-m", "genie", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stderr == ""  # no banners, no warnings


@pytest.mark.parametrize(
    "argv, message",
    [
        (["data", "prepare", "src"], "required: --out"),
        (["data", "prepare", "src", "--out", "x", "--size", "big"], "is not N or HxW"),
        (["data", "prepare", "src", "--out", "x", "--fps", "nan"], "'nan' is not a frame rate"),
        (["data", "record", "coinrun", "--out", "x", "--episodes", "0"], "at least 1"),
        (["data", "record", "coinrun", "--out", "x", "--repeat", "0"], "at least 1"),
        (["data", "record", "pong", "--out", "x"], "invalid choice"),
        (["data", "info", "/no/such/dataset"], "does not exist"),
        (["data", "record", "coinrun", "--out", "x", "--seed", "-1"], "'-1' is not a seed"),
        (["generate", "-o", "x.mp4", "--seed", "-1"], "'-1' is not a seed"),
        (["play", "--headless", "--seed", "-2"], "'-2' is not a seed"),
        (["eval", "world", "--data", "d", "--seed", "-1"], "'-1' is not a seed"),
        (["eval", "lam", "--model", "m", "--data", "d", "--seed", "4294967296"], "not a seed"),
        (["fly"], "invalid choice"),
        (["train"], "required: STAGE"),
        (["train", "tokenizer", "--data", "d", "--out", "o", "--device", "tpu"], "invalid choice"),
        (["train", "tokenizer", "--data", "/no/data", "--out", "o", "--device", "cpu"],
         "does not exist"),
        (["eval", "tokenizer", "--model", "/no/run", "--data", "d"], "no tokenizer model"),
    ],
)
def test_mistakes_are_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exit:
        code = exit.code
    assert code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not any(tmp_path.iterdir())  # a refused command leaves nothing behind


def test_every_default_is_in_the_help():
    import argparse

    from genie.cli import build_parser

    def options(parser):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from options(sub)
            elif action.option_strings and action.default not in (None, False, "==SUPPRESS=="):
                yield parser.prog, action

    missing = [f"{prog} {action.option_strings[-1]}" for prog, action in options(build_parser())
               if "default" not in (action.help or "").lower()]
    assert missing == []
