"""Recurrent layers with PyTorch's arguments, parameter names, layouts, initialisation and
equations, so that weights exchange through ``state_dict()``: ``RNN``, ``LSTM``, ``GRU`` over
sequences, and ``RNNCell``, ``LSTMCell``, ``GRUCell`` for one step.

Each layer and direction is one autodiff Function over the whole sequence (``gpudl.ops.rnn``).
Beyond PyTorch, ``forward`` takes ``lengths=`` (one int per batch row) for padded batches of
variable-length sequences: outputs past a row's length are zero, its final state is the one at
its last valid step, and the reverse direction starts there.
"""
import functools
import math
import warnings

from ..ops import concat, dropout, stack
from ..ops.rnn import check_nonlinearity, gru_layer, lstm_layer, rnn_layer, sequence_lengths
from ..tensor import Tensor
from . import init
from .module import Module
from .parameter import empty_parameter

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def _uniform_parameter(shape, bound, device, dtype, owner):
    """A Parameter drawn from U(-bound, bound) by the host generator, on ``device``."""
    return init.uniform_(empty_parameter(shape, device, dtype, owner), -bound, bound)


def _check_size(name, value, minimum):
    """Raise ValueError unless ``value`` is an int (not a bool) >= ``minimum``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_features(name, input, input_size):
    if input.shape[-1] != input_size:
        raise ValueError(f"{name}: input has {input.shape[-1]} features (shape {input.shape}) "
                         f"but input_size={input_size}")


def _layer_function(mode):
    """The function running one layer and direction of ``mode`` (``gpudl.ops.rnn``)."""
    if mode == "LSTM":
        return lstm_layer
    if mode == "GRU":
        return gru_layer
    return functools.partial(rnn_layer, nonlinearity="relu" if mode == "RNN_RELU" else "tanh")


def _reset_uniform(module):
    """Redraw every parameter of ``module`` from U(-1/sqrt(H), 1/sqrt(H)) in place (H = hidden_size)."""
    bound = 1.0 / math.sqrt(module.hidden_size)
    for param in module.parameters():
        init.uniform_(param, -bound, bound)


class RNNBase(Module):
    """Shared machinery of :class:`RNN`, :class:`LSTM` and :class:`GRU` (``mode`` is ``"RNN_TANH"``,
    ``"RNN_RELU"``, ``"LSTM"`` or ``"GRU"``)."""

    def __init__(self, mode, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None):
        super().__init__()
        _check_size("input_size", input_size, 1)
        _check_size("hidden_size", hidden_size, 1)
        _check_size("num_layers", num_layers, 1)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
            raise ValueError(f"dropout must be a number in [0, 1], got {dropout!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"dropout={dropout} has no effect with num_layers=1: it acts between "
                          "recurrent layers", stacklevel=3)
        self.mode = mode
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first = bool(bias), bool(batch_first)
        self.dropout, self.bidirectional = float(dropout), bool(bidirectional)
        directions = 2 if bidirectional else 1
        gates = _GATES[mode] * hidden_size
        bound = 1.0 / math.sqrt(hidden_size)
        self._flat_weights_names = []
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * directions
            for suffix in ("", "_reverse")[:directions]:
                shapes = {"weight_ih": (gates, layer_input), "weight_hh": (gates, hidden_size)}
                if self.bias:
                    shapes.update(bias_ih=(gates,), bias_hh=(gates,))
                for kind, shape in shapes.items():
                    name = f"{kind}_l{layer}{suffix}"
                    setattr(self, name, _uniform_parameter(shape, bound, device, dtype,
                                                           type(self).__name__))
                    self._flat_weights_names.append(name)

    @property
    def all_weights(self):
        """The parameters per layer and direction: ``[[w_ih, w_hh, b_ih, b_hh], ...]``."""
        per = 4 if self.bias else 2
        names = self._flat_weights_names
        return [[getattr(self, n) for n in names[k:k + per]] for k in range(0, len(names), per)]

    def flatten_parameters(self):
        """No-op, for code written for PyTorch (the weights are used as they are)."""

    def reset_parameters(self):
        """Redraw every parameter from U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)), in place."""
        _reset_uniform(self)

    def extra_repr(self):
        text = f"{self.input_size}, {self.hidden_size}"
        if self.mode == "RNN_RELU":
            text += ", nonlinearity='relu'"
        defaults = {"num_layers": 1, "bias": True, "batch_first": False, "dropout": 0.0,
                    "bidirectional": False}
        for key, default in defaults.items():
            if getattr(self, key) != default:
                text += f", {key}={getattr(self, key)}"
        return text

    def forward(self, input, hx=None, lengths=None):
        """Run the layers over ``input``.

        ``input``: [T, B, I] ([B, T, I] with ``batch_first``) or unbatched [T, I]. ``hx``: the
        initial hidden state [num_layers * D, B, H] (unbatched [num_layers * D, H]; D = 2 when
        bidirectional), for LSTM a pair ``(h0, c0)``; None means zeros. ``lengths``: one int per
        batch row (host data, any order) for padded variable-length batches.
        Returns ``(output, h_n)`` (LSTM: ``(output, (h_n, c_n))``); ``output`` is [T, B, D * H]
        ([B, T, D * H] with ``batch_first``), ``h_n`` [num_layers * D, B, H].
        """
        name = type(self).__name__
        is_lstm = self.mode == "LSTM"
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}: input must be a gpudl Tensor, got {type(input).__name__}")
        if input.ndim not in (2, 3):
            raise ValueError(f"{name}: expected input of 3 dimensions (batched) or 2 (unbatched), "
                             f"got shape {input.shape}")
        _check_features(name, input, self.input_size)
        batched = input.ndim == 3
        if not batched:
            if lengths is not None:
                raise ValueError(f"{name}: lengths needs a batched (3-D) input")
            x = input.unsqueeze(1)
        else:
            x = input.transpose(0, 1) if self.batch_first else input
        steps, batch = x.shape[:2]
        states = self._initial_states(hx, is_lstm, batched, batch, name)
        lens = sequence_lengths(lengths, steps, batch, x.device)
        directions = 2 if self.bidirectional else 1
        run = _layer_function(self.mode)
        per = 4 if self.bias else 2
        finals = []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(directions):
                k = layer * directions + direction
                weights = [getattr(self, n) for n in self._flat_weights_names[k * per:(k + 1) * per]]
                if not self.bias:
                    weights += [None, None]
                initial = [None if s is None else s[k] for s in states]
                result = run(x, *initial, *weights, reverse=direction == 1, lengths=lens)
                outputs.append(result[0])
                finals.append(result[1:])
            x = outputs[0] if directions == 1 else concat(outputs, axis=2)
            if self.dropout and self.training and layer + 1 < self.num_layers:
                x = dropout(x, self.dropout)
        h_n = [stack([f[j] for f in finals]) for j in range(len(finals[0]))]
        if not batched:
            x = x.squeeze(1)
            h_n = [h.squeeze(1) for h in h_n]
        elif self.batch_first:
            x = x.transpose(0, 1)
        return (x, tuple(h_n)) if is_lstm else (x, h_n[0])

    def _initial_states(self, hx, is_lstm, batched, batch, name):
        """``[h0]`` or ``[h0, c0]`` as [num_layers * D, B, H] tensors (None entries for zeros)."""
        count = 2 if is_lstm else 1
        if hx is None:
            return [None] * count
        if is_lstm and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise TypeError(f"{name}: hx must be a tuple (h0, c0), got {type(hx).__name__}")
        states = list(hx) if is_lstm else [hx]
        layers = self.num_layers * (2 if self.bidirectional else 1)
        expected = (layers, batch, self.hidden_size) if batched else (layers, self.hidden_size)
        for label, state in zip(("h0", "c0"), states):
            if not isinstance(state, Tensor) or state.shape != expected:
                raise ValueError(f"{name}: expected {label} of shape {expected}, got "
                                 f"{getattr(state, 'shape', type(state).__name__)}")
        return states if batched else [s.unsqueeze(1) for s in states]


class RNN(RNNBase):
    """Elman RNN, ``h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)`` (or relu), as torch.nn.RNN.

    Arguments: ``input_size, hidden_size, num_layers=1, nonlinearity='tanh', bias=True,
    batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None``.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None):
        check_nonlinearity(nonlinearity)
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size,
                         hidden_size, num_layers, bias, batch_first, dropout, bidirectional, device,
                         dtype)
        self.nonlinearity = nonlinearity


