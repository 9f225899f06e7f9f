"""Real third-party sidecars for tests: redis-server and nginx (and the retitle helper) on a free
port, with every file they write (config, pid file, logs, temp dirs) inside one temp dir.

`find_redis()`/`find_nginx()` return the binary or None; `redis_server()`/`nginx_server()` raise
`ServerUnavailable` (its message is a ready-made `pytest.skip` reason) when it is absent:

    try:
        server = servers.nginx_server(free_port(), tmp_path)
    except servers.ServerUnavailable as exc:
        pytest.skip(str(exc))
    config = render_config([server.sidecar("web")])

Both rewrite their process title and clobber the memory /proc/PID/environ shows (no marker, no
SUPERVISOR_* tag survives). The `daemonize=True` variants fork, let the spawned process exit 0,
and run the server in a new session (setsid) whose id is the server's own pid.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from tests import support

RETITLE = Path(__file__).resolve().with_name("retitle.py")
TAGS = ("SUPERVISOR_SIDECAR", "SUPERVISOR_OWNER")
# Debian's PATH for ordinary users has no sbin, and nginx lives in /usr/sbin.
_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


class ServerUnavailable(Exception):
    """The server's binary is not installed; str() is a skip reason."""


@dataclass(frozen=True)
class Server:
    """How to run one server: argv plus where its files go."""

    kind: str  # "redis" | "nginx" | "retitle"
    argv: tuple[str, ...]
    port: int
    directory: Path
    pid_file: Path
    daemonizes: bool
    health_path: str | None  # an HTTP readiness path, or None for a TCP probe

    @property
    def command(self) -> list[str]:
        return list(self.argv)

    def read_pid(self) -> int | None:
        """The pid the server wrote to its pid file, if it did (nginx and redis remove it on a
        clean stop, not after SIGKILL)."""
        try:
            return int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def sidecar(self, name: str, **tables: object) -> dict[str, object]:
        """A config entry (for tests.support.render_config) running this server."""
        ready: dict[str, object] = (
            {"probe": "http", "path": self.health_path} if self.health_path else {"probe": "tcp"}
        )
        entry = support.sidecar_entry(name, self.command, self.port, ready=ready)
        return support.merge_tables(entry, tables)


def _which(program: str) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", os.defpath), *_SBIN])
    return shutil.which(program, path=path)


def find_redis() -> str | None:
    return _which("redis-server")


def find_nginx() -> str | None:
    return _which("nginx")


def _require(found: str | None, program: str, package: str) -> str:
    if found is None:
        raise ServerUnavailable(f"{program} not installed (Debian: apt-get install {package})")
    return found


def redis_server(port: int, directory: Path, *, daemonize: bool = False) -> Server:
    """redis-server on 127.0.0.1:`port`, no persistence, files in `directory`.

    Title afterwards: `redis-server 127.0.0.1:PORT` (and NULs); environ: all NULs. Foreground:
    one process (plus threads bio_*, jemalloc_bg_thd) that holds the socket. Daemonized: the
    spawned process exits 0 at once; the server is its child, in a session of its own.
    """
    binary = _require(find_redis(), "redis-server", "redis-server")
    directory.mkdir(parents=True, exist_ok=True)
    pid_file = directory / "redis.pid"
    # `--save ""` (an empty argument) turns RDB snapshots off; logfile "" is stdout, which a
    # daemonized redis points at /dev/null, so it gets a file instead.
    logfile = str(directory / "redis.log") if daemonize else ""
    argv = (
        binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--daemonize", "yes" if daemonize else "no", "--dir", str(directory),
        "--pidfile", str(pid_file), "--logfile", logfile,
    )  # fmt: skip
    return Server("redis", argv, port, directory, pid_file, daemonize, None)


def _nginx_string(path: Path) -> str:
    text = str(path)
    if any(c in text for c in '"\\;{}$') or any(c.isspace() for c in text):
        raise ValueError(f"path unsafe in nginx.conf: {text!r}")
    return text


