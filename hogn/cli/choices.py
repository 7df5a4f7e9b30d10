"""The names the ``hogn`` parsers offer, kept here without importing torch.

Command-line help and argument errors never import torch (docs: DESIGN.md), yet the
registries these names come from live in torch modules (:mod:`hogn.models`,
:mod:`hogn.integrators`, :mod:`systems`, :mod:`meta.protocol`, ...). So the parsers
read static copies, and ``tests/hogn/test_cli_startup.py`` checks that every copy
equals its registry, in order: a name added to a registry fails that test until it
is added here too.
"""

from __future__ import annotations

__all__ = ["DTYPES", "IMPLICIT", "INTEGRATORS", "LOSSES", "META_ALGORITHMS",
           "META_BASELINES", "META_CLOSED_FORM", "META_LOSSES", "META_MODELS",
           "META_SYSTEMS", "MODELS", "NON_SEPARABLE_INTEGRATORS", "PRESETS", "SCHEDULES",
           "SPLITTING", "SYSTEMS", "TARGETS"]

SYSTEMS = ("mass-spring", "pendulum", "double-pendulum", "two-body", "three-body",
           "magnetic-mirror", "henon-heiles", "spring-nbody", "gravity-nbody",
           "damped-pendulum", "damped-mass-spring", "lennard-jones", "pendulum-chain",
           "forced-pendulum")
"""``systems.names()``: the registered systems."""

PRESETS = ("hnn-mass-spring", "hnn-pendulum", "hnn-real-pendulum", "hnn-report-mass-spring",
           "hnn-report-pendulum", "hnn-report-three-body", "hnn-report-two-body",
           "hnn-three-body", "hnn-two-body", "lj-2d", "meta-double-pendulum",
           "meta-henon-heiles", "meta-magnetic-mirror", "meta-mass-spring", "meta-pendulum",
           "meta-three-body", "meta-two-body")
"""``systems.preset_names()``: the paper presets of ``hogn generate``."""

MODELS = ("chnn", "deltagn", "dhnn", "dissipative-hogn", "ghnn", "hnn", "hnn-basis", "hogn",
          "hogn-basis", "mlp", "ogn", "pixel-hnn", "potential-hogn", "separable-hogn", "srnn",
          "symoden")
"""``hogn.models.names()``: the models ``hogn train`` builds."""

INTEGRATORS = ("euler", "gauss4", "gauss6", "gbs8", "implicit_midpoint", "leapfrog", "rk2",
               "rk4", "symplectic_euler", "yoshida4")
"""``hogn.integrators.names()``."""

SPLITTING = ("leapfrog", "symplectic_euler", "yoshida4")
"""The integrators that need a separable H (``needs_separable``)."""

IMPLICIT = ("gauss4", "gauss6", "implicit_midpoint")
"""The implicit integrators (``implicit``: symplectic for any H)."""

NON_SEPARABLE_INTEGRATORS = ("euler", "gauss4", "gauss6", "gbs8", "implicit_midpoint", "rk2",
                             "rk4")
"""``hogn.integrators.compatible(False)``: valid for a model whose H is not separable."""

DTYPES = ("float32", "float64")
"""The keys of :data:`hogn.cli.common.DTYPES`."""

TARGETS = ("derivative", "rollout")
"""``hogn.train.TARGETS``."""

LOSSES = ("mse", "logcosh")
"""``hogn.train.LOSSES``."""

SCHEDULES = ("none", "cosine")
"""``hogn.train.SCHEDULES``."""

META_SYSTEMS = ("mass-spring", "pendulum", "double-pendulum", "two-body", "three-body",
                "magnetic-mirror", "henon-heiles")
"""``meta.protocol.META_SYSTEMS``."""

META_MODELS = ("hnn", "mlp", "hogn", "hnn-basis", "hogn-basis")
"""The keys of ``meta.protocol.MODEL_LAYOUTS``."""

META_ALGORITHMS = ("maml", "fomaml", "reptile")
"""``meta.algorithms.ALGORITHMS``."""

META_CLOSED_FORM = "closed-form"
"""``meta.protocol.CLOSED_FORM``."""

META_LOSSES = ("logcosh", "mse")
"""The keys of ``meta.algorithms.LOSSES``."""

META_BASELINES = ("zero", "affine", "polynomial", "kernel", "nearest")
"""``meta.fewshot.names()``: the classical regressors ``hogn adapt --baselines`` fits."""