class LSTM(RNNBase):
    """Long short-term memory, as torch.nn.LSTM (gate blocks i, f, g, o in the weight rows):
    ``c_t = f c_{t-1} + i g``, ``h_t = o tanh(c_t)``. ``forward(x, (h0, c0))`` returns
    ``(output, (h_n, c_n))``. Same arguments as :class:`GRU`."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None):
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device, dtype)


class GRU(RNNBase):
    """Gated recurrent unit, as torch.nn.GRU (gate blocks r, z, n):
    ``n = tanh(W_in x + b_in + r (W_hn h + b_hn))``, ``h_t = (1 - z) n + z h_{t-1}``.

    Arguments: ``input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
    dropout=0.0, bidirectional=False, device=None, dtype=None``.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None):
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device, dtype)


class RNNCellBase(Module):
    """Shared machinery of the cells: ``weight_ih`` [G*H, I], ``weight_hh`` [G*H, H],
    ``bias_ih``, ``bias_hh`` [G*H], drawn from U(-1/sqrt(H), 1/sqrt(H)). One step is the
    sequence Function of :mod:`gpudl.ops.rnn` run over a single time step."""

    def __init__(self, mode, input_size, hidden_size, bias, device, dtype):
        super().__init__()
        _check_size("input_size", input_size, 1)
        _check_size("hidden_size", hidden_size, 1)
        self.mode = mode
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bool(bias)
        gates = _GATES[mode] * hidden_size
        bound = 1.0 / math.sqrt(hidden_size)
        owner = type(self).__name__
        self.weight_ih = _uniform_parameter((gates, input_size), bound, device, dtype, owner)
        self.weight_hh = _uniform_parameter((gates, hidden_size), bound, device, dtype, owner)
        if self.bias:
            self.bias_ih = _uniform_parameter((gates,), bound, device, dtype, owner)
            self.bias_hh = _uniform_parameter((gates,), bound, device, dtype, owner)
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)

    def reset_parameters(self):
        """Redraw every parameter from U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)), in place."""
        _reset_uniform(self)

    def extra_repr(self):
        text = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            text += ", bias=False"
        if self.mode == "RNN_RELU":
            text += ", nonlinearity='relu'"
        return text

    def _step(self, input, hx):
        """Run one step: ``input`` [B, I] or [I]; ``hx`` a list of states [B, H] / [H] or None."""
        name = type(self).__name__
        if not isinstance(input, Tensor) or input.ndim not in (1, 2):
            raise ValueError(f"{name}: expected input of shape [B, {self.input_size}] or "
                             f"[{self.input_size}], got {getattr(input, 'shape', type(input).__name__)}")
        _check_features(name, input, self.input_size)
        batched = input.ndim == 2
        x = input if batched else input.unsqueeze(0)
        expected = (x.shape[0], self.hidden_size) if batched else (self.hidden_size,)
        states = []
        for state in hx:
            if state is not None and (not isinstance(state, Tensor) or state.shape != expected):
                raise ValueError(f"{name}: expected a state of shape {expected}, got "
                                 f"{getattr(state, 'shape', type(state).__name__)}")
            states.append(state if state is None or batched else state.unsqueeze(0))
        result = _layer_function(self.mode)(x.unsqueeze(0), *states, self.weight_ih,
                                            self.weight_hh, self.bias_ih, self.bias_hh)
        finals = result[1:]
        return finals if batched else tuple(f.squeeze(0) for f in finals)