def nginx_conf(port: int, directory: Path, *, daemonize: bool = False, workers: int = 2) -> str:
    """A minimal nginx.conf: GET /health -> 200 on 127.0.0.1:`port`, everything in `directory`.

    As root nginx would run its workers as `nobody` (a different uid from the master: a holder
    of another uid is foreign); `user` keeps them at our uid. Not root, nginx ignores `user` with
    a warning, so it is only written for root.
    """
    d = _nginx_string(directory)
    user = ""
    if os.geteuid() == 0:
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};\n"
    # Every temp path is set: the compiled-in /var/lib/nginx/* is not writable unprivileged
    # (nginx then exits: mkdir() "/var/lib/nginx/body" failed) and must not be touched as root.
    return (
        f"daemon {'on' if daemonize else 'off'};\n"
        f"{user}"
        "master_process on;\n"
        f"worker_processes {workers};\n"
        f"pid {d}/nginx.pid;\n"
        "error_log stderr notice;\n"
        "events { worker_connections 64; }\n"
        "http {\n"
        "    access_log off;\n"
        f"    client_body_temp_path {d}/client_body;\n"
        f"    proxy_temp_path {d}/proxy;\n"
        f"    fastcgi_temp_path {d}/fastcgi;\n"
        f"    uwsgi_temp_path {d}/uwsgi;\n"
        f"    scgi_temp_path {d}/scgi;\n"
        "    server {\n"
        f"        listen 127.0.0.1:{port};\n"
        '        location = /health { default_type text/plain; return 200 "ok\\n"; }\n'
        "    }\n"
        "}\n"
    )


def nginx_server(
    port: int, directory: Path, *, daemonize: bool = False, workers: int = 2
) -> Server:
    """nginx (a master and `workers` workers) with its config written to `directory`.

    Titles afterwards: `nginx: master process <argv joined by spaces>` (so the default marker
    still matches the master) and `nginx: worker process`; environ: no tags in any of them.
    Master and workers all hold the LISTEN socket, share the master's session and group, and the
    workers survive a SIGKILLed master (reparented, still listening). `-e stderr` keeps nginx
    from opening the compiled-in /var/log/nginx/error.log before it reads the config.
    """
    binary = _require(find_nginx(), "nginx", "nginx")
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "nginx.conf"
    conf.write_text(nginx_conf(port, directory, daemonize=daemonize, workers=workers))
    argv = (binary, "-p", str(directory), "-c", str(conf), "-e", "stderr")
    return Server("nginx", argv, port, directory, directory / "nginx.pid", daemonize, "/health")


def retitle_server(
    port: int,
    directory: Path,
    *,
    daemonize: bool = False,
    workers: int = 0,
    title: str | None = None,
) -> Server:
    """tests/helpers/retitle.py: the same disguise without any package (Linux only)."""
    if sys.platform != "linux":
        raise ServerUnavailable("retitle.py needs Linux (/proc/PID/stat arg_start..env_end)")
    directory.mkdir(parents=True, exist_ok=True)
    pid_file = directory / "retitle.pid"
    argv: list[str] = [sys.executable, str(RETITLE), str(port), "--pid-file", str(pid_file)]
    if workers:
        argv += ["--workers", str(workers)]
    if daemonize:
        argv.append("--daemonize")
    if title is not None:
        argv += ["--title", title]
    return Server("retitle", tuple(argv), port, directory, pid_file, daemonize, "/health")


def visible_identity(pid: int, marker: str, tags: Sequence[str] = TAGS) -> list[str]:
    """What of our planted evidence a process still shows, the way the supervisor reads it
    (psutil): [] when neither `marker` (in the space-joined command line) nor a tag is left."""
    proc = psutil.Process(pid)
    shown: list[str] = []
    if marker and marker in " ".join(proc.cmdline()):
        shown.append(f"marker {marker!r} in the command line")
    environ = proc.environ()
    shown += [f"{tag} in the environment" for tag in tags if tag in environ]
    return shown
