"""nn.Module and friends: registration, iteration, modes, freezing, devices/dtypes, state_dict, repr, containers."""
import copy

import numpy as np
import pytest

import gpudl as gd
from gpudl import nn
from tests.conftest import to_numpy


class TwoLayer(nn.Module):
    def __init__(self, device=None):
        super().__init__()
        self.fc1 = nn.Linear(4, 3, device=device)
        self.norm = nn.BatchNorm1d(3, device=device)
        self.fc2 = nn.Linear(3, 2, bias=False, device=device)
        self.scale = nn.Parameter(gd.ones(2, device=device))
        self.register_buffer("steps", gd.zeros((), dtype="int64", device=device))
        self.register_buffer("scratch", gd.zeros(2, device=device), persistent=False)

    def forward(self, x):
        return self.fc2(gd.relu(self.norm(self.fc1(x)))) * self.scale


def test_attribute_assignment_registers_parameters_buffers_and_children():
    model = TwoLayer()
    assert [name for name, _ in model.named_parameters()] == [
        "scale", "fc1.weight", "fc1.bias", "norm.weight", "norm.bias", "fc2.weight"]
    assert [name for name, _ in model.named_buffers()] == [
        "steps", "scratch", "norm.running_mean", "norm.running_var", "norm.num_batches_tracked"]
    assert [name for name, _ in model.named_children()] == ["fc1", "norm", "fc2"]
    assert list(model.children()) == [model.fc1, model.norm, model.fc2]
    assert [type(m).__name__ for m in model.modules()] == ["TwoLayer", "Linear", "BatchNorm1d", "Linear"]
    assert model.fc2.bias is None and "bias" in model.fc2._parameters
    assert all(p.requires_grad for p in model.parameters())


def test_registered_attributes_are_plain_instance_attributes():
    # fast lookup in forward: no __getattr__ detour
    model = TwoLayer()
    assert "fc1" in vars(model) and "weight" in vars(model.fc1)
    assert not hasattr(nn.Module, "__getattr__")


def test_reassigning_and_deleting_keep_the_registries_in_sync():
    model = TwoLayer()
    new = nn.Parameter(gd.zeros(2))
    model.scale = new
    assert model._parameters["scale"] is new and model.scale is new
    model.fc2 = nn.Identity()
    assert isinstance(dict(model.named_children())["fc2"], nn.Identity)
    del model.fc1
    assert "fc1" not in dict(model.named_children()) and not hasattr(model, "fc1")
    model.plain = 3
    assert "plain" not in model._parameters and model.plain == 3


def test_wrong_assignments_are_clear_errors():
    model = TwoLayer()
    with pytest.raises(TypeError, match="cannot assign a tensor as parameter 'scale'"):
        model.scale = gd.zeros(2)
    with pytest.raises(TypeError, match="buffer 'steps'"):
        model.steps = 3
    with pytest.raises(KeyError, match="already exists"):
        model.register_buffer("fc1", gd.zeros(1))

    class Forgot(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(1, 1)

    with pytest.raises(AttributeError, match="super\\(\\).__init__\\(\\)"):
        Forgot()


def test_shared_parameters_are_listed_once():
    shared = nn.Linear(2, 2)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    assert len(list(model.parameters())) == 2
    assert len(list(model.modules())) == 3


def test_train_and_eval_switch_every_descendant():
    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Dropout(0.5)))
    assert model.eval() is model
    assert [m.training for m in model.modules()] == [False] * 4
    model.train()
    assert all(m.training for m in model.modules())


def test_zero_grad_drops_or_zeroes_gradients(device):
    model = TwoLayer(device=device)
    model(gd.randn(5, 4, device=device)).sum().backward()
    model.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not to_numpy(p.grad).any() for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_freezing_stops_gradients_for_the_frozen_part(device):
    model = TwoLayer(device=device)
    model.fc1.requires_grad_(False)
    model(gd.randn(5, 4, device=device)).sum().backward()
    assert model.fc1.weight.grad is None and model.fc1.bias.grad is None
    assert model.fc2.weight.grad is not None and to_numpy(model.fc2.weight.grad).any()
    model.requires_grad_(False)
    assert not model(gd.randn(5, 4, device=device)).requires_grad