class RNNCell(RNNCellBase):
    """One Elman RNN step, as torch.nn.RNNCell: ``forward(input, hx=None)`` returns ``h'``."""

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None,
                 dtype=None):
        check_nonlinearity(nonlinearity)
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size,
                         hidden_size, bias, device, dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input, hx=None):
        """``h' = act(W_ih x + b_ih + W_hh h + b_hh)``; ``hx`` None means zeros."""
        return self._step(input, [hx])[0]


class LSTMCell(RNNCellBase):
    """One LSTM step, as torch.nn.LSTMCell: ``forward(input, (h, c)=None)`` returns ``(h', c')``."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__("LSTM", input_size, hidden_size, bias, device, dtype)

    def forward(self, input, hx=None):
        """``(h', c')`` from ``input`` and the state pair ``hx`` (None means zeros)."""
        if hx is None:
            hx = (None, None)
        elif not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise TypeError(f"LSTMCell: hx must be a tuple (h, c), got {type(hx).__name__}")
        return self._step(input, list(hx))


class GRUCell(RNNCellBase):
    """One GRU step, as torch.nn.GRUCell: ``forward(input, hx=None)`` returns ``h'``."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__("GRU", input_size, hidden_size, bias, device, dtype)

    def forward(self, input, hx=None):
        """``h'`` from ``input`` and ``hx`` (None means zeros)."""
        return self._step(input, [hx])[0]
