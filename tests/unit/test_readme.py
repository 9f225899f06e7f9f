"""The README a newcomer reads: its config runs as `init --minimal` writes it; its links exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from supervisor import cli
from supervisor.cli import starter
from tests.support import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_readme_shows_the_minimal_starter_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    assert starter.example_text(minimal=True) in readme
    lines = [line for line in starter.example_text(minimal=True).splitlines() if line.strip()]
    assert len([line for line in lines if not line.startswith("#")]) <= 10


def test_the_two_commands_lead_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line and not line.startswith("#")]
    assert commands == [
        "python3 -m venv .venv && . .venv/bin/activate && pip install . "
        "&& supervisor run -c config/demo.toml",
        "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' "
        "&& .venv/bin/python -m pytest -q",
    ]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_cite_only_files_in_the_repository(doc: Path) -> None:
    text = doc.read_text()
    if doc.name == "README.md":
        assert "SPEC" not in text, "the SPEC is not in the repository"
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        if target.startswith(("http://", "https://")):
            continue
        assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"


def test_init_minimal_writes_a_config_that_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "supervisor.toml"
    assert cli.main(["init", "--minimal", str(path)]) == 0
    assert path.read_text() == starter.example_text(minimal=True)
    capsys.readouterr()
    assert cli.main(["check-config", "-c", str(path)]) == 0
    assert "valid; 2 sidecars: api (port 4821), web (port 4822)" in capsys.readouterr().out
