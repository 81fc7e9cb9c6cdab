"""gpudl.save / gpudl.load: exact round trips of model + optimizer + scheduler state, device
mapping, and clear errors that leave an existing checkpoint untouched."""
import json
import os
import zipfile

import numpy as np
import pytest

import gpudl
from gpudl import optim
from gpudl.optim import lr_scheduler
from gpudl.serialization import METADATA_KEY, CheckpointError, load, save


def make_model(device):
    """A dict of tensors standing in for a model's state dict."""
    return {"fc1.weight": gpudl.randn(4, 3, device=device, requires_grad=True),
            "fc1.bias": gpudl.zeros(4, device=device, requires_grad=True),
            "bn.running_mean": gpudl.tensor(np.arange(4.0), dtype="float64", device=device),
            "bn.num_batches_tracked": gpudl.tensor(7, device=device)}


def train(model, opt, scheduler, steps):
    for _ in range(steps):
        opt.zero_grad()
        ((model["fc1.weight"] ** 2).sum() + (model["fc1.bias"] - 1.0).abs().sum()).backward()
        opt.step()
        scheduler.step()


def make_training(device):
    model = make_model(device)
    opt = optim.Adam([{"params": [model["fc1.weight"]]}, {"params": [model["fc1.bias"]], "lr": 0.01}],
                     lr=0.1, amsgrad=True)
    scheduler = lr_scheduler.SequentialLR(
        opt, [lr_scheduler.LinearLR(opt, total_iters=2), lr_scheduler.CosineAnnealingLR(opt, 6)], milestones=[2])
    return model, opt, scheduler


