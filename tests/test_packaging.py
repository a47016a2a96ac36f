"""The packaging contract: importable packages, light imports, and --help on every command."""
import pathlib
import subprocess
import sys
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


@pytest.mark.parametrize("package", ["pipeline", "dsnn_keras", "tflite"])
def test_importing_a_package_does_not_import_tensorflow(package):
    code = f"import sys, {package}; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_dsnn_keras_imports_neither_pipeline_nor_tflite():
    for path in (ROOT / "dsnn_keras").rglob("*.py"):
        text = path.read_text()
        for banned in ("import pipeline", "from pipeline", "import tflite", "from tflite"):
            assert banned not in text, f"{path} contains {banned!r}"


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_command_has_help_without_importing_tensorflow(script):
    module, func = SCRIPTS[script].split(":")
    code = (
        "import sys\n"
        f"sys.argv = [{script!r}, '--help']\n"
        f"from {module} import {func} as entry\n"
        "try:\n"
        "    entry()\n"
        "except SystemExit as exit_:\n"
        "    assert exit_.code in (0, None), exit_.code\n"
        "print('TF_IMPORTED' if 'tensorflow' in sys.modules else 'TF_NOT_IMPORTED')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage" in out.stdout.lower()
    assert out.stdout.strip().endswith("TF_NOT_IMPORTED")
