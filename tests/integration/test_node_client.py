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


@pytest.mark.skipif(NODE is None or NPM is None, reason="no node and npm on this machine")
def test_the_type_declarations_compile_under_strict_typescript(tmp_path: Path) -> None:
    """index.d.ts against an app's use of every name (test-support/types-check.ts), with the
    TypeScript compiler from the npm registry; and a wrong use is rejected (the check bites)."""
    assert NPM is not None
    env = {**os.environ, "npm_config_cache": str(tmp_path / "npm-cache")}
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "package.json").write_text('{"name": "tools", "private": true}')
    installed = subprocess.run(
        [NPM, "install", "--no-audit", "--no-fund", "typescript@5", "@types/node@20"],
        cwd=tools, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if installed.returncode != 0:
        pytest.skip(f"typescript could not be installed from the npm registry: {installed.stderr}")
    app = tmp_path / "app"
    (app / "node_modules").mkdir(parents=True)
    (app / "package.json").write_text('{"name": "app", "private": true, "type": "module"}')
    (app / "node_modules" / "@types").symlink_to(tools / "node_modules" / "@types")
    (app / "node_modules" / "sidecar-supervisor-client").symlink_to(PACKAGE)
    for name in ("types-check.ts", "tsconfig.json"):
        shutil.copy(PACKAGE / "test-support" / name, app / name)
    tsc = [str(tools / "node_modules" / ".bin" / "tsc"), "-p", "tsconfig.json"]

    def compile_app() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            tsc, cwd=app, capture_output=True, text=True, timeout=300, check=False
        )

    good = compile_app()
    assert good.returncode == 0, good.stdout + good.stderr
    source = (app / "types-check.ts").read_text()
    (app / "types-check.ts").write_text(
        source.replace("const code: 75 = EXIT_LOCKED;", "const code: 76 = EXIT_LOCKED;")
    )
    bad = compile_app()
    assert bad.returncode != 0 and "TS2322" in bad.stdout, bad.stdout
