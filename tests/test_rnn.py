"""nn.RNN / LSTM / GRU and their cells: PyTorch's API and numbers, gradients, variable lengths,
truncated BPTT, the one-Function-per-layer-and-direction structure, and learning a small task.

The reference is a step-by-step composition of basic gpudl ops written from PyTorch's equations;
PyTorch itself (when installed) is an extra check through ``state_dict``.
"""
import numpy as np
import pytest

import gpudl as gd
from gpudl import nn, optim
from gpudl.autograd import gradcheck
from gpudl.nn.rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

MODULES = {"lstm": LSTM, "gru": GRU, "rnn_tanh": RNN, "rnn_relu": RNN}


def make(kind, *args, **kwargs):
    if kind == "rnn_relu":
        kwargs["nonlinearity"] = "relu"
    return MODULES[kind](*args, **kwargs)


def randn(device, *shape, requires_grad=False, seed=0):
    data = np.random.default_rng(seed).standard_normal(shape)
    return gd.tensor(data, device=device, requires_grad=requires_grad)


# --- the reference: PyTorch's equations as a loop of basic gpudl ops -------------------------

def reference_layer(kind, x, h, c, w_ih, w_hh, b_ih, b_hh, reverse, lengths):
    """One layer and direction over time-major x [T, B, I]; returns (y [T, B, H], h_n, c_n)."""
    steps, hidden = x.shape[0], w_hh.shape[1]
    outputs = [None] * steps
    for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
        gi = x[t] @ w_ih.T + (0 if b_ih is None else b_ih)
        gh = h @ w_hh.T + (0 if b_hh is None else b_hh)
        block = lambda g, k: g[:, k * hidden:(k + 1) * hidden]  # noqa: E731
        if kind == "lstm":
            g = gi + gh
            c_new = gd.sigmoid(block(g, 1)) * c + gd.sigmoid(block(g, 0)) * gd.tanh(block(g, 2))
            h_new = gd.sigmoid(block(g, 3)) * gd.tanh(c_new)
        elif kind == "gru":
            r = gd.sigmoid(block(gi, 0) + block(gh, 0))
            z = gd.sigmoid(block(gi, 1) + block(gh, 1))
            n = gd.tanh(block(gi, 2) + r * block(gh, 2))
            h_new = (1 - z) * n + z * h
        else:
            h_new = (gd.relu if kind == "rnn_relu" else gd.tanh)(gi + gh)
        if lengths is None:
            h = h_new
            outputs[t] = h
        else:
            valid = gd.tensor([[t < n] for n in lengths], device=x.device)
            h = gd.where(valid, h_new, h)
            outputs[t] = gd.where(valid, h, 0.0)
            if kind == "lstm":
                c_new = gd.where(valid, c_new, c)
        c = c_new if kind == "lstm" else None
    return gd.stack(outputs), h, c


