"""The pure parts of isolation by cgroup: config, names, the shim's argv, the verdict."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from supervisor import config
from supervisor.config import IsolationMode
from supervisor.errors import ConfigError
from supervisor.reconcile.classify import Evidence, OwnerState, Verdict, classify
from supervisor.system import cgroups, execshim

SIDECAR = {"name": "web", "command": ["server"], "port": 8000}


def test_isolation_defaults_to_auto_and_takes_the_three_modes() -> None:
    assert config.parse({"sidecar": [SIDECAR]}).supervisor.isolation is IsolationMode.AUTO
    for mode in ("auto", "cgroup", "none"):
        parsed = config.parse({"supervisor": {"isolation": mode}, "sidecar": [SIDECAR]})
        assert parsed.supervisor.isolation is IsolationMode(mode)


def test_an_unknown_isolation_is_a_config_error_naming_the_choices() -> None:
    with pytest.raises(ConfigError) as caught:
        config.parse({"supervisor": {"isolation": "jail"}, "sidecar": [SIDECAR]})
    assert "supervisor.isolation" in caught.value.message
    assert "cgroup" in caught.value.message


def test_the_cgroup2_mount_is_found_in_mountinfo_on_hybrid_and_unified_hosts() -> None:
    hybrid = (
        "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
        "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
    )
    assert cgroups.mount_point(hybrid) == Path("/sys/fs/cgroup/unified")
    unified = "29 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
    assert cgroups.mount_point(unified) == Path("/sys/fs/cgroup")
    assert cgroups.mount_point("22 1 0:21 / /proc rw - proc proc rw\n") is None


def test_owner_of_path_reads_the_state_id_and_the_sidecar() -> None:
    sid = "0123456789abcdef"
    assert cgroups.owner_of_path(f"/sidecar-supervisor/s-{sid}/web") == cgroups.Owner(sid, "web")
    assert cgroups.owner_of_path(
        f"/user.slice/user@1000.service/app.slice/x.service/s-{sid}/_check-web"
    ) == cgroups.Owner(sid, "web", health_check=True)
    for stranger in ("/", "/system.slice/nginx.service", f"/s-{sid}", f"/s-{sid}/web/deeper"):
        assert cgroups.owner_of_path(stranger) is None


def test_the_state_id_follows_the_real_path_and_the_inode(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    link = tmp_path / "link"
    link.symlink_to(state)
    first = cgroups.state_id(state)
    assert cgroups.state_id(link) == first and len(first) == 16
    other = tmp_path / "other"
    other.mkdir()
    assert cgroups.state_id(other) != first


def test_the_shim_joins_the_cgroup_before_it_execs_and_fails_clearly(tmp_path: Path) -> None:
    procs = tmp_path / "cgroup.procs"
    procs.write_text("")
    argv = execshim.wrap(["/bin/sh", "-c", "cat /proc/self/stat >/dev/null; echo ran"], {},
                         listen=False, cgroup_procs=str(procs))  # fmt: skip
    assert argv[:3] == [execshim.SH, "-c", execshim.JOIN + execshim.EXEC]
    ran = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    assert ran.returncode == 0 and ran.stdout == "ran\n"
    assert procs.read_text() == "0\n"  # what the kernel reads as "this process"
    missing = str(tmp_path / "gone" / "cgroup.procs")
    argv = execshim.wrap(["/bin/echo", "ran"], {}, listen=False, cgroup_procs=missing)
    failed = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    assert failed.returncode == execshim.JOIN_FAILED_CODE and failed.stdout == ""
    assert f"{execshim.JOIN_FAILED} {missing}" in failed.stderr


def _evidence(**fields: object) -> Evidence:
    base: dict[str, object] = {
        "pid": 4321,
        "uid": 33,  # another user: without a cgroup that alone would make it foreign
        "command": "nginx: worker process",
        "ppid": 1,
        "sidecar_tag": None,
        "owner_state": OwnerState.NONE,
        "supervisor_ancestor": False,
    }
    return Evidence(**{**base, **fields})  # type: ignore[arg-type]


def test_a_member_of_our_cgroup_is_an_orphan_by_its_cgroup_whatever_its_uid() -> None:
    verdict = classify(_evidence(cgroup_sidecar="web"), name="web", marker="nginx", our_uid=0)
    assert verdict.verdict is Verdict.ORPHAN and "by its cgroup" in verdict.reason


def test_a_member_of_a_running_sidecars_cgroup_is_live_and_never_killed() -> None:
    evidence = _evidence(cgroup_sidecar="api", cgroup_running=True)
    verdict = classify(evidence, name="web", marker="nginx", our_uid=0)
    assert verdict.verdict is Verdict.LIVE and verdict.current_sidecar == "api"
    assert "cgroup" in verdict.reason


def test_without_cgroup_evidence_the_verdict_is_unchanged() -> None:
    verdict = classify(_evidence(), name="web", marker="nginx", our_uid=0)
    assert verdict.verdict is Verdict.FOREIGN