def test_to_dtype_casts_floating_state_in_place_and_keeps_identity():
    model = TwoLayer()
    weight = model.fc1.weight
    assert model.to(gd.float64) is model
    assert model.fc1.weight is weight and weight.dtype == np.float64
    assert model.norm.running_var.dtype == np.float64
    assert model.norm.num_batches_tracked.dtype == np.int64
    assert model.double().float().fc2.weight.dtype == np.float32
    with pytest.raises(TypeError, match="floating-point"):
        model.to("int32")


def test_to_device_moves_parameters_buffers_and_gradients(device):
    model = TwoLayer()
    model(gd.randn(3, 4)).sum().backward()
    model.to(device)
    assert all(t.device == device for t in (*model.parameters(), *model.buffers()))
    assert model.fc1.weight.grad.device == device
    assert model(gd.randn(3, 4, device=device)).device == device


def test_layers_take_device_and_dtype(device):
    layer = nn.Conv2d(2, 3, 3, device=device, dtype="float64")
    assert layer.weight.device == device and layer.weight.dtype == np.float64
    with pytest.raises(TypeError, match="floating point"):
        nn.Linear(2, 2, dtype="int64")


def test_state_dict_names_order_and_persistence():
    model = TwoLayer()
    state = model.state_dict()
    assert list(state) == ["scale", "steps", "fc1.weight", "fc1.bias", "norm.weight", "norm.bias",
                           "norm.running_mean", "norm.running_var", "norm.num_batches_tracked", "fc2.weight"]
    assert not state["fc1.weight"].requires_grad
    assert state["fc1.weight"].data is model.fc1.weight.data  # detached, sharing storage
    assert model.state_dict(keep_vars=True)["fc1.weight"] is model.fc1.weight


def test_state_dict_round_trip_through_numpy_reproduces_outputs(device):
    gd.manual_seed(1)
    source = TwoLayer(device=device)
    source(gd.randn(6, 4, device=device))  # moves running statistics off their defaults
    source.eval()
    arrays = {key: value.numpy() for key, value in source.state_dict().items()}
    gd.manual_seed(2)
    target = TwoLayer(device=device).eval()
    weight = target.fc1.weight
    result = target.load_state_dict(arrays)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert target.fc1.weight is weight and weight.device == device  # copied in place, on the target's device
    x = gd.randn(4, 4, device=device)
    np.testing.assert_array_equal(to_numpy(target(x)), to_numpy(source(x)))
    assert int(target.norm.num_batches_tracked.item()) == 1


def test_load_state_dict_accepts_tensors_and_casts_to_the_target_dtype():
    model = nn.Linear(2, 2)
    state = {"weight": gd.ones(2, 2, dtype="float64"), "bias": np.arange(2)}
    model.load_state_dict(state)
    assert model.weight.dtype == np.float32 and to_numpy(model.bias).tolist() == [0.0, 1.0]


def test_load_state_dict_reports_missing_unexpected_and_wrong_shapes():
    model = nn.Sequential(nn.Linear(3, 2))
    state = {key: value.numpy() for key, value in model.state_dict().items()}
    before = model[0].weight.numpy()
    bad = dict(state, **{"0.weight": np.zeros((2, 4)), "1.weight": np.zeros(1)})
    del bad["0.bias"]
    with pytest.raises(RuntimeError) as info:
        model.load_state_dict(bad)
    message = str(info.value)
    assert 'Missing key(s) in state_dict: "0.bias"' in message
    assert 'Unexpected key(s) in state_dict: "1.weight"' in message
    assert "size mismatch for 0.weight: copying a param with shape (2, 4)" in message and "(2, 3)" in message
    np.testing.assert_array_equal(model[0].weight.numpy(), before)  # nothing was copied


