"""The CLI: every subcommand has --help, and every `bigfive X` in the README exists."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bigfive.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]


def readme_subcommands() -> set[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, flags=re.S)
    names = set()
    for block in blocks:
        for line in block.splitlines():
            line = line.split(" #", 1)[0]  # drop shell comments
            # a command starts a line or follows &&, ;, | or `python -m`
            for match in re.finditer(r"(?:^|&&|;|\||-m)\s*(?:\$ )?bigfive\s+([a-z][a-z-]*)", line):
                names.add(match.group(1))
    return names


def test_readme_names_only_real_subcommands():
    names = readme_subcommands()
    assert names, "README shows no bigfive command"
    unknown = names - set(COMMANDS)
    assert not unknown, f"README names subcommands that do not exist: {sorted(unknown)}"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"bigfive {command}" in out
    assert "--params" in out


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "bigfive", "--help"], capture_output=True, text=True, check=True)
    assert "predict" in result.stdout


def test_config_error_is_one_clear_line(tmp_path, capsys):
    bad = tmp_path / "params.yaml"
    bad.write_text((ROOT / "params.yaml").read_text().replace("heads: 4", "heads: 3"))
    code = main(["model-summary", "--params", str(bad)])
    err = capsys.readouterr().err
    assert code == 1
    assert "model.heads" in err and "do not divide" in err
