"""The data plane never pulls in the control plane: no Django in a balancer process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONTROL_PLANE = ("django", "dashboard", "channels", "rest_framework")

PROBE = """
import importlib, json, sys
try:
    importlib.import_module(sys.argv[1])
except ImportError as err:
    print(json.dumps({"import_error": str(err)}))
    raise SystemExit(0)
forbidden = sys.argv[2].split(",")
leaked = sorted(m for m in sys.modules if m.split(".")[0] in forbidden)
print(json.dumps({"leaked": leaked}))
"""


def imported_in_a_fresh_process(module: str) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, module, ",".join(CONTROL_PLANE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("module", "optional"),
    [
        ("balancer", False),
        ("balancer.__main__", False),
        ("balancer.server", False),
        ("balancer.admin", True),
        ("balancer.admin.server", True),
    ],
)
def test_it_imports_the_balancer_without_any_control_plane_module(module, optional):
    outcome = imported_in_a_fresh_process(module)
    if "import_error" in outcome:
        if optional:
            pytest.skip(f"{module} does not exist yet: {outcome['import_error']}")
        pytest.fail(f"cannot import {module}: {outcome['import_error']}")
    assert outcome["leaked"] == []
