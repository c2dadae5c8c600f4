"""The files that run Alem as separate processes agree with each other and work.

The ``Procfile`` is the one definition of the processes: ``compose.yaml`` and the ``Dockerfile``
must run exactly its commands. gunicorn's configuration takes its address, workers and trusted
proxies from the environment and loads with a production environment. ``collectstatic`` under
the image's build-time values writes hashed, compressed files, and the pages then name them.
No image is built here.
"""

import json
import os
import runpy
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.test import override_settings

from tests.test_settings import PRODUCTION

BASE_DIR = Path(__file__).resolve().parent.parent
GUNICORN_CONFIG = BASE_DIR / "deploy" / "gunicorn.conf.py"
BUILD_TIME_ENV = BASE_DIR / "deploy" / "build-time.env"
MANIFEST_STORAGE = "whitenoise.storage.CompressedManifestStaticFilesStorage"
PROCESSES = {"web", "worker", "beat"}


def procfile() -> dict[str, list[str]]:
    """The Procfile's processes, name to command split into words."""
    processes = {}
    for line in (BASE_DIR / "Procfile").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, command = line.partition(":")
        processes[name.strip()] = shlex.split(command)
    return processes


def compose_services() -> dict:
    return yaml.safe_load((BASE_DIR / "compose.yaml").read_text())["services"]


def words(command: str | list[str]) -> list[str]:
    """A compose command as the words it runs (compose accepts a string or a list)."""
    return shlex.split(command) if isinstance(command, str) else list(command)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (INSTRUCTION, arguments), continuation lines joined."""
    instructions = []
    current = ""
    for line in (BASE_DIR / "Dockerfile").read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            keyword, _, arguments = current.strip().partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
            current = ""
    return instructions


def build_time_env() -> dict[str, str]:
    variables = {}
    for line in BUILD_TIME_ENV.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            variables[name.strip()] = value.strip()
    return variables


def clean_env(**variables: str) -> dict[str, str]:
    """A process environment with none of the settings' variables but these."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(Path.home()),
        **variables,
    }


# ---------------------------------------------------------------------------------------------
# One definition of the processes
# ---------------------------------------------------------------------------------------------


def test_procfile_defines_the_web_a_worker_and_one_beat_on_the_database_scheduler():
    processes = procfile()

    assert set(processes) == PROCESSES
    assert processes["web"] == ["gunicorn", "-c", "deploy/gunicorn.conf.py", "alem.wsgi"]
    assert processes["worker"][:4] == ["celery", "-A", "alem", "worker"]
    # The beat runs on its own: a worker with --beat would be a second scheduler once scaled.
    assert "--beat" not in processes["worker"] and "-B" not in processes["worker"]
    assert processes["beat"][:4] == ["celery", "-A", "alem", "beat"]
    scheduler = processes["beat"][processes["beat"].index("--scheduler") + 1]
    assert scheduler == "django_celery_beat.schedulers:DatabaseScheduler"


def test_compose_runs_each_procfile_process_with_the_procfiles_command():
    services = compose_services()

    for name, command in procfile().items():
        assert words(services[name]["command"]) == command, name


def test_compose_runs_exactly_one_beat():
    services = compose_services()

    beats = [
        name
        for name, service in services.items()
        if "command" in service and "beat" in words(service["command"])
    ]
    assert beats == ["beat"]


def test_compose_has_the_processes_their_services_and_a_tls_proxy():
    services = compose_services()

    assert PROCESSES | {"postgres", "redis", "proxy"} <= set(services)
    proxy = services["proxy"]
    assert [port for port in proxy["ports"] if port.endswith(":443")]
    template = "./deploy/nginx.conf:/etc/nginx/templates/"
    assert [volume for volume in proxy["volumes"] if volume.startswith(template)]
    assert proxy["environment"]["ALEM_UPSTREAM"] == "web:8000"


