"""The Python API of ``systems`` applies the command line's rules: no negative, zero or
NaN tolerance (which would never finish), no bool where a number belongs, float64
ground truth only — each a one-line ``ValueError`` naming the value and the rule."""

from __future__ import annotations

import pytest
import torch

import systems


@pytest.fixture(scope="module")
def pendulum():
    system = systems.get("pendulum")
    return system, system.sample(2, seed=0)


@pytest.mark.parametrize(("options", "match"), [
    ({"rtol": -1}, "rtol must be a number in"), ({"rtol": 0.0}, "rtol must be a number in"),
    ({"rtol": float("nan")}, "rtol must be"), ({"rtol": True}, "rtol must be"),
    ({"atol": -1.0}, "atol must be a finite number >= 0"),
    ({"dt": True}, "dt must be"), ({"dt": 0.0}, "dt must be"), ({"steps": True}, "steps must be"),
    ({"steps": -1}, "steps must be"), ({"method": "rk4", "substeps": 0}, "substeps must be"),
])
def test_trajectory_refuses_bad_options(pendulum, options, match):
    system, state = pendulum
    kwargs = {"dt": 0.1, "steps": 3, **options}
    with pytest.raises(ValueError, match=match):
        system.trajectory(state, **kwargs)


def test_ground_truth_is_float64_only(pendulum):
    system, state = pendulum
    with pytest.raises(ValueError, match=r"ground truth runs in float64, got a torch\.float32"):
        system.trajectory(state.to(dtype=torch.float32), 0.1, 3)
    lj = systems.get("lennard-jones")
    fluid = lj.sample(1, seed=0, n_particles=16)
    with pytest.raises(ValueError, match="float64"):
        lj.trajectory(fluid.to(dtype=torch.float32), 0.01, 2)
    with pytest.raises(ValueError, match="steps must be"):
        lj.trajectory(fluid, 0.01, True)


@pytest.mark.parametrize(("options", "match"), [
    ({"rtol": -1}, "rtol must be"), ({"dt": True}, "dt must be"),
    ({"steps": True}, "steps must be"), ({"trajectories": True}, "trajectories must be"),
    ({"trajectories": 0}, "trajectories must be"), ({"noise": float("nan")}, "noise must be"),
    ({"test_fraction": 1.0}, "test_fraction must be"), ({"seed": -1}, "seed must be"),
    ({"substeps": 0}, "substeps must be"), ({"max_rounds": 0}, "max_rounds must be"),
])
def test_generate_refuses_bad_options(options, match):
    kwargs = {"trajectories": 2, "steps": 3, "dt": 0.1, **options}
    with pytest.raises(ValueError, match=match):
        systems.generate("pendulum", **kwargs)


@pytest.mark.parametrize(("name", "param"), [("pendulum", "mass"), ("spring-nbody", "mass"),
                                             ("lennard-jones", "temperature")])
def test_a_bool_is_not_a_number_parameter(name, param):
    with pytest.raises(ValueError, match=f"parameter {param} must be a number, got True"):
        systems.get(name, **{param: True})