def test_load_state_dict_non_strict_returns_the_key_differences():
    model = nn.Sequential(nn.Linear(3, 2))
    state = {"0.weight": np.ones((2, 3)), "extra": np.ones(1)}
    result = model.load_state_dict(state, strict=False)
    assert result.missing_keys == ["0.bias"] and result.unexpected_keys == ["extra"]
    assert model[0].weight.numpy().tolist() == [[1.0] * 3] * 2
    with pytest.raises(RuntimeError, match="size mismatch for 0.weight"):
        model.load_state_dict({"0.weight": np.ones((3, 3))}, strict=False)
    with pytest.raises(RuntimeError, match="value for 0.weight is a str"):
        model.load_state_dict({"0.weight": "oops"}, strict=False)


def test_repr_matches_pytorch_layout():
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Sequential(nn.Flatten(), nn.Linear(8, 2, bias=False)))
    assert repr(model) == (
        "Sequential(\n"
        "  (0): Conv2d(1, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))\n"
        "  (1): ReLU()\n"
        "  (2): MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)\n"
        "  (3): Sequential(\n"
        "    (0): Flatten(start_dim=1, end_dim=-1)\n"
        "    (1): Linear(in_features=8, out_features=2, bias=False)\n"
        "  )\n"
        ")")
    assert repr(nn.BatchNorm2d(4)) == "BatchNorm2d(4, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)"
    assert repr(nn.Embedding(10, 3, padding_idx=0)) == "Embedding(10, 3, padding_idx=0)"
    assert repr(nn.GELU(approximate="tanh")) == "GELU(approximate='tanh')"
    assert repr(nn.Parameter(gd.zeros(1))).startswith("Parameter containing:\ntensor(")


def test_sequential_indexing_iteration_and_append():
    a, b, c = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)
    model = nn.Sequential(a, b)
    assert model.append(c) is model
    assert len(model) == 3 and list(model) == [a, b, c]
    assert model[0] is a and model[-1] is c
    head = model[:2]
    assert isinstance(head, nn.Sequential) and list(head) == [a, b]
    model[1] = nn.Tanh()
    assert isinstance(model[1], nn.Tanh)
    x = gd.randn(4, 2)
    np.testing.assert_allclose(model(x).numpy(), c(gd.tanh(a(x))).numpy())
    with pytest.raises(IndexError, match="index 3 is out of range for a Sequential of length 3"):
        model[3]
    with pytest.raises(TypeError, match="is not a Module"):
        model.append(lambda x: x)


def test_sequential_from_a_dict_keeps_the_names():
    model = nn.Sequential({"encoder": nn.Linear(2, 2), "act": nn.ReLU()})
    assert list(model.state_dict()) == ["encoder.weight", "encoder.bias"]
    assert model[0] is model.encoder


def test_module_list_registers_its_modules():
    layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(2)])
    layers.insert(0, nn.Linear(2, 4))
    layers += [nn.ReLU()]
    assert [type(m).__name__ for m in layers] == ["Linear", "Linear", "Linear", "ReLU"]
    assert layers[0].out_features == 4
    assert list(layers.state_dict())[:2] == ["0.weight", "0.bias"]
    assert len(list(layers.parameters())) == 6


def test_forward_must_be_defined():
    with pytest.raises(NotImplementedError, match="does not define forward"):
        nn.Module()(1)


def test_deepcopy_gives_an_independent_model():
    model = TwoLayer()
    clone = copy.deepcopy(model)
    assert isinstance(clone.fc1.weight, nn.Parameter) and clone.fc1.weight is not model.fc1.weight
    with gd.no_grad():
        clone.fc1.weight.fill_(0)
    assert model.fc1.weight.numpy().any()
    clone(gd.randn(3, 4)).sum().backward()
    assert clone.fc2.weight.grad is not None and model.fc2.weight.grad is None
