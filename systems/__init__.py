"""Ground-truth physics: analytic Hamiltonians, samplers, simulation and datasets.

>>> import systems
>>> sys = systems.get("pendulum")
>>> data = systems.generate(sys, trajectories=8, steps=100, dt=0.1, seed=0)
>>> data.energy_drift().max() < 1e-7
tensor(True)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hogn._lazy import attach

__all__ = [
    "PRESETS",
    "Dataset",
    "Preset",
    "System",
    "from_arrays",
    "from_ase",
    "from_preset",
    "generate",
    "get",
    "get_preset",
    "load",
    "names",
    "preset_names",
]

# Registered systems, in the order of the meta-learning paper: class -> submodule.
# Imported on first use (see hogn._lazy: ``import systems`` loads no submodule).
_CLASSES = {
    "MassSpring": "oscillators", "Pendulum": "oscillators", "DoublePendulum": "oscillators",
    "TwoBody": "gravity", "ThreeBody": "gravity", "MagneticMirror": "mirror",
    "HenonHeiles": "henon_heiles", "SpringNBody": "springs", "GravityNBody": "gravity",
    "DampedPendulum": "damped", "DampedMassSpring": "damped", "LennardJones": "lennard_jones",
    "PendulumChain": "chain", "ForcedPendulum": "forced",
}

__getattr__, __dir__ = attach(__name__, {
    "System": "base", "Dataset": "dataset", "from_arrays": "arrays",
    "from_ase": "ase_data",
    "PRESETS": "generate", "Preset": "generate", "from_preset": "generate",
    "generate": "generate", "get_preset": "generate", "preset_names": "generate",
    **_CLASSES})

if TYPE_CHECKING:  # what the lazy attributes are, for type checkers
    from systems.arrays import from_arrays
    from systems.ase_data import from_ase
    from systems.base import System
    from systems.dataset import Dataset
    from systems.generate import PRESETS, Preset, from_preset, generate, get_preset, preset_names

_REGISTRY: dict[str, type[System]] = {}


def _registry() -> dict[str, type[System]]:
    """Registry name -> class (the classes are imported on the first call)."""
    if not _REGISTRY:
        classes = [getattr(importlib.import_module(f"systems.{module}"), cls_name)
                   for cls_name, module in _CLASSES.items()]
        _REGISTRY.update((cls.name, cls) for cls in classes)
    return _REGISTRY


def names() -> list[str]:
    """Names of all registered systems, in the order of the meta-learning paper."""
    return list(_registry())


def get(name: str, **params: Any) -> System:
    """Build a system by name.

    Args:
        name: Registry name (see :func:`names`).
        **params: System parameters overriding its defaults, and ``embed_dim``.

    Raises:
        ValueError: for an unknown name (listing the valid ones) or parameter.
    """
    try:
        cls = _registry()[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown system {name!r}; expected one of: "
                         f"{', '.join(names())}") from None
    return cls(**params)


def load(path: str, device: Any = None) -> Dataset:
    """Load a dataset file with validation (see :meth:`Dataset.load`)."""
    from systems.dataset import Dataset

    return Dataset.load(path, device=device)
