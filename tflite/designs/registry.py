"""The registry of export designs and the ONE table from the user's options to a design.

Designs are known by one name, the registry key, which is also the metadata's ``export.design``.
The user-facing options (``--design if_tree|shared``, ``--sparse_speed``, a unit run's sliced
levels, single-level baselines) select one through `DESIGN_TABLE` in `resolve_design`; nothing
else maps options to designs. No TensorFlow import.

Example:
    >>> design_names()
    ('if_tree_fc_loop', 'if_tree_fused_lstm', 'if_tree_sliced', 'shared_weights_cached', 'single_level')
    >>> resolve_design(ExportOptions(sparse_speed=True), sparsities=(0.0, 0.9)).name
    'if_tree_fc_loop'
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

from tflite.errors import ExportError

if TYPE_CHECKING:
    from tflite.designs.base import ExportDesign
    from tflite.export import ExportOptions

# The registered names of the built-in designs (= metadata export.design).
DESIGN_FUSED = "if_tree_fused_lstm"       # a constant copy per level under an IF tree, fused LSTMs
DESIGN_FC_LOOP = "if_tree_fc_loop"        # ... the sparse levels' LSTMs as FC loops (--sparse_speed)
DESIGN_SLICED = "if_tree_sliced"          # ... each level sliced to the units it keeps (unit runs)
DESIGN_SHARED = "shared_weights_cached"   # one stored copy + level codes (--design shared)
DESIGN_SINGLE = "single_level"            # one level alone, no IF (the dsnn-bench baseline)

# (--design, some level runs as an FC loop, the levels are a unit run's sliced models) -> design.
# A single-level baseline is DESIGN_SINGLE whatever its row.
DESIGN_TABLE: dict[tuple[str, bool, bool], str] = {
    ("if_tree", False, False): DESIGN_FUSED,
    ("if_tree", True, False): DESIGN_FC_LOOP,
    ("if_tree", False, True): DESIGN_SLICED,
    ("if_tree", True, True): DESIGN_FC_LOOP,
    ("shared", False, False): DESIGN_SHARED,
}
# Why a combination has no row.
_REFUSED = {
    ("shared", True): "ExportOptions: design 'shared' and sparse_speed cannot be combined",
    ("shared", False): "the shared design stores one full-width copy; export a unit run's levels masked "
                       "(not sliced) for it",
}
DESIGN_CHOICES = tuple(dict.fromkeys(choice for choice, _, _ in DESIGN_TABLE))   # ("if_tree", "shared")

_REGISTRY: dict[str, "ExportDesign"] = {}


def register_design(design: "ExportDesign", *, replace: bool = False) -> "ExportDesign":
    """Adds a design under ``design.name``.

    Args:
        design: An `ExportDesign` instance with a non-empty ``name``.
        replace: Allow replacing a design of the same name. Defaults to False.

    Returns:
        ``design`` (so a module can write ``MY_DESIGN = register_design(MyDesign())``).

    Raises:
        ValueError: no name, or the name is taken and ``replace`` is False.
    """
    if not design.name:
        raise ValueError(f"{type(design).__name__}: an export design needs a name")
    if design.name in _REGISTRY and not replace:
        raise ValueError(f"export design {design.name!r} is already registered ({_REGISTRY[design.name]!r})")
    _REGISTRY[design.name] = design
    return design


def unregister_design(name: str) -> None:
    """Removes a registered design (tests, plug-ins); a missing name is ignored."""
    _REGISTRY.pop(name, None)


def design_names() -> tuple[str, ...]:
    """The registered design names, sorted."""
    return tuple(sorted(_REGISTRY))


def get_design(name: str) -> "ExportDesign":
    """The registered design called ``name``.

    Raises:
        ExportError: no such design (the message lists the registered ones).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ExportError(f"no export design {name!r}; registered: {', '.join(design_names())}") from None


def resolve_design(options: "ExportOptions", sparsities: Sequence[float], *, single_level: bool = False,
                   units: Optional[Sequence[dict]] = None) -> "ExportDesign":
    """The registered design today's options select (`DESIGN_TABLE`).

    Args:
        options: `tflite.export.ExportOptions` (``design``, ``sparse_speed``,
            ``sparse_speed_min_sparsity``).
        sparsities: Each level's sparsity: with ``sparse_speed``, a level at least
            ``sparse_speed_min_sparsity`` sparse runs as an FC loop.
        single_level: A single-level baseline file. Defaults to False.
        units: Per-level kept units of a unit run's sliced levels, or None. Defaults to None.

    Returns:
        The `ExportDesign`.

    Raises:
        ExportError: a combination no design takes (shared with sparse_speed or sliced levels).

    Example:
        >>> resolve_design(ExportOptions(), (0.0, 0.5), units=[{"lstm_0": 24}, {"lstm_0": 12}]).name
        'if_tree_sliced'
    """
    fc_loop = bool(options.sparse_speed) and any(s >= options.sparse_speed_min_sparsity for s in sparsities)
    if options.design == "shared" and options.sparse_speed:
        raise ExportError(_REFUSED[("shared", True)])
    key = (options.design, fc_loop, units is not None)
    if key not in DESIGN_TABLE:
        raise ExportError(_REFUSED.get((options.design, fc_loop), f"no export design for --design "
                                       f"{options.design!r}, sparse_speed={options.sparse_speed}, "
                                       f"sliced={units is not None}"))
    return get_design(DESIGN_SINGLE if single_level else DESIGN_TABLE[key])
