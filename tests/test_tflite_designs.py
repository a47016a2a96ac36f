"""tflite.designs: one registry of export designs, one table from the options to a design, an
extension point that takes a new design, and tflite modules that import each other without a cycle."""
import ast
import pathlib
import subprocess
import sys

import pytest

import harness_tflite as h

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUILT_IN = {"if_tree_fused_lstm", "if_tree_fc_loop", "if_tree_sliced", "single_level", "shared_weights_cached"}
UNITS = [{"lstm_0": 16}, {"lstm_0": 8}, {"lstm_0": 4}]


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: pathlib.Path, modules: set) -> set:
    """The tflite modules a module imports when it is imported (module-level statements only:
    imports inside functions and ``if TYPE_CHECKING:`` blocks do not run at import)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"   # `from tflite import flatbuffer`
                found.add(child if child in modules else node.module)
    return {name for name in found if name in modules}


def _import_graph() -> dict:
    paths = sorted((ROOT / "tflite").rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    return {_module_name(p): _top_level_imports(p, modules) - {_module_name(p)} for p in paths}


def _cycle(graph: dict):
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_tflite_modules_import_each_other_without_a_cycle():
    graph = _import_graph()
    assert "tflite.designs.registry" in graph and "tflite.errors" in graph   # the walk found the modules
    assert "tflite.export" not in graph["tflite.shared_weights"]             # the old circle's edge
    assert _cycle(graph) is None


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("module", ["tflite.errors", "tflite.signatures", "tflite.rewrites", "tflite.designs.shared",
                                    "tflite.designs.registry", "tflite.export"])
def test_a_tflite_module_imports_first_in_a_fresh_interpreter_without_tensorflow(module):
    code = f"import sys, {module}; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_registry_lists_every_design():
    from tflite.designs import DESIGN_TABLE, design_names, get_design

    assert set(design_names()) == BUILT_IN
    assert set(DESIGN_TABLE.values()) <= set(design_names())
    assert all(get_design(name).name == name for name in design_names())


def test_cli_design_choices_are_the_table_s_choices():
    from tflite.cli import _export_parser
    from tflite.designs import DESIGN_CHOICES

    assert DESIGN_CHOICES == ("if_tree", "shared")
    action = next(a for a in _export_parser()._actions if a.dest == "design")
    assert tuple(action.choices) == DESIGN_CHOICES


@pytest.mark.parametrize("options, sparsities, single_level, units, expected", [
    ({}, (0.0, 0.5, 0.9), False, None, "if_tree_fused_lstm"),
    ({"sparse_speed": True}, (0.0, 0.5, 0.9), False, None, "if_tree_fc_loop"),
    ({"sparse_speed": True}, (0.0, 0.5), False, None, "if_tree_fused_lstm"),   # no level reaches 0.6
    ({"sparse_speed": True, "sparse_speed_min_sparsity": 0.0}, (0.0, 0.5), False, None, "if_tree_fc_loop"),
    ({}, (0.0, 0.5, 0.9), False, UNITS, "if_tree_sliced"),
    ({"sparse_speed": True}, (0.0, 0.5, 0.9), False, UNITS, "if_tree_fc_loop"),
    ({"design": "shared"}, (0.0, 0.5, 0.9), False, None, "shared_weights_cached"),
    ({}, (0.5,), True, None, "single_level"),
    ({"sparse_speed": True}, (0.9,), True, None, "single_level"),
    ({"design": "shared"}, (0.5,), True, None, "single_level"),
])
def test_options_resolve_to_the_expected_design(options, sparsities, single_level, units, expected):
    from tflite.designs import resolve_design
    from tflite.export import ExportOptions

    design = resolve_design(ExportOptions(**options), sparsities, single_level=single_level, units=units)
    assert design.name == expected


def test_resolving_refuses_the_shared_design_for_sliced_levels_even_as_a_baseline():
    from tflite.designs import resolve_design
    from tflite.errors import ExportError
    from tflite.export import ExportOptions

    for single_level in (False, True):
        with pytest.raises(ExportError, match="shared design stores one full-width copy"):
            resolve_design(ExportOptions(design="shared"), (0.0, 0.5, 0.9), single_level=single_level, units=UNITS)


def test_shared_with_sparse_speed_is_refused_by_the_options_and_by_the_resolution():
    import types

    from tflite.designs import resolve_design
    from tflite.errors import ExportError
    from tflite.export import ExportOptions

    with pytest.raises(ValueError, match="cannot be combined"):
        ExportOptions(design="shared", sparse_speed=True)
    bypass = types.SimpleNamespace(design="shared", sparse_speed=True, sparse_speed_min_sparsity=0.6)
    with pytest.raises(ExportError, match="cannot be combined"):
        resolve_design(bypass, (0.0, 0.9))


def test_an_unknown_design_name_is_an_export_error_listing_the_registered_ones():
    from tflite.designs import get_design
    from tflite.errors import ExportError

    with pytest.raises(ExportError, match="if_tree_fused_lstm"):
        get_design("no_such_design")


def test_registering_a_taken_name_is_refused_unless_replacing():
    from tflite.designs import FusedLstmDesign, get_design, register_design

    original = get_design("if_tree_fused_lstm")
    with pytest.raises(ValueError, match="already registered"):
        register_design(FusedLstmDesign())
    with pytest.raises(ValueError, match="needs a name"):
        register_design(type("Nameless", (FusedLstmDesign,), {"name": ""})())
    assert register_design(original, replace=True) is original


def test_an_explicit_design_is_checked_like_a_resolved_one(tmp_path):
    from tflite.errors import ExportError
    from tflite.export import export_levels

    models = h.level_models()
    with pytest.raises(ExportError, match="shared design stores one full-width copy"):
        export_levels(models, tmp_path / "x.tflite", sparsities=h.LEVELS, feature_config=h.feature_config(),
                      pieces=h.PIECES, blank_id=h.BLANK_ID, units=[{}] * len(models), design="shared_weights_cached")
    with pytest.raises(ExportError, match="exactly one model"):
        export_levels(models, tmp_path / "x.tflite", sparsities=h.LEVELS, feature_config=h.feature_config(),
                      pieces=h.PIECES, blank_id=h.BLANK_ID, design="single_level")
    assert not (tmp_path / "x.tflite").exists()


def test_a_registered_toy_design_exports_a_file_whose_metadata_names_it(tmp_path):
    """The extension point: a new design is a class + a registration line, then usable by name."""
    from tflite.designs import FusedLstmDesign, design_names, register_design, unregister_design
    from tflite.export import ExportOptions, export_levels
    from tflite.metadata import read_metadata

    calls = []

    class ToyDesign(FusedLstmDesign):
        name = "toy_fused_lstm"

        def post_process(self, data, request):
            calls.append(len(request.models))
            return data

        def describe(self, request, module):
            return {**super().describe(request, module), "toy": {"levels": len(request.models)}}

    register_design(ToyDesign())
    try:
        assert "toy_fused_lstm" in design_names()
        models = h.level_models()[:2]
        report = export_levels(models, tmp_path / "toy.tflite", sparsities=h.LEVELS[:2],
                               feature_config=h.feature_config(), pieces=h.PIECES, blank_id=h.BLANK_ID,
                               options=ExportOptions(measure_latency=False), design="toy_fused_lstm")
    finally:
        unregister_design("toy_fused_lstm")
    assert "toy_fused_lstm" not in design_names()
    assert calls == [2]
    export = read_metadata(report.path).raw["export"]
    assert export["design"] == "toy_fused_lstm"
    assert export["lstm_kernels"] == ["fused_lstm", "fused_lstm"] and export["state_reset_in_graph"] is True
    assert export["toy"] == {"levels": 2}
    assert [v["level"] for v in export["verification"]] == [0, 1]   # verified like any design
