"""The pieces of a production deployment run on this machine, for the production smoke test
(``tests/test_production_smoke.py``): a database of its own on the suite's PostgreSQL server, a
private Redis, Debian's nginx with the example site configuration (``deploy/nginx.conf``) and a
self-signed certificate, and the ``Procfile``'s processes under honcho.

Every server listens on a loopback port chosen at run time, keeps its files, logs and pid in a
temporary folder and runs in a process group (session) of its own, so it is stopped, its
children included, whatever happened to the test. Nothing here touches the shared Redis, the
system nginx or the database of the pytest process.
"""

import base64
import contextlib
import email
import email.policy
import grp
import http.client
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from django_otp.oath import hotp

BASE_DIR = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
HONCHO = VENV_BIN / "honcho"
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
REDIS_SERVER = shutil.which("redis-server")
OPENSSL = shutil.which("openssl")
SITE_CONF = BASE_DIR / "deploy" / "nginx.conf"
CERT_SCRIPT = BASE_DIR / "deploy" / "self-signed-cert.sh"
# How much of each log a failure message quotes.
LOG_TAIL_CHARS = 6000


def stack_missing() -> str | None:
    """Why a production stack cannot run on this machine, or None when it can."""
    if NGINX is None:
        return "needs Debian's nginx (apt-get install nginx-light)"
    if REDIS_SERVER is None:
        return "needs redis-server on PATH (apt-get install redis-server)"
    if OPENSSL is None:
        return "needs openssl on PATH, for the self-signed certificate"
    if not HONCHO.exists():
        return f"needs honcho in the virtualenv ({HONCHO}; make install)"
    return None


def free_port() -> int:
    """A loopback TCP port nobody listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition, *, timeout: float, what: str, interval: float = 0.5):
    """Poll ``condition()`` until it returns something truthy, and return that; an
    ``AssertionError`` naming ``what`` when ``timeout`` seconds pass first. Another exception
    the condition raises counts as "not yet" (a server still starting refuses connections); an
    ``AssertionError`` it raises (a process died) ends the wait at once."""
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            if result := condition():
                return result
        except AssertionError:
            raise
        except Exception as exc:  # any failure to answer is "not yet"
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise AssertionError(f"Timed out after {timeout:.0f} s waiting for {what}{detail}.")
        time.sleep(interval)


def tail(path: Path, chars: int = LOG_TAIL_CHARS) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return text if len(text) <= chars else "…" + text[-chars:]


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------


class Process:
    """A server started in a session of its own, its output in ``log``.

    ``stop`` sends ``stop_signal`` to the whole process group, waits ``grace`` seconds, then
    kills what is left of the group.
    """

    def __init__(self, name: str, args: list[str], *, log: Path, env: dict, cwd: Path = BASE_DIR):
        self.name = name
        self.log = log
        with log.open("ab") as output:
            self.popen = subprocess.Popen(
                args,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def assert_running(self) -> None:
        assert self.running(), f"{self.name} exited ({self.popen.returncode}):\n{tail(self.log)}"

    def stop(self, *, stop_signal: int = signal.SIGTERM, grace: float = 30) -> None:
        if self.running():
            _signal_group(self.pid, stop_signal)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=grace)
        # The leader may be gone while the group's other members (its children) live on.
        _signal_group(self.pid, signal.SIGKILL)
        if self.running():
            self.popen.wait(timeout=10)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _children(pid: int) -> list[int]:
    """The ids of the processes whose parent is ``pid`` (from /proc)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name (field 2) may hold spaces and parentheses; the fields after the
        # last ")" are state, ppid, ...
        fields = stat.rpartition(")")[2].split()
        if int(fields[1]) == pid:
            children.append(int(entry.name))
    return children


# ---------------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------------


