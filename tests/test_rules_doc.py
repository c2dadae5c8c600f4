"""``docs/rules.md`` stays true: every test and enforcing function it names exists."""

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RULES = (ROOT / "docs" / "rules.md").read_text()
TESTS: dict[str, str] = {}
for path in (ROOT / "tests").rglob("test_*.py"):  # test_services.py is in two apps
    TESTS[path.stem] = TESTS.get(path.stem, "") + path.read_text()

# `test_services::test_x` names a test function in tests/**/test_services.py.
NAMED_TESTS = sorted(set(re.findall(r"`(test_\w+)::(test_\w+)`", RULES)))
# `permissions.decide_refusal`, `services._locks`, `audit.audit_verify`… in the governance app.
NAMED_CODE = sorted(
    set(
        re.findall(
            r"`((?:permissions|policies|compliance|services|selectors|audit)\.[\w.]+)`", RULES
        )
    )
)


def test_the_rules_page_names_tests_and_code():
    assert len(NAMED_TESTS) > 30
    assert len(NAMED_CODE) > 15


@pytest.mark.parametrize(("module", "name"), NAMED_TESTS)
def test_every_test_the_rules_page_names_exists(module, name):
    assert module in TESTS, module
    assert re.search(rf"^def {name}\(", TESTS[module], re.M), f"{module}::{name}"


@pytest.mark.parametrize("dotted", NAMED_CODE)
def test_every_function_the_rules_page_names_exists(dotted):
    parts = f"governance.{dotted}".split(".")
    for split in range(len(parts), 1, -1):
        try:
            target = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[split:]:
            target = getattr(target, attribute)
        return
    pytest.fail(f"{dotted} is not in the governance app")
