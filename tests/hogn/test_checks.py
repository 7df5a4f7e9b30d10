"""hogn.checks: one rule per kind of value, the same for the command line and the API."""

import argparse
import math

import numpy as np
import pytest
import torch

from hogn import checks
from hogn.evaluation import Evaluation
from hogn.train import TrainConfig

BAD_NUMBERS = [math.nan, math.inf, -math.inf, True, "1", None, [1.0], torch.tensor(1.0)]


@pytest.mark.parametrize("check, good, bad", [
    (checks.positive_float, [1e-300, 0.5, 3, np.float32(2)], [0, -1e-9, *BAD_NUMBERS]),
    (checks.nonnegative_float, [0, 0.0, 7.5], [-1e-300, *BAD_NUMBERS]),
    (checks.finite_float, [0, -3.5, 1e300], BAD_NUMBERS),
    (checks.fraction, [0, 0.5, 1], [-0.01, 1.01, *BAD_NUMBERS]),
    (checks.tolerance, [1e-14, 1e-12, 0.1], [0, -1e-12, 1e-15, 0.5, *BAD_NUMBERS]),
    (checks.positive_int, [1, 7, np.int64(3)], [0, -1, 2.0, 2.5, True, "3", None]),
    (checks.nonnegative_int, [0, 9], [-1, 1.0, False, "0"]),
])
def test_each_rule_accepts_and_refuses(check, good, bad):
    for value in good:
        assert check(value, "x") == value
    for value in bad:
        with pytest.raises(checks.CheckError, match=r"^x"):
            check(value, "x")


def test_fraction_may_exclude_one():
    assert checks.fraction(0.99, "f", upper_open=True) == 0.99
    with pytest.raises(checks.CheckError, match=r"\[0, 1\)"):
        checks.fraction(1.0, "f", upper_open=True)


def test_argparse_types_parse_text_and_give_one_line_errors():
    assert checks.arg(checks.positive_float)("1e-3") == 1e-3
    assert checks.arg(checks.positive_int)(" 7 ") == 7
    for convert, text in ((checks.arg(checks.positive_float), "nan"),
                          (checks.arg(checks.positive_float), "-1"),
                          (checks.arg(checks.positive_int), "2.5"),
                          (checks.arg(checks.positive_int), "0"),
                          (checks.arg(checks.fraction, upper_open=True), "1"),
                          (checks.arg(checks.device), "nosuch")):
        with pytest.raises(argparse.ArgumentTypeError) as info:
            convert(text)
        assert "\n" not in str(info.value) and not str(info.value).startswith("value")


def test_devices_that_exist_here():
    assert checks.device("cpu") == "cpu"
    for name in ("nosuch", "cpu:1", "cuda:x", "", 3, None, "gpu"):
        with pytest.raises(checks.CheckError, match="device"):
            checks.device(name)
    if not torch.cuda.is_available():
        with pytest.raises(checks.CheckError, match="no CUDA device"):
            checks.device("cuda:0")


def test_memory_limit_from_the_environment(monkeypatch):
    monkeypatch.setenv(checks.MEMORY_ENV, "2G")
    assert checks.memory_limit()[0] == 2 * 2**30
    checks.check_memory(2**30, "this")
    with pytest.raises(checks.CheckError, match=r"3\.0 GiB.*2\.0 GiB.*HOGN_MAX_MEMORY=2G"):
        checks.check_memory(3 * 2**30, "this")
    for text in ("0", "-1G", "lots", "1X"):
        monkeypatch.setenv(checks.MEMORY_ENV, text)
        with pytest.raises(checks.CheckError, match="HOGN_MAX_MEMORY"):
            checks.memory_limit()
    monkeypatch.delenv(checks.MEMORY_ENV)
    assert checks.memory_limit()[0] > 0


class _Model:  # what TrainConfig.validate asks of a model
    is_stepper = False
    name = "m"


@pytest.mark.parametrize("key, value", [
    ("grad_clip", -1.0), ("grad_clip", math.nan), ("lr", -1e-3), ("lr", math.inf),
    ("weight_decay", -1.0), ("val_fraction", 1.0), ("val_fraction", math.nan),
    ("max_samples", -5), ("max_samples", 2.5), ("epochs", 0), ("epochs", True),
    ("batch_size", "64"), ("seed", -1), ("device", "nosuch"), ("checkpoint_seconds", -1.0),
])
def test_train_config_uses_the_same_rules(key, value):
    cfg = TrainConfig(target="derivative", **{key: value})
    with pytest.raises(ValueError, match=key):
        cfg.validate(_Model())


def test_evaluation_summary_refuses_a_bad_threshold():
    t = torch.arange(3.0)
    err = torch.full((3, 2), 0.01)
    result = Evaluation(t, torch.zeros(3, 2, 1), torch.zeros(3, 2, 1), err, err, None,
                        torch.tensor([0, 1]))
    assert result.summary(0.1)["time_to_threshold"] == math.inf
    for bad in (math.nan, -0.1, 0.0, "0.1"):
        with pytest.raises(ValueError, match="threshold"):
            result.summary(bad)
