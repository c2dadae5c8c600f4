"""The embedded PostgreSQL launcher (``embedded_db.py``) that ``make run`` and ``make test`` use.

Each test runs the launcher as a process over a cluster of its own in a scratch ``var/``
(``ALEM_VAR_DIR``), never the one the suite itself runs on. The commands it runs are small
Python scripts that report what they saw as JSON.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parent.parent
LAUNCHER = [sys.executable, str(BASE_DIR / "embedded_db.py"), "--"]

# Connects to the DATABASE_URL it was given, keeps an 18-decimal quantity in a table that
# survives between runs, and prints what it found.
REPORT = textwrap.dedent(
    """
    import json, os, shutil, psycopg
    url = os.environ["DATABASE_URL"]
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("CREATE TABLE IF NOT EXISTS kept (quantity numeric(38, 18))")
        db.execute("INSERT INTO kept VALUES ('833.333333333333333333')")
        kept = [str(q) for (q,) in db.execute("SELECT quantity FROM kept")]
        version = db.execute("SHOW server_version").fetchone()[0]
        tcp = db.execute("SHOW listen_addresses").fetchone()[0]
    print(json.dumps({"url": url, "kept": kept, "version": version, "tcp": tcp,
                      "pg_dump": shutil.which("pg_dump")}))
    """
)


@pytest.fixture
def var_dir():
    """A scratch var/ that another user may walk into (the server's own user, when the suite
    runs as root); pytest's tmp_path is private to the current user."""
    path = Path(tempfile.mkdtemp(prefix="alem-embedded-"))
    path.chmod(0o755)
    yield path
    if (path / "postgres" / "postmaster.pid").exists():
        run(path, "true")  # a test that failed midway leaves no server behind
    shutil.rmtree(path, ignore_errors=True)


def environment(var_dir: Path, **variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return {**env, "ALEM_VAR_DIR": str(var_dir), **variables}


def run(var_dir: Path, *command: str, **variables: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*LAUNCHER, *command],
        cwd=BASE_DIR,
        env=environment(var_dir, **variables),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def report(var_dir: Path) -> dict:
    result = run(var_dir, sys.executable, "-c", REPORT)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def server_running(var_dir: Path) -> bool:
    return (var_dir / "postgres" / "postmaster.pid").exists()


def test_without_database_url_the_command_gets_an_embedded_postgresql_and_it_stops_after(
    var_dir,
):
    first = report(var_dir)

    assert first["version"].startswith("18.")
    assert first["url"].startswith("postgres://alem@")
    assert first["url"].endswith("/alem")
    assert first["tcp"] == ""  # a Unix socket only
    assert first["kept"] == ["833.333333333333333333"]  # 18 decimals, exactly
    assert Path(first["pg_dump"]).parent.parent.name == "pginstall"  # the server's own tools
    assert not server_running(var_dir)


def test_the_data_is_kept_between_runs(var_dir):
    report(var_dir)

    second = report(var_dir)

    assert second["kept"] == ["833.333333333333333333"] * 2


def test_the_commands_exit_status_is_the_launchers(var_dir):
    result = run(var_dir, sys.executable, "-c", "raise SystemExit(3)")

    assert result.returncode == 3
    assert not server_running(var_dir)


def test_launchers_share_one_server_and_the_last_one_out_stops_it(var_dir):
    started = var_dir / "started"
    release = var_dir / "release"
    waiting = subprocess.Popen(
        [
            *LAUNCHER,
            sys.executable,
            "-c",
            f"import pathlib, time\npathlib.Path({str(started)!r}).touch()\n"
            f"while not pathlib.Path({str(release)!r}).exists(): time.sleep(0.1)",
        ],
        cwd=BASE_DIR,
        env=environment(var_dir),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and waiting.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert started.exists(), waiting.communicate()[1]

        inside = report(var_dir)
        still_up = server_running(var_dir)
    finally:
        release.touch()
        _, errors = waiting.communicate(timeout=60)

    assert inside["kept"] == ["833.333333333333333333"]
    assert still_up  # the second launcher left it running for the first
    assert waiting.returncode == 0, errors
    assert not server_running(var_dir)


def test_with_database_url_the_command_runs_against_it_and_nothing_is_started(var_dir):
    result = run(
        var_dir,
        sys.executable,
        "-c",
        "import os; print(os.environ['DATABASE_URL'])",
        DATABASE_URL="postgres://alem@db.internal:5432/alem",
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "postgres://alem@db.internal:5432/alem"
    assert list(var_dir.iterdir()) == []


def test_a_server_that_cannot_start_is_explained_and_names_database_url(var_dir):
    (var_dir / "postgres").mkdir()
    (var_dir / "postgres" / "notes.txt").write_text("not a cluster")

    result = run(var_dir, "true")

    assert result.returncode == 1
    assert "the embedded PostgreSQL could not be used" in result.stderr
    assert "holds no PostgreSQL cluster" in result.stderr
    assert "set DATABASE_URL" in result.stderr


def test_a_launcher_without_a_command_shows_its_usage(var_dir):
    result = run(var_dir)

    assert result.returncode == 2
    assert "usage: embedded_db.py -- COMMAND" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="the server's own user is only for root")
def test_as_root_the_server_runs_as_its_own_unprivileged_user_and_group(var_dir):
    script = textwrap.dedent(
        """
        import json, os, psycopg
        with psycopg.connect(os.environ["DATABASE_URL"]) as db:
            pid = db.execute("SELECT pg_backend_pid()").fetchone()[0]
            status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
        print(json.dumps({k: status[k].split() for k in ("Uid", "Gid", "Groups")}))
        """
    )
    result = run(var_dir, sys.executable, "-c", script)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])

    import grp
    import pwd

    user = pwd.getpwnam("alem-postgres")
    assert set(seen["Uid"]) == {str(user.pw_uid)}
    assert set(seen["Gid"]) == {str(user.pw_gid)}
    assert grp.getgrgid(user.pw_gid).gr_name == "alem-postgres"
    assert seen["Groups"] in ([], [str(user.pw_gid)])  # root's groups are not kept
    assert (var_dir / "postgres").stat().st_uid == user.pw_uid
    assert (var_dir / "postgres").stat().st_mode & 0o777 == 0o700
    assert var_dir.stat().st_uid == 0  # nothing outside var/postgres changed owner
