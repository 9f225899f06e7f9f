"""clients/node (the npm package sidecar-supervisor-client), from pytest: its own tests under
`node --test` against this venv's daemon, and `npm pack` producing an installable package that
carries its types. Both skip without node (and npm).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.support import PYTHON, ROOT

NODE = shutil.which("node")
NPM = shutil.which("npm")
PACKAGE = ROOT / "clients" / "node"


@pytest.mark.skipif(NODE is None, reason="no node on this machine")
def test_the_node_package_tests_pass_against_the_real_daemon() -> None:
    assert NODE is not None
    env = {**os.environ, "SUPERVISOR_COMMAND": json.dumps([PYTHON, "-m", "supervisor"])}
    done = subprocess.run(
        [NODE, "--test", "test/"],
        cwd=PACKAGE,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert "# fail 0" in done.stdout and "# pass 0" not in done.stdout, done.stdout[-3000:]


@pytest.mark.skipif(NODE is None or NPM is None, reason="no node and npm on this machine")
def test_npm_pack_makes_a_package_with_its_types_that_installs_and_imports(tmp_path: Path) -> None:
    assert NODE is not None and NPM is not None
    env = {
        **os.environ,
        "npm_config_cache": str(tmp_path / "npm-cache"),
        "npm_config_update_notifier": "false",
    }
    packed = subprocess.run(
        [NPM, "pack", "--json", "--pack-destination", str(tmp_path)],
        cwd=PACKAGE, env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    (info,) = json.loads(packed.stdout)
    files = {entry["path"] for entry in info["files"]}
    assert {"package.json", "index.js", "index.d.ts", "README.md"} <= files, files
    assert not any(name.startswith(("test", "node_modules")) for name in files), files
    tarball = tmp_path / info["filename"]
    with tarfile.open(tarball) as tar:
        manifest = json.load(tar.extractfile("package/package.json"))  # type: ignore[arg-type]
    assert manifest["types"] == "./index.d.ts"
    assert manifest["exports"]["."]["types"] == "./index.d.ts"
    assert not manifest.get("dependencies")

    # Installed by name into an app (offline: it has no dependencies), it imports.
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text('{"name": "app", "private": true, "type": "module"}')
    subprocess.run(
        [NPM, "install", "--offline", "--no-audit", "--no-fund", str(tarball)],
        cwd=app, env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    installed = app / "node_modules" / "sidecar-supervisor-client"
    assert (installed / "index.d.ts").is_file()
    probe = (
        "import { Supervisor, SupervisorError, EXIT_LOCKED } from 'sidecar-supervisor-client';"
        "console.log(JSON.stringify([typeof Supervisor.launch, new SupervisorError('x', 'y').code,"
        " EXIT_LOCKED]));"
    )
    done = subprocess.run(
        [NODE, "--input-type=module", "-e", probe],
        cwd=app, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert json.loads(done.stdout) == ["function", "x", 75]
