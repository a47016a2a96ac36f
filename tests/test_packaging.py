"""The packaging contract: importable packages, light imports, and --help on every command."""
import pathlib
import re
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


def test_the_sparsity_library_does_not_depend_on_the_asr_application():
    for path in (ROOT / "dsnn_keras" / "sparsity").rglob("*.py"):
        imports = [line.strip() for line in path.read_text().splitlines()
                   if line.strip().startswith(("import ", "from "))]
        for app in ("model", "trainer", "evaluate", "dataset", "run_dir", "frontend", "decoding", "cli"):
            assert not [line for line in imports if f"dsnn_keras.{app}" in line or f"dsnn_keras import {app}" in line], (
                path, app)
    code = ("import sys, dsnn_keras.sparsity as s; s.prune_nested; s.narrow_model; s.UpdateNestedPruningStep\n"
            "print(sorted(m for m in sys.modules if m.startswith(('dsnn_keras.', 'pipeline', 'tflite'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = eval(out.stdout.strip().splitlines()[-1])
    assert all(m.startswith("dsnn_keras.sparsity") or m in ("dsnn_keras.errors", "dsnn_keras.lazy")
               for m in loaded), loaded


def test_dsnn_keras_re_exports_the_sparsity_api():
    import dsnn_keras
    import dsnn_keras.sparsity as sparsity

    for name in sparsity.__all__:
        assert getattr(dsnn_keras, name) is getattr(sparsity, name), name


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


@pytest.mark.large
def test_setup_py_builds_the_package_dataflow_workers_install(tmp_path):
    """``--setup_file ./setup.py``: Beam's own stager builds the sdist that Dataflow workers pip-install;
    it must hold the packages the workers import and declare the libraries they need (docs/pipeline.md)."""
    import tarfile

    code = ("import sys; from apache_beam.runners.portability.stager import Stager; "
            "print(Stager._build_setup_package(sys.argv[1], sys.argv[2]))")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / "setup.py"), str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    with tarfile.open(out.stdout.strip().splitlines()[-1]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
        read = lambda suffix: sdist.extractfile(  # noqa: E731
            next(n for n in sdist.getnames() if n.endswith(suffix))).read().decode()
        info, requires_txt = read("/PKG-INFO"), read(".egg-info/requires.txt")
    for module in ("pipeline/prepare.py", "pipeline/transforms.py", "pipeline/audio.py", "dsnn_keras/frontend.py",
                   "dsnn_keras/audio.py", "dsnn_keras/fileio.py"):
        assert module in names, module
    assert "Requires-Python: <3.12,>=3.11" in info   # the worker container's Python must be 3.11
    base = requires_txt.split("\n[", 1)[0]              # the requirements outside any [extra]
    requires = {re.split(r"[<>=\[]", line, maxsplit=1)[0] for line in base.split()}
    assert {"tensorflow", "apache-beam", "google-crc32c", "sentencepiece", "soundfile", "soxr"} <= requires
