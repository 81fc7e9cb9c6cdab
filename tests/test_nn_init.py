"""nn.init: gains, fans, distributions' bounds and spreads, in-place filling without a graph, seeding."""
import math

import numpy as np
import pytest

import gpudl as gd
from gpudl import nn
from gpudl.nn import init
from tests.conftest import to_numpy


def test_calculate_gain_matches_pytorchs_table():
    assert init.calculate_gain("linear") == init.calculate_gain("conv2d") == init.calculate_gain("sigmoid") == 1
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("leaky_relu") == pytest.approx(math.sqrt(2 / (1 + 0.01 ** 2)))
    assert init.calculate_gain("leaky_relu", math.sqrt(5)) == pytest.approx(math.sqrt(1 / 3))
    assert init.calculate_gain("selu") == 0.75
    with pytest.raises(ValueError, match="unsupported nonlinearity 'swish'"):
        init.calculate_gain("swish")


def test_fans_of_linear_and_conv_weights():
    assert init.calculate_fan_in_and_fan_out(gd.empty(20, 30)) == (30, 20)
    assert init.calculate_fan_in_and_fan_out(gd.empty(8, 4, 3, 5)) == (60, 120)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        init.calculate_fan_in_and_fan_out(gd.empty(5))


def spread(tensor):
    values = to_numpy(tensor).astype(np.float64)
    return np.abs(values).max(), values.std(), values.mean()


@pytest.mark.parametrize("fill, bound", [
    (lambda w: init.xavier_uniform_(w, gain=2.0), 2.0 * math.sqrt(6 / (200 + 300))),
    (lambda w: init.kaiming_uniform_(w, a=0, nonlinearity="relu"), math.sqrt(2) * math.sqrt(3 / 300)),
    (lambda w: init.kaiming_uniform_(w, mode="fan_out", nonlinearity="relu"), math.sqrt(2) * math.sqrt(3 / 200)),
    (lambda w: init.uniform_(w, -0.3, 0.3), 0.3),
])
def test_uniform_initialisers_respect_their_bounds(device, fill, bound):
    weight = gd.empty(200, 300, device=device)
    maximum, std, mean = spread(fill(weight))
    assert bound * 0.99 < maximum <= bound
    assert std == pytest.approx(bound / math.sqrt(3), rel=0.02)
    assert abs(mean) < 0.01 * bound


@pytest.mark.parametrize("fill, std", [
    (lambda w: init.xavier_normal_(w), math.sqrt(2 / (200 + 300))),
    (lambda w: init.kaiming_normal_(w, nonlinearity="relu"), math.sqrt(2 / 300)),
    (lambda w: init.normal_(w, 1.0, 0.5), 0.5),
])
def test_normal_initialisers_have_their_spread(device, fill, std):
    _, measured, _ = spread(fill(gd.empty(200, 300, device=device)))
    assert measured == pytest.approx(std, rel=0.02)


def test_initialisers_fill_in_place_without_recording_a_graph(device):
    param = nn.Parameter(gd.empty(4, 5, device=device))
    data = param.data
    for fill in (init.zeros_, init.ones_, lambda p: init.constant_(p, 2.5), init.xavier_uniform_, init.normal_):
        assert fill(param) is param
        assert param.data is data and param.grad_fn is None and param.requires_grad
    assert to_numpy(init.constant_(param, 2.5)).tolist() == [[2.5] * 5] * 4
    assert not to_numpy(init.zeros_(param)).any()


def test_initialisers_follow_the_seed_on_every_device(device):
    gd.manual_seed(3)
    a = init.kaiming_normal_(gd.empty(3, 4, device=device))
    gd.manual_seed(3)
    b = init.kaiming_normal_(gd.empty(3, 4))
    np.testing.assert_array_equal(to_numpy(a), b.numpy())


def test_kaiming_needs_a_nonzero_fan():
    with pytest.raises(ValueError, match="fan_in = 0"):
        init.kaiming_uniform_(gd.empty(3, 0))
