"""Recurrent layers over whole sequences: one Function per layer and direction.

Time-major inside: ``x`` is [T, B, I]. Forward: the input projection of all steps is one matrix
product (``W_ih x + b``, the bias as an extra weight column against a column of ones); each step
is one product for the recurrence (``h_prev @ W_hh.T``) and one fused cell kernel
(``backend.fused.*_cell_forward``, kernels/rnn.cuh). Backward through time keeps only
``dh = dgates_t @ W_hh`` and the cell's backward kernel inside the loop; the gradients of ``x``,
``W_ih`` with the input bias, and ``W_hh`` are single matrix products over all steps after it.
Where the backend has a runner for whole sequences (``fused.recurrence_runner``: the host's
compiled kernels, gpudl.backend.native_recurrence) the time loop is one call to it, with the same
cell functions and products; elsewhere it is the Python loop over steps here.

Buffers are allocated once per call for the whole sequence, from the buffer pool
(gpudl.backend.buffer_pool), which takes back those that never leave the Function (not the states
``hs``, whose outputs are views of it, nor the returned gradients) once the graph is freed. Saved for backward:
  all kinds  x (time-major, with the ones column) and the hidden states ``hs`` [T+1, B, H] (h0
             included)
  LSTM       the gate activations i, f, g, o [T, B, 4H] (written over the input projection),
             the cell states [T+1, B, H] and tanh(c) [T, B, H]
  GRU        the activations r, z, n and hn = W_hn h + b_hn [T, B, 4H]
  RNN        nothing more: the activation's derivative comes from h.
Activations rather than pre-activations: the backward then needs no exp and no tanh.

Variable-length batches: ``lengths`` (an int64 array on the device, see
:func:`sequence_lengths`) makes rows carry their state unchanged past their length, so the final
state is the one at each row's last valid step and a reverse pass starts there; outputs past a
row's length are zero.
"""
from .. import backend as _backend
from ..autograd.function import Function
from ..backend.buffer_pool import POOL
from ..tensor import Tensor
from ._util import accumulation_dtype
from .linear import gemm