class PrivateRedis:
    """A redis-server of our own on a loopback port, without persistence: stopping it loses
    what it held, as a broker that crashed without an append-only file would."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = folder / "redis.log"
        self.process: Process | None = None

    def start(self) -> None:
        args = [
            REDIS_SERVER,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.folder),
            "--daemonize", "no",
        ]  # fmt: skip
        self.process = Process("redis", args, log=self.log, env={"PATH": os.environ["PATH"]})
        wait_until(
            lambda: self.process.assert_running() or self.ping(),
            timeout=30,
            what=f"Redis on port {self.port}",
            interval=0.1,
        )

    def ping(self) -> bool:
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=10)
            self.process = None


# ---------------------------------------------------------------------------------------------
# nginx
# ---------------------------------------------------------------------------------------------


def render_site(*, upstream: str, https_port: int, http_port: int, tls_dir: Path) -> str:
    """``deploy/nginx.conf`` as an operator installs it (``${ALEM_UPSTREAM}`` substituted), with
    its ports 80 and 443 moved to loopback ports of our own (IPv4 only: the shared machine's
    ports are not ours) and the certificate read from ``tls_dir``.
    Every replaced line must be in the file as written, so a change to it fails here loudly."""
    site = SITE_CONF.read_text()
    replacements = [
        ("${ALEM_UPSTREAM}", upstream),
        ("    listen 80;\n", f"    listen 127.0.0.1:{http_port};\n"),
        ("    listen [::]:80;\n", ""),
        ("    listen 443 ssl;\n", f"    listen 127.0.0.1:{https_port} ssl;\n"),
        ("    listen [::]:443 ssl;\n", ""),
        ("/etc/nginx/tls/", f"{tls_dir}/"),
    ]
    for old, new in replacements:
        assert old in site, f"deploy/nginx.conf no longer contains {old!r}"
        site = site.replace(old, new)
    return site


class Nginx:
    """Debian's nginx in the foreground with a prefix, pid, logs and certificate of its own.

    Run as root, its workers take an unprivileged user (as Debian's own nginx.conf says), and
    the folders they buffer request and response bodies in are in a world-searchable temporary
    folder that nginx creates them in and hands to that user."""

    def __init__(self, folder: Path, *, upstream: str):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.https_port = free_port()
        self.http_port = free_port()
        self.upstream = upstream
        self.tls_dir = folder / "tls"
        self.error_log = folder / "error.log"
        self.access_log = folder / "access.log"
        self.output = folder / "nginx.out"
        self.buffers = Path(tempfile.mkdtemp(prefix="alem-smoke-nginx-"))
        self.buffers.chmod(0o755)
        self.process: Process | None = None

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def certificate(self) -> Path:
        return self.tls_dir / "alem.crt"

    def _user_line(self) -> str:
        if os.geteuid() != 0:
            return ""  # the user directive only applies to a master started as root
        for name in ("www-data", "nobody"):
            try:
                user = pwd.getpwnam(name)
            except KeyError:
                continue
            return f"user {name} {grp.getgrgid(user.pw_gid).gr_name};\n"
        return ""

    def start(self) -> None:
        subprocess.run(
            ["sh", str(CERT_SCRIPT), "localhost", str(self.tls_dir)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        site = render_site(
            upstream=self.upstream,
            https_port=self.https_port,
            http_port=self.http_port,
            tls_dir=self.tls_dir,
        )
        (self.folder / "alem.conf").write_text(site)
        (self.folder / "nginx.conf").write_text(
            f"{self._user_line()}"
            "daemon off;\n"
            "worker_processes 1;\n"
            f"pid {self.folder}/nginx.pid;\n"
            f"error_log {self.error_log} info;\n"
            "events { worker_connections 256; }\n"
            "http {\n"
            f"    access_log {self.access_log};\n"
            f"    client_body_temp_path {self.buffers}/body;\n"
            f"    proxy_temp_path {self.buffers}/proxy;\n"
            f"    include {self.folder}/alem.conf;\n"
            "}\n"
        )
        config = ["-p", str(self.folder), "-c", str(self.folder / "nginx.conf")]
        checked = subprocess.run(
            [NGINX, "-t", "-q", *config], capture_output=True, text=True, timeout=60
        )
        assert checked.returncode == 0, f"nginx -t refused the configuration:\n{checked.stderr}"
        self.process = Process(
            "nginx", [NGINX, *config], log=self.output, env={"PATH": os.environ["PATH"]}
        )
        wait_until(
            lambda: (
                self.process.assert_running()
                or socket.create_connection(("127.0.0.1", self.https_port), timeout=1).close()
                or True
            ),
            timeout=30,
            what=f"nginx on port {self.https_port}",
            interval=0.1,
        )

    def stop(self) -> None:
        if self.process is not None:
            # QUIT: finish the requests in flight, then exit.
            self.process.stop(stop_signal=signal.SIGQUIT, grace=10)
            self.process = None
        shutil.rmtree(self.buffers, ignore_errors=True)

    def logs(self) -> str:
        return (
            f"--- nginx error log ({self.error_log}):\n{tail(self.error_log, 3000)}\n"
            f"--- nginx access log ({self.access_log}):\n{tail(self.access_log, 3000)}\n"
        )


# ---------------------------------------------------------------------------------------------
# The Procfile under honcho
# ---------------------------------------------------------------------------------------------


def write_env_file(path: Path, variables: dict[str, str]) -> Path:
    """A ``.env`` file as the README's deployment keeps it (one ``NAME=value`` a line), which
    honcho reads; values are quoted the way its parser (shlex) unquotes them."""
    path.write_text("".join(f"{name}={shlex.quote(value)}\n" for name, value in variables.items()))
    return path


class Honcho:
    """``honcho start`` of the Procfile's processes, with the environment in ``env_file``.

    honcho runs each process in a session of its own and forwards SIGTERM to each; the sessions
    it started are noted while it runs, so that whatever outlives it is killed too."""

    def __init__(self, folder: Path, *, env_file: Path, processes: list[str]):
        self.log = folder / "honcho.log"
        self.process = Process(
            "honcho",
            [
                str(HONCHO),
                "start",
                "--no-colour",
                "-f",
                "Procfile",
                "-e",
                str(env_file),
                *processes,
            ],
            log=self.log,
            env={
                # Procfile commands (gunicorn, celery) come from the virtualenv, as on a host.
                "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
                "HOME": str(Path.home()),
                "LANG": "C.UTF-8",
                "PYTHONUNBUFFERED": "1",
            },
        )
        self.sessions: set[int] = set()

    def note_sessions(self) -> None:
        if self.process.running():
            self.sessions.update(_children(self.process.pid))

    def stop(self) -> None:
        self.note_sessions()
        # honcho gives its processes 5 s after SIGTERM, then kills them.
        self.process.stop(grace=40)
        for session in self.sessions:
            _signal_group(session, signal.SIGKILL)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def logs(self) -> str:
        return f"--- honcho ({self.log}):\n{tail(self.log)}\n"


# ---------------------------------------------------------------------------------------------
# Talking to the stack
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: str


def http_get(url: str, *, cafile: Path | None = None, timeout: float = 15) -> Answer:
    """GET ``url`` without cookies and without following redirects; over HTTPS the server's
    certificate is checked against ``cafile``."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
        conn = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=timeout, context=context
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
        response = conn.getresponse()
        body = response.read().decode("utf-8", errors="replace")
        headers = {name.lower(): value for name, value in response.getheaders()}
        return Answer(response.status, headers, body)
    finally:
        conn.close()


class Mailbox:
    """The e-mails Django's file backend wrote to ``folder``: one file per connection, each
    message followed by a line of 79 dashes."""

    SEPARATOR = b"\n" + b"-" * 79 + b"\n"

    def __init__(self, folder: Path):
        self.folder = folder

    def messages(self) -> list[EmailMessage]:
        found = []
        for path in sorted(self.folder.glob("*.log")):
            for raw in path.read_bytes().split(self.SEPARATOR):
                if raw.strip():
                    found.append(email.message_from_bytes(raw, policy=email.policy.default))
        return found

    def to(self, address: str, *, containing: str) -> list[EmailMessage]:
        """The messages to ``address`` whose plain-text body contains ``containing``."""
        return [
            message
            for message in self.messages()
            if message["To"] == address
            and containing in message.get_body(preferencelist=("plain",)).get_content()
        ]


class OneTimeCodes:
    """What each demo user's authenticator app shows, from the otpauth:// URIs seed_demo writes
    to ``demo-otp.txt``, as a person would type it: a code is good once, so each user's next code
    is the one of the step after the last one used (the server accepts one step either side of
    now), waiting for the clock when that step is still too far ahead."""

    def __init__(self, otp_file: Path):
        self.secrets: dict[str, dict] = {}
        for line in otp_file.read_text().splitlines():
            username, _, uri = line.partition(" ")
            query = {key: values[0] for key, values in parse_qs(urlsplit(uri).query).items()}
            self.secrets[username] = {
                "key": base64.b32decode(query["secret"]),
                "digits": int(query.get("digits", 6)),
                "period": int(query.get("period", 30)),
            }
        self.last_step: dict[str, int] = {}

    def code(self, username: str) -> str:
        secret = self.secrets[username]
        while True:
            now = int(time.time()) // secret["period"]
            step = max(now, self.last_step.get(username, -1) + 1)
            if step <= now + 1:
                break
            time.sleep(1)
        self.last_step[username] = step
        return f"{hotp(secret['key'], step, digits=secret['digits']):0{secret['digits']}d}"


HASHED_STATIC = re.compile(r"/static/.+\.[0-9a-f]{12}\.[a-z0-9]+$")
