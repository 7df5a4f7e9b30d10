"""Small float64 ground-truth datasets shared by the meta-learning tests."""

from __future__ import annotations

import pytest

import systems


@pytest.fixture(scope="session")
def mass_spring():
    """24 trajectories × 41 points of the mass-spring embedded in d = 2."""
    return systems.generate(systems.get("mass-spring", embed_dim=2), trajectories=24,
                            steps=40, dt=0.25, seed=0)


@pytest.fixture(scope="session")
def pendulum():
    """24 trajectories × 41 points of the pendulum embedded in d = 2."""
    return systems.generate(systems.get("pendulum", embed_dim=2), trajectories=24,
                            steps=40, dt=0.25, seed=1)


@pytest.fixture(scope="session")
def three_body():
    """6 trajectories × 31 points of the three-body problem (d = 2, 3 particles)."""
    return systems.generate("three-body", trajectories=6, steps=30, dt=0.1, seed=2)


@pytest.fixture(scope="module")
def tasks(mass_spring, pendulum):
    """Three seeded tasks (8 support, 10 query points) over the mass-spring and pendulum."""
    from meta.tasks import TaskSampler

    sampler = TaskSampler({"mass-spring": mass_spring, "pendulum": pendulum}, shots=8,
                          query=10, seed=3)
    return sampler.sample(3)


@pytest.fixture(scope="session")
def meta_systems():
    """Every system of :data:`meta.protocol.META_SYSTEMS` (the paper's six, then
    Hénon–Heiles), 5 trajectories × 21 points each (d = 2)."""
    from meta.protocol import META_SYSTEMS

    out = {}
    for i, name in enumerate(META_SYSTEMS):
        embed = {"embed_dim": 2} if name in ("mass-spring", "pendulum", "double-pendulum") \
            else {}
        out[name] = systems.generate(systems.get(name, **embed), trajectories=5, steps=20,
                                     dt=0.1, seed=10 + i, progress=False)
    return out


@pytest.fixture(scope="session")
def six_systems(meta_systems):
    """The older name of :func:`meta_systems` (kept for the modules that use it): all the
    protocol's systems, since a held-out run trains on every other one."""
    return meta_systems