def test_compose_web_believes_forwarded_headers_from_the_proxy_alone():
    services = compose_services()

    proxy_address = services["proxy"]["networks"]["alem"]["ipv4_address"]
    web = services["web"]["environment"]
    assert web["FORWARDED_ALLOW_IPS"] == proxy_address
    assert web["SECURE_PROXY_SSL_HEADER"] == "X-Forwarded-Proto"
    # nginx replaces X-Forwarded-For with the one address it saw (deploy/nginx.conf).
    assert web["ALEM_TRUSTED_PROXIES"] == "1"


def test_dockerfile_runs_the_procfiles_web_command_as_an_unprivileged_user():
    instructions = dockerfile_instructions()

    assert instructions[0] == ("FROM", "python:3.11-slim")
    cmd = [arguments for keyword, arguments in instructions if keyword == "CMD"]
    assert [json.loads(arguments) for arguments in cmd] == [procfile()["web"]]
    users = [arguments for keyword, arguments in instructions if keyword == "USER"]
    assert users == ["alem"]
    keywords = [keyword for keyword, _ in instructions]
    assert keywords.index("USER") < keywords.index("CMD")


def test_dockerfile_keeps_the_build_time_values_out_of_the_image_environment():
    instructions = dockerfile_instructions()
    secrets = set(build_time_env()) - {"DEBUG"}

    env_lines = " ".join(arguments for keyword, arguments in instructions if keyword == "ENV")
    assert not [name for name in secrets if name in env_lines]
    assert not [keyword for keyword, _ in instructions if keyword == "ARG"]
    collectstatic = [
        arguments
        for keyword, arguments in instructions
        if keyword == "RUN" and "collectstatic" in arguments
    ]
    assert len(collectstatic) == 1
    assert ". deploy/build-time.env" in collectstatic[0]


# ---------------------------------------------------------------------------------------------
# gunicorn
# ---------------------------------------------------------------------------------------------