def reference_forward(module, kind, x, hx=None, lengths=None):
    """The module's computation (no dropout), written with reference_layer."""
    if module.batch_first:
        x = x.transpose(0, 1)
    steps, batch = x.shape[:2]
    directions = 2 if module.bidirectional else 1
    zeros = gd.zeros((module.num_layers * directions, batch, module.hidden_size), dtype=x.dtype,
                     device=x.device)
    h0, c0 = (hx if kind == "lstm" else (hx, None)) if hx is not None else (zeros, zeros)
    finals_h, finals_c = [], []
    for layer in range(module.num_layers):
        outs = []
        for d, suffix in enumerate(("", "_reverse")[:directions]):
            k = layer * directions + d
            names = [f"{p}_l{layer}{suffix}" for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            weights = [getattr(module, n, None) for n in names]
            y, h, c = reference_layer(kind, x, h0[k], None if c0 is None else c0[k], *weights,
                                      reverse=d == 1, lengths=lengths)
            outs.append(y)
            finals_h.append(h)
            finals_c.append(c)
        x = outs[0] if directions == 1 else gd.concat(outs, axis=2)
    if module.batch_first:
        x = x.transpose(0, 1)
    h_n = gd.stack(finals_h)
    return (x, (h_n, gd.stack(finals_c))) if kind == "lstm" else (x, h_n)


def flat(result):
    """(output, h_n) or (output, (h_n, c_n)) as a flat list."""
    output, state = result
    return [output, *state] if isinstance(state, tuple) else [output, state]


def assert_close(a, b, **tol):
    np.testing.assert_allclose(a.numpy(), b.numpy(), **(tol or dict(rtol=1e-10, atol=1e-12)))


CONFIGS = [  # (num_layers, bidirectional, batch_first, bias, lengths)
    (1, False, False, True, None),
    (2, True, True, True, None),
    (2, False, False, False, [4, 1, 3]),
    (1, True, True, True, [2, 4, 1]),
]


def config_id(config):
    layers, bidirectional, batch_first, bias, lengths = config
    return (f"L{layers}-bi{int(bidirectional)}-bf{int(batch_first)}-b{int(bias)}"
            f"-len{int(lengths is not None)}")


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
@pytest.mark.parametrize("kind", list(MODULES))
def test_matches_step_by_step_reference(device, kind, config):
    layers, bidirectional, batch_first, bias, lengths = config
    module = make(kind, 3, 5, num_layers=layers, bidirectional=bidirectional,
                  batch_first=batch_first, bias=bias, dtype="float64", device=device)
    shape = (3, 4, 3) if batch_first else (4, 3, 3)
    x = randn(device, *shape, requires_grad=True)
    states = layers * (2 if bidirectional else 1)
    hx = randn(device, states, 3, 5, seed=1)
    if kind == "lstm":
        hx = (hx, randn(device, states, 3, 5, seed=2))
    got = flat(module(x, hx, lengths=lengths))
    want = flat(reference_forward(module, kind, x, hx, lengths))
    for g, w in zip(got, want):
        assert g.shape == w.shape
        assert_close(g, w)
    inputs = [x, *module.parameters()]
    directions = [randn(device, *o.shape, seed=10 + k) for k, o in enumerate(got)]
    grads = gd.autograd.grad(got, inputs, directions)
    ref_grads = gd.autograd.grad(want, inputs, directions)
    for g, w in zip(grads, ref_grads):
        assert_close(g, w)


@pytest.mark.parametrize("kind", list(MODULES))
def test_gradcheck_multilayer_bidirectional_with_lengths(device, kind):
    module = make(kind, 2, 2, num_layers=2, bidirectional=True, dtype="float64", device=device)
    x = randn(device, 3, 2, 2, requires_grad=True)
    h0 = randn(device, 4, 2, 2, requires_grad=True, seed=1)
    hx = (h0, randn(device, 4, 2, 2, requires_grad=True, seed=2)) if kind == "lstm" else h0
    states = list(hx) if kind == "lstm" else [hx]
    params = list(module.parameters())

    def fn(x, *rest):
        return flat(module(x, hx, lengths=[3, 2]))

    assert gradcheck(fn, x, *states, *params)


@pytest.mark.parametrize("kind", list(MODULES))
def test_gradcheck_single_layer_no_bias(device, kind):
    module = make(kind, 3, 3, bias=False, batch_first=True, dtype="float64", device=device)
    x = randn(device, 2, 4, 3, requires_grad=True)
    assert gradcheck(lambda x, *p: flat(module(x)), x, *module.parameters())


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
def test_cells_gradcheck_and_match_one_step_of_the_layer(device, cell):
    cls = {"lstm": LSTMCell, "gru": GRUCell, "rnn_tanh": RNNCell, "rnn_relu": RNNCell}[cell]
    kwargs = {"nonlinearity": "relu"} if cell == "rnn_relu" else {}
    module = cls(3, 4, dtype="float64", device=device, **kwargs)
    x = randn(device, 2, 3, requires_grad=True)
    h = randn(device, 2, 4, requires_grad=True, seed=1)
    hx = (h, randn(device, 2, 4, requires_grad=True, seed=2)) if cell == "lstm" else h
    params = list(module.parameters())
    states = list(hx) if cell == "lstm" else [hx]

    def fn(*_):
        out = module(x, hx)
        return list(out) if isinstance(out, tuple) else [out]

    assert gradcheck(fn, x, *states, *params)
    layer = make(cell, 3, 4, dtype="float64", device=device)
    layer.load_state_dict({f"{k}_l0": v for k, v in module.state_dict().items()})
    layer_hx = tuple(s.unsqueeze(0) for s in states) if cell == "lstm" else h.unsqueeze(0)
    _, state = layer(x.unsqueeze(0), layer_hx)
    batched = fn()
    for got, want in zip(batched, state if cell == "lstm" else [state]):
        assert_close(got, want[0])
    single = module(x[1], tuple(s[1] for s in states) if cell == "lstm" else h[1])
    for got, want in zip(single if cell == "lstm" else [single], batched):
        assert got.shape == (4,)
        assert_close(got, want[1])


def test_cell_defaults_and_unbatched(device):
    cell = LSTMCell(3, 4, device=device)
    x = randn(device, 3).astype("float32")
    h, c = cell(x)
    assert h.shape == (4,) and c.shape == (4,) and h.dtype == gd.float32
    h2, c2 = cell(x.unsqueeze(0))
    assert_close(h, h2[0], rtol=1e-6, atol=1e-7)
    assert GRUCell(3, 4, device=device)(x.unsqueeze(0)).shape == (1, 4)


# --- PyTorch's API: names, layouts, initialisation, shapes ------------------------------------

def test_parameter_names_layout_and_init():
    gd.manual_seed(3)
    lstm = LSTM(3, 4, num_layers=2, bidirectional=True)
    sd = lstm.state_dict()
    names = [f"{p}_l{k}{s}" for k in range(2) for s in ("", "_reverse")
             for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    assert list(sd) == names
    assert sd["weight_ih_l0"].shape == (16, 3) and sd["weight_ih_l1"].shape == (16, 8)
    assert sd["weight_hh_l1_reverse"].shape == (16, 4) and sd["bias_hh_l0"].shape == (16,)
    values = np.concatenate([v.numpy().ravel() for v in sd.values()])
    assert values.dtype == np.float32 and np.abs(values).max() <= 0.5 and values.std() > 0.2
    gd.manual_seed(3)
    again = LSTM(3, 4, num_layers=2, bidirectional=True)
    assert all(np.array_equal(v.numpy(), again.state_dict()[k].numpy()) for k, v in sd.items())
    assert list(GRU(2, 3, bias=False).state_dict()) == ["weight_ih_l0", "weight_hh_l0"]
    assert GRU(2, 3).weight_hh_l0.shape == (9, 3) and RNN(2, 3).weight_ih_l0.shape == (3, 2)
    assert len(lstm.all_weights) == 4 and lstm.all_weights[1][0] is lstm.weight_ih_l0_reverse
    assert repr(RNN(2, 3, nonlinearity="relu", num_layers=2)) == \
        "RNN(2, 3, nonlinearity='relu', num_layers=2)"


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_output_shapes_batch_first_and_unbatched(device, kind):
    module = make(kind, 3, 4, num_layers=2, bidirectional=True, batch_first=True, device=device)
    x = randn(device, 2, 5, 3).astype("float32")
    out, state = module(x)
    h_n = state[0] if kind == "lstm" else state
    assert out.shape == (2, 5, 8) and h_n.shape == (4, 2, 4)
    single, single_state = module(x[1])                        # unbatched [T, I]
    assert single.shape == (5, 8)
    assert_close(single, out[1], rtol=1e-6, atol=1e-7)
    single_h = single_state[0] if kind == "lstm" else single_state
    assert single_h.shape == (4, 4)
    assert_close(single_h, h_n[:, 1], rtol=1e-6, atol=1e-7)
    time_major = make(kind, 3, 4, num_layers=2, bidirectional=True, device=device)
    time_major.load_state_dict(module.state_dict())
    out_tm, _ = time_major(x.transpose(0, 1))
    assert_close(out_tm.transpose(0, 1), out, rtol=1e-6, atol=1e-7)


def test_lengths_semantics(device):
    """Outputs past a row's length are zero; the final state equals running that row alone on its
    valid prefix; the reverse direction starts at the last valid step."""
    gru = GRU(2, 3, bidirectional=True, batch_first=True, dtype="float64", device=device)
    x = randn(device, 3, 5, 2)
    lengths = np.array([2, 5, 4])
    out, h_n = gru(x, lengths=lengths)
    out_host = out.numpy()
    for b, n in enumerate(lengths):
        assert (out_host[b, n:] == 0).all()
        alone, h_alone = gru(x[b:b + 1, :n])
        np.testing.assert_allclose(out_host[b:b + 1, :n], alone.numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(h_n.numpy()[:, b], h_alone.numpy()[:, 0], rtol=1e-12, atol=1e-14)
    full, _ = gru(x, lengths=[5, 5, 5])
    assert_close(full, gru(x)[0])


def test_bad_arguments_raise_clear_errors(device):
    lstm = LSTM(3, 4, device=device)
    x = randn(device, 5, 2, 3).astype("float32")
    with pytest.raises(ValueError, match="input_size=3"):
        lstm(randn(device, 5, 2, 2).astype("float32"))
    with pytest.raises(ValueError, match="3 dimensions"):
        lstm(randn(device, 1, 5, 2, 3).astype("float32"))
    with pytest.raises(TypeError, match=r"tuple \(h0, c0\)"):
        lstm(x, gd.zeros((1, 2, 4), device=device))
    with pytest.raises(ValueError, match=r"h0 of shape \(1, 2, 4\)"):
        lstm(x, (gd.zeros((1, 3, 4), device=device), gd.zeros((1, 3, 4), device=device)))
    with pytest.raises(TypeError, match="dtype float64"):
        lstm(x.astype("float64"))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 5\]"):
        lstm(x, lengths=[6, 1])
    with pytest.raises(ValueError, match=r"one integer per batch row \(2\)"):
        lstm(x, lengths=[1, 2, 3])
    with pytest.raises(ValueError, match="lengths needs a batched"):
        lstm(x[:, 0], lengths=[5])
    with pytest.raises(ValueError, match="hidden_size must be an integer >= 1"):
        LSTM(3, 0)
    with pytest.raises(ValueError, match="nonlinearity 'sigmoid'"):
        RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="dropout must be a number in"):
        GRU(3, 4, num_layers=2, dropout=1.5)
    with pytest.warns(UserWarning, match="no effect with num_layers=1"):
        GRU(3, 4, dropout=0.2)
    with pytest.raises(ValueError, match=r"expected a state of shape \(2, 4\)"):
        GRUCell(3, 4, device=device)(x[0], gd.zeros((2, 5), device=device))


def test_dropout_between_layers_in_training_only(device):
    lstm = LSTM(3, 4, num_layers=2, dropout=0.5, device=device)
    plain = LSTM(3, 4, num_layers=2, device=device)
    plain.load_state_dict(lstm.state_dict())
    x = randn(device, 6, 2, 3).astype("float32")
    train_out, _ = lstm(x)
    assert not np.allclose(train_out.numpy(), plain(x)[0].numpy())
    lstm.eval()
    assert_close(lstm(x)[0], plain(x)[0], rtol=0, atol=0)


def test_float16_runs_close_to_float32(device):
    lstm = LSTM(3, 8, device=device)
    x = randn(device, 6, 4, 3).astype("float32")
    out32, (h32, _) = lstm(x)
    lstm.half()
    out16, (h16, _) = lstm(x.astype("float16"))
    assert out16.dtype == gd.float16 and h16.dtype == gd.float16
    np.testing.assert_allclose(out16.numpy().astype(np.float32), out32.numpy(), atol=1e-2)


# --- speed by construction ---------------------------------------------------------------------

def graph_size(tensors):
    """Number of Functions reachable from ``tensors``."""
    seen, stack = set(), [t.grad_fn for t in tensors if t.grad_fn is not None]
    while stack:
        fn = stack.pop()
        if fn in seen:
            continue
        seen.add(fn)
        stack += [v.grad_fn for v in fn.inputs if getattr(v, "grad_fn", None) is not None]
    return len(seen)


@pytest.mark.parametrize("kind", list(MODULES))
def test_one_function_per_layer_and_direction(device, kind):
    """The graph does not grow with the sequence length: no node per time step."""
    module = make(kind, 3, 4, num_layers=2, bidirectional=True, device=device)
    sizes = [graph_size(flat(module(randn(device, steps, 2, 3).astype("float32"))))
             for steps in (2, 40)]
    assert sizes[0] == sizes[1] <= 12


def test_output_modified_in_place_is_reported(device):
    lstm = LSTM(2, 3, device=device)
    out, _ = lstm(randn(device, 4, 2, 2, requires_grad=True).astype("float32"))
    out.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an in-place operation"):
        out.sum().backward()


# --- truncated BPTT ----------------------------------------------------------------------------

def test_truncated_bptt_by_detaching_the_carried_state(device):
    lstm = LSTM(2, 3, dtype="float64", device=device)
    chunks = [randn(device, 4, 2, 2, seed=s) for s in (1, 2)]
    _, (h, c) = lstm(chunks[0])
    (h.sum() + c.sum()).backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        lstm(chunks[1], (h, c))[0].sum().backward()            # graph of chunk 0 already freed
    lstm.zero_grad()
    carried = (h.detach(), c.detach())
    assert not carried[0].requires_grad
    lstm(chunks[1], carried)[0].sum().backward()
    tbptt_grads = [p.grad.numpy() for p in lstm.parameters()]
    lstm.zero_grad()
    constants = tuple(gd.tensor(s.numpy(), device=device) for s in carried)
    lstm(chunks[1], constants)[0].sum().backward()              # chunk 1 alone from fixed states
    for got, want in zip(tbptt_grads, (p.grad.numpy() for p in lstm.parameters())):
        np.testing.assert_allclose(got, want, rtol=1e-12)


# --- learning ----------------------------------------------------------------------------------

def test_lstm_learns_to_recall_the_marked_value(device):
    """Each sequence carries one marked value among distractors; the target is that value. Predicting
    the mean would leave a loss of 1/12 ~ 0.083."""
    rng = np.random.default_rng(0)
    steps, batch = 8, 64
    lstm = LSTM(2, 16, batch_first=True, device=device)
    head = nn.Linear(16, 1, device=device)
    opt = optim.Adam(list(lstm.parameters()) + list(head.parameters()), lr=0.03)

    def sample():
        values = rng.uniform(0, 1, (batch, steps))
        marks = np.zeros((batch, steps))
        where = rng.integers(0, steps, batch)
        marks[np.arange(batch), where] = 1
        x = np.stack([values, marks], axis=-1).astype(np.float32)
        y = values[np.arange(batch), where][:, None].astype(np.float32)
        return gd.tensor(x, device=device), gd.tensor(y, device=device)

    def loss_of(x, y):
        _, (h, _) = lstm(x)
        return ((head(h[-1]) - y) ** 2).mean()

    for _ in range(150):
        loss = loss_of(*sample())
        opt.zero_grad()
        loss.backward()
        opt.step()
    with gd.no_grad():
        assert loss_of(*sample()).item() < 0.01


# --- PyTorch side by side (optional) -------------------------------------------------------------

@pytest.mark.parametrize("kind", list(MODULES))
@pytest.mark.parametrize("lengths", [None, [3, 5, 1]])
def test_matches_pytorch(device, kind, lengths):
    torch = pytest.importorskip("torch", reason="PyTorch not installed: no side-by-side check")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    module = make(kind, 3, 4, num_layers=2, bidirectional=True, batch_first=True, dtype="float64",
                  device=device)
    torch_cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}.get(kind, torch.nn.RNN)
    kwargs = {"nonlinearity": "relu"} if kind == "rnn_relu" else {}
    reference = torch_cls(3, 4, num_layers=2, bidirectional=True, batch_first=True, **kwargs).double()
    reference.load_state_dict({k: torch.from_numpy(v.numpy()) for k, v in module.state_dict().items()})
    x_host = np.random.default_rng(0).standard_normal((3, 5, 3))
    x = gd.tensor(x_host, device=device, requires_grad=True)
    xt = torch.tensor(x_host, requires_grad=True)
    got = flat(module(x, lengths=lengths))
    if lengths is None:
        want = flat(reference(xt))
    else:
        packed = pack_padded_sequence(xt, torch.tensor(lengths), batch_first=True,
                                      enforce_sorted=False)
        out, state = reference(packed)
        want = flat((pad_packed_sequence(out, batch_first=True, total_length=5)[0], state))
    weights = [np.random.default_rng(9 + k).standard_normal(g.shape) for k, g in enumerate(got)]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w.detach().numpy(), rtol=1e-10, atol=1e-12)
    sum((g * gd.tensor(v, device=device)).sum() for g, v in zip(got, weights)).backward()
    sum((w * torch.tensor(v)).sum() for w, v in zip(want, weights)).backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    torch_params = dict(reference.named_parameters())
    for name, p in module.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), torch_params[name].grad.numpy(), rtol=1e-9,
                                   atol=1e-12, err_msg=name)