class _Recurrence(Function):
    """One layer and direction over a sequence.

    Inputs ``(x, h0, c0, w_ih, w_hh, b_ih, b_hh)`` (``h0``, ``c0`` and the biases may be None;
    ``c0`` is only used by the LSTM); outputs ``(y, h_n)``, and ``c_n`` for the LSTM.
    Subclasses define the number of gate blocks, the per-sequence buffers and the two cell calls.
    """

    gates = 1
    fold_bias_hh = True  # b_hh joins the input projection (not for GRU, where r multiplies it)

    def __init__(self, reverse=False, lengths=None):
        self.reverse = reverse
        self.lengths = lengths
        self.device = None
        self.runner = None

    def _buffer(self, shape, dtype):
        """A per-sequence buffer from the pool."""
        return POOL.take(self.xp, self.device, shape, dtype)

    def _order(self, steps):
        """``(t, prev, cur)`` in processing order: ``hs[prev]`` enters step t, ``hs[cur]`` leaves it."""
        if self.reverse:
            return [(t, t + 1, t) for t in range(steps - 1, -1, -1)]
        return [(t, t, t + 1) for t in range(steps)]

    def _bias_column(self, x, w_ih, b_ih, b_hh):
        """``(x, w)`` for the input projection ``x @ w.T``: with biases, x gets a column of ones and
        w the input bias (b_ih, plus b_hh unless the cell keeps it apart) as a last column, so the
        product adds the bias and the weight-gradient product yields its gradient: no separate
        pass over the [T, B, G*H] gates for either."""
        xp = self.xp
        biases = [b for b in (b_ih, b_hh if self.fold_bias_hh else None) if b is not None]
        if not biases:
            return xp.ascontiguousarray(x), w_ih
        bias = biases[0] if len(biases) == 1 else biases[0] + biases[1]
        steps, batch, features = x.shape
        xa = self._buffer((steps, batch, features + 1), x.dtype)
        xa[:, :, :features] = x
        xa[:, :, features] = 1
        return xa, xp.concatenate([w_ih, bias[:, None]], axis=1)

    def _recurrent_weight(self, w_hh):
        """The right operand of the per-step product ``h_prev @ W_hh.T`` and the pooled buffers
        it took (given back after the loop). On the host a C-contiguous copy of ``W_hh.T``, made
        once per sequence: OpenBLAS multiplies by it faster than by the transposed view (H 128,
        one thread: 50 against 73 us per step at batch 32, 171 against 195 at 128, equal at 512).
        On the GPU the view, which costs no launch."""
        if self.backend.name != "numpy":
            return w_hh.T, ()
        w_rec = self._buffer(w_hh.shape[::-1], w_hh.dtype)
        w_rec[...] = w_hh.T
        return w_rec, (w_rec,)

    def forward(self, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        xp = self.xp
        self.device = self.backend.device_of(x)
        steps, batch, features = x.shape
        self.sequence_shape = (steps, batch)
        hidden = w_hh.shape[1]
        xa, wa = self._bias_column(x, w_ih, b_ih, b_hh)
        self.bias_column = xa.shape[2] > features  # then xa is a pooled buffer of our own
        xw = self._buffer((steps, batch, self.gates * hidden), x.dtype)
        gemm(xp, xa.reshape(steps * batch, xa.shape[-1]), wa.T, out=xw.reshape(steps * batch, xw.shape[-1]))
        hs = xp.empty((steps + 1, batch, hidden), x.dtype)
        hs[steps if self.reverse else 0] = 0 if h0 is None else h0
        cell = self._forward_buffers(xw, c0, b_hh, hidden)
        hw = self._buffer((batch, self.gates * hidden), x.dtype)
        w_rec, rec_buffers = self._recurrent_weight(w_hh)
        fused = self.backend.fused
        self.runner = fused.recurrence_runner(x.dtype, w_hh.shape)
        if self.runner is not None:
            self._sequence_forward(cell, xw, hw, hs, w_rec)
        else:
            for t, prev, cur in self._order(steps):
                gemm(xp, hs[prev], w_rec, out=hw)
                self._cell_forward(fused, cell, xw, hw, hs, t, prev, cur)
        internal = self._internal(xw, cell)
        pooled = [hw] if any(a is xw for a in internal) else [hw, xw]
        POOL.give(self.device, *pooled, *rec_buffers)
        y = hs[:steps] if self.reverse else hs[1:]
        if self.lengths is not None:
            valid = self.lengths[None, :] > xp.arange(steps)[:, None]
            y = xp.where(valid[:, :, None], y, 0)
        final = 0 if self.reverse else steps
        self.saved = (xa, w_ih, w_hh, hs, y) + internal
        return (y, hs[final].copy()) + self._final_cell(cell, final)

    def backward(self, gy, gh_n, gc_n=None):
        xp = self.xp
        xa, w_ih, w_hh, hs, _, *cell = self.saved
        steps, batch, _ = xa.shape
        features, hidden = w_ih.shape[1], w_hh.shape[1]
        dtype = xa.dtype
        zeros = xp.zeros((batch, hidden), dtype)
        dy = None if gy is None else xp.ascontiguousarray(gy)
        dh = zeros.copy() if gh_n is None else xp.array(gh_n, dtype=dtype, copy=True)
        dh_rec = xp.zeros_like(zeros)
        dc = self._cell_gradient(gc_n, zeros)
        dgx, dgh = self._gate_gradients(steps, batch, hidden, dtype)
        fused = self.backend.fused
        needs = self.needs_input_grad
        if self.runner is not None:
            self._sequence_backward(cell, hs, zeros if dy is None else dy, dh_rec, dh, dc, dgx, dgh,
                                    xp.ascontiguousarray(w_hh), needs[1])
        else:
            for k, (t, prev, cur) in enumerate(self._order(steps)[::-1]):
                self._cell_backward(fused, cell, hs, zeros if dy is None else dy[t], dh_rec, dh, dc,
                                    dgx, dgh, t, prev, cur)
                if k + 1 < steps or needs[1]:
                    gemm(xp, dgh[t], w_hh, out=dh_rec)
        dgx2 = dgx.reshape(steps * batch, dgx.shape[-1])
        dgh2 = dgh.reshape(steps * batch, dgh.shape[-1])
        gx = gemm(xp, dgx2, w_ih).reshape(steps, batch, features) if needs[0] else None
        gh0 = dh_rec + dh if needs[1] else None
        gc0 = dc if needs[2] else None
        h_prev = (hs[1:] if self.reverse else hs[:-1]).reshape(steps * batch, hidden)
        xa2 = xa.reshape(steps * batch, xa.shape[-1])
        shared = dgh is dgx  # b_ih and b_hh entered as one sum: one gradient serves both
        gw_ih = gb_ih = gb_hh = gw_hh = gwa = None
        input_weights = needs[3] or needs[5] or (needs[6] and shared)
        if shared and needs[4] and input_weights:
            gw_hh, gwa = self._joint_weight_gradients(dgx2, h_prev, xa2)
        else:
            gw_hh = gemm(xp, dgh2.T, h_prev) if needs[4] else None
            # [G*H, I (+1)]: the last column, against the ones, is the input bias gradient
            gwa = gemm(xp, dgx2.T, xa2) if input_weights else None
        if gwa is not None:
            gw_ih = gwa[:, :features] if needs[3] else None
            gb_ih = gwa[:, features] if self.bias_column else None
        if needs[6]:
            gb_hh = gb_ih if shared else dgh2.sum(axis=0, dtype=accumulation_dtype(dtype))
        POOL.give(self.device, *((dgx,) if shared else (dgx, dgh)))
        return gx, gh0, gc0, gw_ih, gw_hh, gb_ih if needs[5] else None, gb_hh

    def _joint_weight_gradients(self, dgates, h_prev, xa):
        """``(dgates.T @ h_prev, dgates.T @ xa)`` as one product against ``[h_prev | xa]``: the
        gate gradients [T*B, G*H], the largest operand, are read once, and the narrow input part
        (I + 1 columns) does not pay for its own packing of them."""
        hidden = h_prev.shape[1]
        joint = self._buffer((h_prev.shape[0], hidden + xa.shape[1]), h_prev.dtype)
        joint[:, :hidden] = h_prev
        joint[:, hidden:] = xa
        both = gemm(self.xp, dgates.T, joint)
        POOL.give(self.device, joint)
        return both[:, :hidden], both[:, hidden:]

    def release(self):
        """Drop what backward needed; the buffers only this Function saw go back to the pool."""
        if self.saved:
            POOL.give(self.device, *self.saved[5:])
            if self.bias_column:
                POOL.give(self.device, self.saved[0])
        super().release()

    def _run(self, loop, w, *arrays):
        """``loop`` of the whole-sequence runner (see ``native_recurrence.LOOPS``) over this
        layer's sequence; ``arrays`` are the loop's own arguments."""
        self.runner.run(loop, w, self.lengths, *self.sequence_shape, *arrays, reverse=self.reverse)

    @staticmethod
    def _step_stride(dy):
        """Elements between the steps of ``dy``: [T, B, H], or one [B, H] of zeros for all."""
        return dy[0].size if dy.ndim == 3 else 0

    # hooks --------------------------------------------------------------------------------
    def _forward_buffers(self, xw, c0, b_hh, hidden):
        """Per-sequence buffers of this cell kind (a tuple, passed to the cell calls)."""
        return ()

    def _internal(self, xw, cell):
        """What backward needs besides x, the weights and the states: buffers no one else sees
        (saved, then pooled when the graph is freed)."""
        return ()

    def _final_cell(self, cell, final):
        """Extra outputs (the LSTM's final cell state)."""
        return ()

    def _cell_gradient(self, gc_n, zeros):
        """The in/out cell-state gradient buffer (LSTM), starting from ``gc_n``."""
        return None

    def _gate_gradients(self, steps, batch, hidden, dtype):
        """``(dgx, dgh)``: gradients w.r.t. the input projection and w.r.t. ``hw`` (+ b_hh) for all
        steps; one and the same array unless the cell tells them apart (GRU)."""
        dg = self._buffer((steps, batch, self.gates * hidden), dtype)
        return dg, dg


class RNNSequence(_Recurrence):
    """Elman RNN: ``h = tanh(W_ih x + b_ih + W_hh h_prev + b_hh)`` (or relu)."""

    def __init__(self, reverse=False, lengths=None, relu=False):
        super().__init__(reverse, lengths)
        self.relu = relu

    def _sequence_forward(self, cell, xw, hw, hs, w_rec):
        self._run("rnn_forward", w_rec, self.relu, hs, xw, hw)

    def _sequence_backward(self, cell, hs, dy, dh_rec, dh, dc, dgx, dgh, w_hh, last_product):
        self._run("rnn_backward", w_hh, self.relu, last_product, hs, dy, self._step_stride(dy),
                  dh_rec, dh, dgx)

    def _cell_forward(self, fused, cell, xw, hw, hs, t, prev, cur):
        fused.rnn_cell_forward(xw[t], hw, hs[prev], hs[cur], lengths=self.lengths, t=t,
                               relu=self.relu)

    def _cell_backward(self, fused, cell, hs, dy, dh_rec, dh, dc, dgx, dgh, t, prev, cur):
        fused.rnn_cell_backward(hs[cur], dy, dh_rec, dh, dgx[t], lengths=self.lengths, t=t,
                                relu=self.relu)


class LSTMSequence(_Recurrence):
    """LSTM with gate blocks i, f, g, o: ``c = f c_prev + i g``, ``h = o tanh(c)``."""

    gates = 4

    def _forward_buffers(self, xw, c0, b_hh, hidden):
        steps, batch, _ = xw.shape
        cs = self._buffer((steps + 1, batch, hidden), xw.dtype)
        cs[steps if self.reverse else 0] = 0 if c0 is None else c0
        return cs, self._buffer((steps, batch, hidden), xw.dtype)

    def _internal(self, xw, cell):
        return (xw,) + cell

    def _final_cell(self, cell, final):
        return (cell[0][final].copy(),)

    def _cell_gradient(self, gc_n, zeros):
        return zeros.copy() if gc_n is None else self.xp.array(gc_n, dtype=zeros.dtype, copy=True)

    def _sequence_forward(self, cell, xw, hw, hs, w_rec):
        self._run("lstm_forward", w_rec, hs, xw, hw, *cell)

    def _sequence_backward(self, cell, hs, dy, dh_rec, dh, dc, dgx, dgh, w_hh, last_product):
        self._run("lstm_backward", w_hh, last_product, *cell, dy, self._step_stride(dy), dh_rec,
                  dh, dc, dgx)

    def _cell_forward(self, fused, cell, xw, hw, hs, t, prev, cur):
        cs, tanh_c = cell
        fused.lstm_cell_forward(xw[t], hw, cs[prev], hs[prev], cs[cur], hs[cur], tanh_c[t],
                                lengths=self.lengths, t=t)

    def _cell_backward(self, fused, cell, hs, dy, dh_rec, dh, dc, dgx, dgh, t, prev, cur):
        act, cs, tanh_c = cell
        fused.lstm_cell_backward(act[t], cs[prev], tanh_c[t], dy, dh_rec, dh, dc, dgx[t],
                                 lengths=self.lengths, t=t)


class GRUSequence(_Recurrence):
    """GRU with gate blocks r, z, n: ``n = tanh(W_in x + b_in + r (W_hn h + b_hn))``,
    ``h = (1 - z) n + z h_prev``."""

    gates = 3
    fold_bias_hh = False

    def _forward_buffers(self, xw, c0, b_hh, hidden):
        steps, batch, _ = xw.shape
        bias = self.xp.zeros(3 * hidden, xw.dtype) if b_hh is None else b_hh
        return self._buffer((steps, batch, 4 * hidden), xw.dtype), bias

    def _internal(self, xw, cell):
        return cell[:1]

    def _gate_gradients(self, steps, batch, hidden, dtype):
        shape = (steps, batch, 3 * hidden)
        return self._buffer(shape, dtype), self._buffer(shape, dtype)

    def _sequence_forward(self, cell, xw, hw, hs, w_rec):
        act, bias = cell
        self._run("gru_forward", w_rec, hs, xw, hw, self.xp.ascontiguousarray(bias), act)

    def _sequence_backward(self, cell, hs, dy, dh_rec, dh, dc, dgx, dgh, w_hh, last_product):
        self._run("gru_backward", w_hh, last_product, cell[0], hs, dy, self._step_stride(dy),
                  dh_rec, dh, dgx, dgh)

    def _cell_forward(self, fused, cell, xw, hw, hs, t, prev, cur):
        act, bias = cell
        fused.gru_cell_forward(xw[t], hw, bias, hs[prev], act[t], hs[cur], lengths=self.lengths,
                               t=t)

    def _cell_backward(self, fused, cell, hs, dy, dh_rec, dh, dc, dgx, dgh, t, prev, cur):
        fused.gru_cell_backward(cell[0][t], hs[prev], dy, dh_rec, dh, dgx[t], dgh[t],
                                lengths=self.lengths, t=t)


# ---------------------------------------------------------------------------------------------
# functional entry points (validated); nn.RNN / LSTM / GRU and the cells call these


def lstm_layer(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, *, reverse=False, lengths=None):
    """One LSTM layer and direction over time-major ``x`` [T, B, I].

    ``h0``, ``c0``: [B, H] or None (zeros); ``w_ih`` [4H, I], ``w_hh`` [4H, H], biases [4H] or
    None, gate blocks i, f, g, o (PyTorch's layout). ``reverse`` runs from the last step to the
    first; ``lengths`` comes from :func:`sequence_lengths`. Returns ``(y [T, B, H], h_n, c_n)``.
    """
    _check_layer("lstm", x, (h0, c0), w_ih, w_hh, b_ih, b_hh, 4)
    return LSTMSequence(reverse, lengths).apply(x, h0, c0, w_ih, w_hh, b_ih, b_hh)


def gru_layer(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, *, reverse=False, lengths=None):
    """One GRU layer and direction over time-major ``x`` [T, B, I] (gate blocks r, z, n; see
    :func:`lstm_layer` for the arguments). Returns ``(y [T, B, H], h_n)``."""
    _check_layer("gru", x, (h0,), w_ih, w_hh, b_ih, b_hh, 3)
    return GRUSequence(reverse, lengths).apply(x, h0, None, w_ih, w_hh, b_ih, b_hh)


def rnn_layer(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, *, nonlinearity="tanh", reverse=False,
              lengths=None):
    """One Elman RNN layer and direction over time-major ``x`` [T, B, I] with ``nonlinearity``
    ``"tanh"`` or ``"relu"`` (see :func:`lstm_layer`). Returns ``(y [T, B, H], h_n)``."""
    check_nonlinearity(nonlinearity)
    _check_layer("rnn", x, (h0,), w_ih, w_hh, b_ih, b_hh, 1)
    return RNNSequence(reverse, lengths, nonlinearity == "relu").apply(x, h0, None, w_ih, w_hh,
                                                                       b_ih, b_hh)


def check_nonlinearity(nonlinearity):
    """Raise ValueError unless ``nonlinearity`` is ``"tanh"`` or ``"relu"``."""
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"RNN: unknown nonlinearity {nonlinearity!r}; use 'tanh' or 'relu'")