def gunicorn_config(monkeypatch, **variables: str) -> dict:
    for name in ("GUNICORN_BIND", "WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(GUNICORN_CONFIG))


def test_gunicorn_listens_on_loopback_and_believes_only_a_local_proxy_by_default(monkeypatch):
    # honcho sets PORT; the explicit bind must still win over gunicorn's 0.0.0.0:$PORT.
    config = gunicorn_config(monkeypatch, PORT="5000")

    assert config["bind"] == ["127.0.0.1:8000"]
    assert config["forwarded_allow_ips"] == "127.0.0.1,::1"
    assert 1 <= config["workers"] <= 8
    assert config["accesslog"] == "-"
    assert config["max_requests"] == 1000
    assert config["max_requests_jitter"] == 100
    assert config["graceful_timeout"] < config["timeout"] + 1
    assert config["control_socket_disable"] is True


def test_gunicorn_takes_bind_workers_and_trusted_proxies_from_the_environment(monkeypatch):
    config = gunicorn_config(
        monkeypatch,
        GUNICORN_BIND="0.0.0.0:9000",
        WEB_CONCURRENCY="5",
        FORWARDED_ALLOW_IPS="172.30.47.10",
    )

    assert config["bind"] == ["0.0.0.0:9000"]
    assert config["workers"] == 5
    assert config["forwarded_allow_ips"] == "172.30.47.10"


@pytest.mark.parametrize("value", ["0", "many"])
def test_gunicorn_refuses_a_worker_count_that_is_not_a_positive_number(monkeypatch, value):
    with pytest.raises(SystemExit, match="WEB_CONCURRENCY"):
        gunicorn_config(monkeypatch, WEB_CONCURRENCY=value)


def test_gunicorn_check_config_loads_the_app_with_a_production_environment():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--check-config",
            "-c",
            str(GUNICORN_CONFIG),
            "alem.wsgi",
        ],
        cwd=BASE_DIR,
        env=clean_env(**PRODUCTION, DJANGO_SETTINGS_MODULE="alem.settings"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------
# The TLS proxy
# ---------------------------------------------------------------------------------------------


def test_nginx_sets_the_forwarded_headers_itself():
    conf = (BASE_DIR / "deploy" / "nginx.conf").read_text()

    assert "proxy_set_header X-Forwarded-Proto $scheme;" in conf
    # Overwritten with the address nginx saw, never appended to what the client sent.
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in conf
    assert "$proxy_add_x_forwarded_for" not in conf
    assert "proxy_set_header Host $http_host;" in conf
    assert "listen 443 ssl;" in conf


def test_nginx_accepts_the_example_configuration(tmp_path):
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if not nginx:
        reason = "nginx is not installed (Debian: apt-get install nginx-light)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; .ci/run installs it, so under CI it must be there")
        pytest.skip(reason)
    subprocess.run(
        ["sh", str(BASE_DIR / "deploy" / "self-signed-cert.sh"), "localhost", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    site = (BASE_DIR / "deploy" / "nginx.conf").read_text()
    site = site.replace("${ALEM_UPSTREAM}", "127.0.0.1:8000")
    site = site.replace("/etc/nginx/tls/", f"{tmp_path}/")
    (tmp_path / "alem.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
        f"events {{}}\nhttp {{ access_log off; include {tmp_path}/alem.conf; }}\n"
    )

    result = subprocess.run(
        [nginx, "-t", "-q", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------------
# Static files: hashed and compressed after collectstatic
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def collected_static(tmp_path_factory) -> Path:
    """STATIC_ROOT after `collectstatic` as the image runs it (deploy/build-time.env)."""
    static_root = tmp_path_factory.mktemp("staticfiles")
    result = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--no-input", "--verbosity", "0"],
        cwd=BASE_DIR,
        env=clean_env(
            **build_time_env(),
            STATIC_ROOT=str(static_root),
            DJANGO_SETTINGS_MODULE="alem.settings",
        ),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return static_root


def test_collectstatic_writes_hashed_and_compressed_files_and_a_manifest(collected_static):
    manifest = json.loads((collected_static / "staticfiles.json").read_text())

    hashed = manifest["paths"]["alem/app.css"]
    assert hashed != "alem/app.css"
    assert hashed.startswith("alem/app.") and hashed.endswith(".css")
    assert (collected_static / hashed).is_file()
    assert (collected_static / f"{hashed}.gz").is_file()


@pytest.mark.django_db
def test_sign_in_page_names_the_hashed_files_and_they_are_served(client, collected_static):
    manifest = json.loads((collected_static / "staticfiles.json").read_text())["paths"]
    production_storages = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": MANIFEST_STORAGE},
    }

    with override_settings(STATIC_ROOT=collected_static, STORAGES=production_storages):
        page = client.get("/accounts/login/")
        css_url = f"/static/{manifest['alem/app.css']}"
        css = client.get(css_url, HTTP_ACCEPT_ENCODING="gzip")

    assert page.status_code == 200
    html = page.content.decode()
    assert f'href="{css_url}"' in html
    assert f'src="/static/{manifest["alem/app.js"]}"' in html
    assert css.status_code == 200
    assert css["Content-Encoding"] == "gzip"
    # A hashed name never changes content: browsers may keep it for good.
    assert "immutable" in css["Cache-Control"]


def test_every_dependency_is_pinned_with_its_hashes_and_installed_so():
    for name in ("requirements.txt", "requirements-dev.txt"):
        hashes: dict[str, int] = {}
        package = None
        for line in (BASE_DIR / name).read_text().splitlines():
            if line[:1].isalnum():
                package = line.split(" ")[0]
                assert "==" in package, f"{name}: {package} is not pinned"
                hashes[package] = 0
            elif "--hash=sha256:" in line:
                hashes[package] += 1
        assert len(hashes) > 20, name
        assert [pin for pin, count in hashes.items() if count == 0] == [], name
    makefile = (BASE_DIR / "Makefile").read_text()
    assert "pip install --quiet --require-hashes -r requirements-dev.txt" in makefile
    assert "--require-hashes" in (BASE_DIR / "Dockerfile").read_text()