def assert_same(a, b):
    """Structural equality with exact array values, types, dtypes and requires_grad."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, gpudl.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and a.requires_grad == b.requires_grad
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b or (a != a and b != b)


def test_model_optimizer_scheduler_round_trip_resumes_exactly(device, tmp_path):
    model, opt, scheduler = make_training(device)
    train(model, opt, scheduler, 3)
    state = {"model": model, "optimizer": opt.state_dict(), "scheduler": scheduler.state_dict(), "epoch": 3}
    path = tmp_path / "checkpoint.npz"
    save(state, path)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.npz"]  # no temporary left behind
    loaded = load(path, map_location=device)
    assert_same(loaded, state)
    assert all(t.device == device for t in loaded["model"].values())

    model2, opt2, scheduler2 = make_training(device)
    for key, tensor in loaded["model"].items():
        model2[key].data[...] = tensor.data
    opt2.load_state_dict(loaded["optimizer"])
    scheduler2.load_state_dict(loaded["scheduler"])
    train(model, opt, scheduler, 4)
    train(model2, opt2, scheduler2, 4)
    for key in model:
        np.testing.assert_array_equal(model2[key].numpy(), model[key].numpy())
    assert scheduler2.get_last_lr() == scheduler.get_last_lr()


def test_plain_values_keep_their_types(tmp_path):
    state = {"ints": {0: 1, 1: -2**40}, "mixed": [1.5, float("nan"), float("inf"), True, None, "text", (1, "a")],
             "array": np.arange(6, dtype=np.int32).reshape(2, 3), "scalar": np.float32(2.5),
             "nested": {"empty": {}, "list": [], "1": "string key"}}
    save(state, tmp_path / "plain")
    loaded = load(tmp_path / "plain", map_location="cpu")
    assert list(loaded["ints"]) == [0, 1] and loaded["ints"][1] == -2**40
    assert loaded["mixed"][:3][0] == 1.5 and np.isnan(loaded["mixed"][1]) and loaded["mixed"][2] == float("inf")
    assert loaded["mixed"][3:] == [True, None, "text", (1, "a")] and type(loaded["mixed"][3]) is bool
    assert type(loaded["array"]) is np.ndarray and loaded["array"].dtype == np.int32
    np.testing.assert_array_equal(loaded["array"], state["array"])
    assert type(loaded["scalar"]) is np.float32 and loaded["scalar"] == 2.5
    assert loaded["nested"] == {"empty": {}, "list": [], "1": "string key"}
    assert not os.path.exists(str(tmp_path / "plain") + ".npz")  # written exactly where asked


def test_file_layout_is_a_plain_npz_with_json_metadata(tmp_path):
    state = {"model": {"w": gpudl.ones(2, 2, device="cpu")},
             "optimizer": {"state": {0: {"exp_avg": gpudl.zeros(2, device="cpu")}}},
             "file": gpudl.ones(1, device="cpu"), "root": gpudl.zeros(1, device="cpu")}
    save(state, tmp_path / "c.npz")
    with np.load(tmp_path / "c.npz", allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted([METADATA_KEY, "model/w", "optimizer/state/0/exp_avg", "file~1", "root"])
        metadata = json.loads(str(npz[METADATA_KEY]))
        assert npz[METADATA_KEY].shape == () and metadata["format"] == "gpudl-checkpoint"
    node = metadata["tree"]["items"][0][1]["items"][0][1]
    assert node == {"type": "tensor", "key": "model/w", "dtype": "float32", "device": "cpu",
                    "requires_grad": False}


def test_gpu_checkpoint_stores_host_arrays_and_loads_anywhere(device, tmp_path):
    tensor = gpudl.randn(3, 2, device=device)
    save({"w": tensor}, tmp_path / "c.npz")
    with np.load(tmp_path / "c.npz", allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["w"], tensor.numpy())
    on_cpu = load(tmp_path / "c.npz", map_location="cpu")["w"]
    assert on_cpu.device == "cpu" and type(on_cpu.data) is np.ndarray
    assert load(tmp_path / "c.npz", map_location=device)["w"].device == device
    assert load(tmp_path / "c.npz")["w"].device == gpudl.default_device()


@pytest.fixture
def existing(tmp_path):
    """An existing good checkpoint and its bytes."""
    path = tmp_path / "checkpoint.npz"
    save({"w": gpudl.ones(3), "epoch": 1}, path)
    return path, path.read_bytes()


def test_unsavable_state_leaves_the_old_checkpoint_intact(existing):
    path, before = existing
    with pytest.raises(CheckpointError, match=r"checkpoint\.npz.*state\['extra'\]\[1\] has unsupported type object"):
        save({"w": gpudl.zeros(3), "extra": [1, object()]}, path)
    with pytest.raises(CheckpointError, match=r"key \(1, 2\) of type tuple"):
        save({(1, 2): 3}, path)
    with pytest.raises(CheckpointError, match="dtype object, which needs pickle"):
        save({"a": np.array([None, 1])}, path)
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == ["checkpoint.npz"]


def test_a_write_failing_midway_leaves_the_old_checkpoint_intact(existing, monkeypatch):
    path, before = existing
    real_savez = np.savez

    def savez_then_fail(file, **arrays):
        real_savez(file, **arrays)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", savez_then_fail)
    with pytest.raises(CheckpointError, match="could not write checkpoint .*checkpoint.npz.*No space left"):
        save({"w": gpudl.zeros(1000)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == ["checkpoint.npz"]
    assert load(path, map_location="cpu")["epoch"] == 1


def test_truncated_file_is_a_clear_error(existing, tmp_path):
    path, before = existing
    for n, cut in enumerate((len(before) // 2, len(before) - 30, 10)):
        truncated = tmp_path / f"truncated{n}.npz"
        truncated.write_bytes(before[:cut])
        with pytest.raises(CheckpointError, match=f"truncated{n}.npz' is truncated or corrupt"):
            load(truncated, map_location="cpu")


def test_corrupt_member_fails_when_read(tmp_path):
    path = tmp_path / "corrupt.npz"
    save({"w": gpudl.tensor(np.arange(1000.0))}, path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("w.npy")
    position = info.header_offset + 30 + len(info.filename) + info.file_size // 2
    data[position] ^= 0xFF  # the zip directory is intact; the member's CRC no longer matches
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt.npz' is truncated or corrupt.*CRC"):
        load(path, map_location="cpu")


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.txt' is not a gpudl checkpoint: it is not an .npz"):
        load(text, map_location="cpu")
    npy = tmp_path / "array.npy"
    np.save(npy, np.arange(3))
    with pytest.raises(CheckpointError, match="array.npy' is not a gpudl checkpoint"):
        load(npy, map_location="cpu")
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.arange(3))
    with pytest.raises(CheckpointError, match="plain.npz' is an .npz file but not a gpudl checkpoint"):
        load(plain, map_location="cpu")
    with pytest.raises(CheckpointError, match="missing.npz' does not exist"):
        load(tmp_path / "missing.npz", map_location="cpu")
    with pytest.raises(CheckpointError, match="is a directory"):
        load(tmp_path, map_location="cpu")


def test_bad_metadata_is_a_clear_error(tmp_path):
    cases = {"garbage": "{not json", "format": json.dumps({"format": "other", "version": 1, "tree": {}}),
             "version": json.dumps({"format": "gpudl-checkpoint", "version": 99, "tree": {}}),
             "tree": json.dumps({"format": "gpudl-checkpoint", "version": 1,
                                 "tree": {"type": "tensor", "key": "missing", "dtype": "float32"}})}
    messages = {"garbage": "has corrupt metadata", "format": "is not a gpudl checkpoint \\(format 'other'\\)",
                "version": "format version 99", "tree": "has corrupt metadata \\(KeyError"}
    for name, text in cases.items():
        path = tmp_path / f"{name}.npz"
        np.savez(path, **{METADATA_KEY: np.array(text)})
        with pytest.raises(CheckpointError, match=f"{name}.npz.*{messages[name]}"):
            load(path, map_location="cpu")


def test_saving_into_a_missing_folder_names_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="could not write checkpoint .*nowhere/c.npz"):
        save({"a": 1}, tmp_path / "nowhere" / "c.npz")