def _check_layer(op, x, states, w_ih, w_hh, b_ih, b_hh, gates):
    if not isinstance(x, Tensor) or x.ndim != 3:
        raise ValueError(f"{op}: x must be a time-major [T, B, I] tensor, got "
                         f"{getattr(x, 'shape', type(x).__name__)}")
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: expected a floating-point input, got dtype {x.dtype}")
    steps, batch, features = x.shape
    if steps == 0:
        raise ValueError(f"{op}: the sequence is empty (input shape {x.shape})")
    hidden = w_hh.shape[-1]
    if (w_ih.ndim != 2 or w_hh.ndim != 2 or w_hh.shape[0] != gates * hidden
            or w_ih.shape[0] != gates * hidden):
        raise ValueError(f"{op}: expected weight_ih [{gates}*H, I] and weight_hh [{gates}*H, H], "
                         f"got {w_ih.shape} and {w_hh.shape}")
    if features != w_ih.shape[1]:
        raise ValueError(f"{op}: input has {features} features (shape {x.shape}) but weight_ih "
                         f"expects input_size={w_ih.shape[1]}")
    for name, bias in (("bias_ih", b_ih), ("bias_hh", b_hh)):
        if bias is not None and bias.shape != (gates * hidden,):
            raise ValueError(f"{op}: {name} must have shape ({gates * hidden},), got {bias.shape}")
    for state in states:
        if state is not None and state.shape != (batch, hidden):
            raise ValueError(f"{op}: expected an initial state of shape {(batch, hidden)}, got "
                             f"{state.shape}")
    named = (("weight_ih", w_ih), ("weight_hh", w_hh), ("bias_ih", b_ih), ("bias_hh", b_hh))
    for name, t in named + tuple(("initial state", s) for s in states):
        if t is not None and t.dtype != x.dtype:
            raise TypeError(f"{op}: input has dtype {x.dtype} but {name} has dtype {t.dtype}; "
                            f"convert the input (e.g. x.astype({str(t.dtype)!r})) or the module "
                            f"(module.to({str(x.dtype)!r}))")


def sequence_lengths(lengths, steps, batch, device):
    """Check host ``lengths`` (ints in [1, steps], one per batch row, any order) and return them
    as an int64 array on ``device`` for the layer functions; None when absent or all full."""
    if lengths is None:
        return None
    host = lengths.numpy() if isinstance(lengths, Tensor) else _backend.host_array_from_data(lengths)
    if host.ndim != 1 or host.shape[0] != batch or (host.size and host.dtype.kind not in "iu"):
        raise ValueError(f"lengths must hold one integer per batch row ({batch}), got "
                         f"{host.dtype} array of shape {host.shape}")
    if host.min() < 1 or host.max() > steps:
        raise ValueError(f"lengths must lie in [1, {steps}] (the sequence length), got values from "
                         f"{host.min()} to {host.max()}")
    if (host == steps).all():
        return None
    return _backend.to_device(host.astype(_backend.int64), device)
