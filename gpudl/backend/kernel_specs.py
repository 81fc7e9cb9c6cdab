"""The fused kernels as plain data, shared by the CuPy backend and the host checks.

Each spec is a dict of the keyword arguments of ``cupy.ElementwiseKernel`` (``in_params``,
``out_params``, ``operation``, ``name``, ``preamble``) or, with ``"kind": "reduction"``, of
``cupy.ReductionKernel`` (``map_expr``, ``reduce_expr``, ``post_map_expr``, ``identity``,
``reduce_type``). The preamble is the header text from ``kernels/`` (``common.cuh`` first), so
the same device functions compile with NVRTC (``fused_cupy``) and with the host C++ compiler
(``tests/kernels``).

``SIGNATURES`` lists, per kernel, every argument signature the CuPy backend launches: dtypes of
all in and out params (``("scalar", dtype)`` for a Python scalar), the ndim after CuPy's
dimension merging, per-argument contiguity, 32/64-bit indexing and the ndim of ``raw`` params.
The NVRTC check compiles exactly these, so a launch not listed here is a launch not checked;
``tests/test_launches.py`` trains the models through the CuPy test double, which records every
launch as this configuration, and fails naming any launch not listed here.
"""
import math
from typing import NamedTuple

from gpudl.backend.kernel_source import read_kernel

FLOAT_DTYPES = ("float16", "float32", "float64")

# float16 math (and the log-sum-exp of float16 logits) runs in float32.
ACC_DTYPE = {"float16": "float32", "float32": "float32", "float64": "float64"}

ACTIVATIONS = ("relu", "leaky_relu", "elu", "sigmoid", "tanh", "softplus", "gelu", "gelu_tanh",
               "silu")

# Keyword parameters of each activation with PyTorch's defaults.
ACTIVATION_PARAMS = {
    "relu": {}, "sigmoid": {}, "tanh": {}, "gelu": {}, "gelu_tanh": {}, "silu": {},
    "leaky_relu": {"negative_slope": 0.01},
    "elu": {"alpha": 1.0},
    "softplus": {"beta": 1.0, "threshold": 20.0},
}

# What each backward needs besides gy: the input x or the output y.
ACTIVATION_BACKWARD_USES = {
    "relu": "y", "sigmoid": "y", "tanh": "y",
    "leaky_relu": "x", "elu": "x", "softplus": "x", "gelu": "x", "gelu_tanh": "x", "silu": "x",
}

_DEVICE_FUNCTION = {"tanh": "tanh_forward"}  # avoid shadowing ::tanh inside namespace gpudl


def preamble(*headers):
    """Return the preamble for headers: ``common.cuh`` followed by ``headers`` in order."""
    return "\n".join(read_kernel(h) for h in ("common.cuh",) + headers)


def _elementwise(name, in_params, out_params, operation, *headers):
    return {"kind": "elementwise", "name": name, "in_params": in_params,
            "out_params": out_params, "operation": operation, "preamble": preamble(*headers)}


def _activation_specs():
    specs = {}
    for act in ACTIVATIONS:
        params = list(ACTIVATION_PARAMS[act])
        extra_params = "".join(f", float64 {p}" for p in params)
        extra_args = "".join(f", {p}" for p in params)
        fn = _DEVICE_FUNCTION.get(act, act)
        specs[f"{act}_forward"] = _elementwise(
            f"gpudl_{act}_forward", "T x" + extra_params, "T y",
            f"y = gpudl::{fn}(x{extra_args})", "activations.cuh")
        uses = ACTIVATION_BACKWARD_USES[act]
        specs[f"{act}_backward"] = _elementwise(
            f"gpudl_{act}_backward", f"T {uses}, T gy" + extra_params, "T gx",
            f"gx = gpudl::{act}_backward({uses}, gy{extra_args})", "activations.cuh")
    return specs


def _softmax_cross_entropy_specs():
    header = "softmax_cross_entropy.cuh"
    return {
        # s[r] = sum_c exp(x[r, c] - shift(m[r])); m is the row max as an [N, 1] view.
        "softmax_cross_entropy_sum_exp": {
            "kind": "reduction", "name": "gpudl_softmax_cross_entropy_sum_exp",
            "in_params": "T x, T m", "out_params": "A s",
            "map_expr": "exp(A(x) - gpudl::lse_shift(A(m)))", "reduce_expr": "a + b",
            "post_map_expr": "s = a", "identity": "0", "reduce_type": "A",
            "preamble": preamble(header)},
        "softmax_cross_entropy_loss": _elementwise(
            "gpudl_softmax_cross_entropy_loss",
            "raw T logits, S t, T m, A sum_exp, int64 n_class, int64 ignore_index, "
            "float64 label_smoothing",
            "T loss, A lse",
            "lse = gpudl::log_sum_exp(A(m), sum_exp); "
            "loss = T(gpudl::softmax_cross_entropy_loss(logits, (long long)i * n_class, n_class, "
            "(long long)t, A(lse), ignore_index, label_smoothing))",
            header),
        # Launched over the [N, C] gradient with t, lse and gloss as [N, 1] views.
        "softmax_cross_entropy_backward": _elementwise(
            "gpudl_softmax_cross_entropy_backward",
            "T x, S t, A lse, T gloss, int64 n_class, int64 ignore_index, "
            "float64 label_smoothing",
            "T gx",
            "gx = gpudl::softmax_cross_entropy_backward(x, (long long)(i % n_class), "
            "(long long)t, lse, gloss, n_class, ignore_index, label_smoothing)",
            header),
        # error = [flag, offending value]; written only where a target is invalid.
        "check_class_indices": _elementwise(
            "gpudl_check_class_indices",
            "S t, int64 n_class, int64 ignore_index", "raw int64 error",
            "if (gpudl::class_index_invalid(t, n_class, ignore_index)) "
            "{ error[0] = 1; error[1] = (long long)t; }",
            header),
    }


def _dropout_specs():
    return {"dropout": _elementwise(
        "gpudl_dropout", "T x, uint64 seed, uint64 step, float64 p", "T y",
        "y = gpudl::dropout(x, seed, step, (unsigned long long)i, p)", "dropout.cuh")}


def _optimizer_specs():
    header = "optimizers.cuh"
    adam_in = ("T grad, float64 lr, float64 beta1, float64 beta2, float64 eps, "
               "float64 weight_decay, bool decoupled, float64 step_size, "
               "float64 bias_correction2_sqrt")
    adam_args = ("lr, beta1, beta2, eps, weight_decay, decoupled, step_size, "
                 "bias_correction2_sqrt")
    return {
        "sgd": _elementwise("gpudl_sgd", "T grad, float64 lr, float64 weight_decay", "T param",
                            "gpudl::sgd_step(param, grad, lr, weight_decay)", header),
        "sgd_momentum": _elementwise(
            "gpudl_sgd_momentum",
            "T grad, float64 lr, float64 momentum, float64 dampening, float64 weight_decay, "
            "bool nesterov, bool first_step",
            "T param, T momentum_buffer",
            "gpudl::sgd_momentum_step(param, momentum_buffer, grad, lr, momentum, dampening, "
            "weight_decay, nesterov, first_step)", header),
        "adam": _elementwise(
            "gpudl_adam", adam_in, "T param, T exp_avg, T exp_avg_sq",
            f"gpudl::adam_step(param, grad, exp_avg, exp_avg_sq, {adam_args})", header),
        "adam_amsgrad": _elementwise(
            "gpudl_adam_amsgrad", adam_in, "T param, T exp_avg, T exp_avg_sq, T max_exp_avg_sq",
            f"gpudl::adam_amsgrad_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, "
            f"{adam_args})", header),
    }


# Kernels over a [rows, hidden] array whose operation starts with ROW_INDEX: on the device each
# thread derives its row and unit from i; the host loop (native_kernels) drops this line and runs
# rows x units with ``row`` and ``unit`` as its counters, unit innermost, so that it vectorises.
ROW_INDEX = "const long long row = i / hidden, unit = i % hidden;"


def _rnn_specs():
    # One launch per time step over the [B, H] state (kernels/rnn.cuh); gate arrays are raw
    # [B, G*H] rows, lengths a raw int64 [B] (row b is valid at step t when t < lengths[b]).
    headers = ("activations.cuh", "rnn.cuh")
    step = "raw int64 lengths, int64 hidden, int64 t"
    where = "lengths, t, row, unit, hidden"

    def cell(name, in_params, out_params, call):
        return _elementwise(f"gpudl_{name}", in_params, out_params,
                            f"{ROW_INDEX} gpudl::{name}({call});", *headers)

    return {
        "rnn_cell_forward": cell(
            "rnn_cell_forward", f"T xw, T hw, T h_prev, {step}, bool use_relu", "T h",
            "xw, hw, h_prev, lengths, t, row, use_relu, h"),
        "rnn_cell_backward": cell(
            "rnn_cell_backward", f"T h, T dy, T dh_rec, {step}, bool use_relu", "T dh, T dpre",
            "h, dy, dh_rec, lengths, t, row, use_relu, dh, dpre"),
        # gates holds W_ih x + b on entry and the activations i, f, g, o on exit.
        "lstm_cell_forward": cell(
            "lstm_cell_forward", f"raw T hw, T c_prev, T h_prev, {step}",
            "raw T gates, T c, T h, T tanh_c",
            f"gates, hw, c_prev, h_prev, {where}, c, h, tanh_c"),
        "lstm_cell_backward": cell(
            "lstm_cell_backward", f"raw T act, T c_prev, T tanh_c, T dy, T dh_rec, {step}",
            "T dh, T dc, raw T dgates",
            f"act, c_prev, tanh_c, dy, dh_rec, {where}, dh, dc, dgates"),
        "gru_cell_forward": cell(
            "gru_cell_forward", f"raw T xw, raw T hw, raw T bias_hh, T h_prev, {step}",
            "raw T act, T h", f"xw, hw, bias_hh, h_prev, {where}, act, h"),
        "gru_cell_backward": cell(
            "gru_cell_backward", f"raw T act, T h_prev, T dy, T dh_rec, {step}",
            "T dh, raw T dgx, raw T dgh", f"act, h_prev, dy, dh_rec, {where}, dh, dgx, dgh"),
    }


def _attention_specs():
    # One thread per row of the [.., L, S] scores, all params raw, launched with size=rows
    # (kernels/attention.cuh); the scores/grad rows are overwritten in place.
    header = "attention.cuh"
    shape = "int64 n_queries, int64 n_keys"
    return {
        "masked_softmax_forward": _elementwise(
            "gpudl_masked_softmax_forward",
            f"raw M mask, {shape}, bool has_mask, int64 mask_div, int64 mask_mod, "
            "int64 mask_rows, bool causal, float64 scale",
            "raw T scores",
            "gpudl::masked_softmax_forward<T>(scores, mask, i, n_queries, n_keys, has_mask, "
            "mask_div, mask_mod, mask_rows, causal, scale)", header),
        "masked_softmax_backward": _elementwise(
            "gpudl_masked_softmax_backward", f"raw T probs, {shape}, bool causal, float64 scale",
            "raw T grad",
            "gpudl::masked_softmax_backward<T>(probs, grad, i, n_queries, n_keys, causal, scale)",
            header),
    }


def _layer_norm_specs():
    # Rows of a C-contiguous [R, D] array, all arrays raw and flat (kernels/layer_norm.cuh): the
    # forward launched with size=R; mean and rstd are A (float32 for float16) per row.
    header = "layer_norm.cuh"
    return {
        "layer_norm_forward": _elementwise(
            "gpudl_layer_norm_forward",
            "raw T x, raw T weight, raw T bias, bool has_weight, bool has_bias, int64 n_cols, "
            "float64 eps",
            "raw T y, raw A mean, raw A rstd",
            "gpudl::layer_norm_forward<T>(x, weight, bias, has_weight, has_bias, i, n_cols, eps, "
            "y, mean, rstd)", header),
        # launched with size=blocks of rows_per_block rows; gweight_part, gbias_part: [blocks, D]
        "layer_norm_backward": _elementwise(
            "gpudl_layer_norm_backward",
            "raw T x, raw T gy, raw T weight, raw A mean, raw A rstd, bool has_weight, "
            "bool param_grads, int64 n_rows, int64 n_cols, int64 rows_per_block",
            "raw T gx, raw A gweight_part, raw A gbias_part",
            "gpudl::layer_norm_backward<T>(x, gy, weight, mean, rstd, has_weight, param_grads, i, "
            "n_rows, n_cols, rows_per_block, gx, gweight_part, gbias_part)", header),
    }


# The winning tap of a max-pool window: int8 below 128 taps, else int32.
POOL_INDEX_DTYPES = ("int8", "int32")

# The scalar geometry both conv kernels take, in order (kernels/conv.cuh).
CONV_GEOMETRY = ("run_length", "batch", "height", "width", "kernel_h", "kernel_w", "out_h", "out_w",
                 "stride_h", "stride_w", "pad_top", "pad_left", "dilation_h", "dilation_w")


def _conv_specs():
    # All arrays raw and flat, launched with size = elements / run (kernels/conv.cuh): im2col
    # reads x [C, H, W, N] and writes the columns [C, KH, KW, OH, OW, N], col2im writes the input
    # gradient [C, H, W, N].
    header = "conv.cuh"
    geometry = ", ".join(f"int64 {p}" for p in CONV_GEOMETRY)
    return {
        "im2col": _elementwise(
            "gpudl_im2col", f"raw T x, {geometry}", "raw T cols",
            f"gpudl::im2col<T>(x, i, {', '.join(CONV_GEOMETRY)}, cols)", header),
        "col2im": _elementwise(
            "gpudl_col2im", f"raw T gcols, {geometry}", "raw T gx",
            f"gpudl::col2im<T>(gcols, i, {', '.join(CONV_GEOMETRY)}, gx)", header),
    }


def _pooling_specs():
    # Max pooling (kernels/pooling.cuh), all arrays raw, flat and batch-last, the geometry of
    # conv.cuh, launched with size = elements / run: forward over y and index [C, OH, OW, N] (I: int8
    # or int32, a 1-element dummy without keep_index), backward over gx [C, H, W, N].
    headers = ("conv.cuh", "pooling.cuh")
    geometry = ", ".join(f"int64 {p}" for p in CONV_GEOMETRY)
    return {
        "max_pool2d_forward": _elementwise(
            "gpudl_max_pool2d_forward",
            f"raw T x, {geometry}, bool keep_index", "raw T y, raw I index",
            f"gpudl::max_pool2d_forward<T, I>(x, i, {', '.join(CONV_GEOMETRY)}, keep_index, y, index)",
            *headers),
        "max_pool2d_backward": _elementwise(
            "gpudl_max_pool2d_backward", f"raw T gy, raw I index, {geometry}", "raw T gx",
            f"gpudl::max_pool2d_backward<T>(gy, index, i, {', '.join(CONV_GEOMETRY)}, gx)", *headers),
    }


KERNELS = {**_activation_specs(), **_softmax_cross_entropy_specs(), **_dropout_specs(),
           **_optimizer_specs(), **_rnn_specs(), **_attention_specs(), **_layer_norm_specs(),
           **_conv_specs(), **_pooling_specs()}

# Raw params of the recurrent kernels and their ndim: gate rows [B, G*H], bias [3H], lengths [B].
RNN_RAW_NDIM = {"gates": 2, "hw": 2, "xw": 2, "act": 2, "dgates": 2, "dgx": 2, "dgh": 2,
                "bias_hh": 1, "lengths": 1}


class Signature(NamedTuple):
    """One launch configuration of a kernel (see the module docstring)."""
    dtypes: tuple            # per in+out param: "float32" (array) or ("scalar", "float64")
    ndim: int = 1            # ndim of the non-raw arrays after CuPy merges dimensions
    contiguous: tuple = ()   # per in+out param; empty means all contiguous
    idx32: bool = True       # False: more than 2**31 elements (64-bit indexing)
    raw_ndim: tuple = ()     # (param name, ndim) pairs for raw params
    reduce_out_ndim: int = 0  # reductions: ndim of the output


def _scalar(dtype):
    return ("scalar", dtype)


def _activation_signatures(act, backward):
    n_arrays = 2 if backward else 1
    scalars = tuple(_scalar("float64") for _ in ACTIVATION_PARAMS[act])
    sigs = []
    for dt in FLOAT_DTYPES:
        dtypes = (dt,) * n_arrays + scalars + (dt,)
        n = len(dtypes)
        sigs += [
            Signature(dtypes),                                   # any C-contiguous array
            Signature(dtypes, idx32=False),                      # >= 2**31 elements
            # a strided view (the output CuPy allocates is contiguous)
            Signature(dtypes, ndim=2, contiguous=(False,) * n_arrays + (True,) * (n - n_arrays)),
        ]
        if backward:  # gy a strided view, x or y contiguous: the strided interior of a padded
            # input ([C, H, W] at batch 1 and [N, C, H, W] after merging), or conv's batch-last
            # input gradient against an NCHW-ordered y (2-D after merging)
            sigs += [Signature(dtypes, ndim=ndim, contiguous=(True, False) + (True,) * (n - 2))
                     for ndim in (2, 3, 4)]
    return sigs


def _signatures():
    sigs = {}
    for act in ACTIVATIONS:
        sigs[f"{act}_forward"] = _activation_signatures(act, False)
        sigs[f"{act}_backward"] = _activation_signatures(act, True)
    target_dtypes = ("int32", "int64", "uint8", "int16")  # uint8/int16: targets stored compactly
    i64 = _scalar("int64")
    f64 = _scalar("float64")
    sum_exp, loss, backward, check = [], [], [], []
    for dt in FLOAT_DTYPES:
        acc = ACC_DTYPE[dt]
        # CuPy reduces over a transposed [C, N] view of the logits: contiguous only when N == 1
        sum_exp += [Signature((dt, dt, acc), ndim=2, contiguous=(contiguous, False, True),
                              reduce_out_ndim=1) for contiguous in (False, True)]
        for tdt in target_dtypes:
            loss.append(Signature((dt, tdt, dt, acc, i64, i64, f64, dt, acc),
                                  raw_ndim=(("logits", 2),)))
            backward.append(Signature((dt, tdt, acc, dt, i64, i64, f64, dt), ndim=2,
                                      contiguous=(True, False, False, False, True, True, True,
                                                  True)))
    for tdt in target_dtypes:
        check.append(Signature((tdt, i64, i64, "int64"), raw_ndim=(("error", 1),)))
    sigs["softmax_cross_entropy_sum_exp"] = sum_exp
    sigs["softmax_cross_entropy_loss"] = loss
    sigs["softmax_cross_entropy_backward"] = backward
    sigs["check_class_indices"] = check
    u64 = _scalar("uint64")
    sigs["dropout"] = [s for dt in FLOAT_DTYPES for s in (
        Signature((dt, u64, u64, f64, dt)),
        Signature((dt, u64, u64, f64, dt), ndim=2, contiguous=(False, True, True, True, True)))]
    b = _scalar("bool")
    sigs["sgd"] = [Signature((dt, f64, f64, dt)) for dt in FLOAT_DTYPES]
    sigs["sgd_momentum"] = [Signature((dt, f64, f64, f64, f64, b, b, dt, dt))
                            for dt in FLOAT_DTYPES]
    adam_scalars = (f64, f64, f64, f64, f64, b, f64, f64)
    sigs["adam"] = [Signature((dt,) + adam_scalars + (dt,) * 3) for dt in FLOAT_DTYPES]
    sigs["adam_amsgrad"] = [Signature((dt,) + adam_scalars + (dt,) * 4) for dt in FLOAT_DTYPES]
    sigs.update(_rnn_signatures())
    sigs.update(_attention_signatures())
    sigs.update(_layer_norm_signatures())
    sigs.update(_conv_signatures())
    sigs.update(_pooling_signatures())
    return sigs


def _rnn_param_dtype(param, dt):
    """Signature entry of one recurrent-kernel param: ``T`` arrays take ``dt``, other raw
    arrays their own type (int64 lengths), typed non-raw params are Python scalars."""
    words = param.split()
    if words[-2] == "T":
        return dt
    return words[-2] if words[0] == "raw" else _scalar(words[-2])


def _rnn_signatures():
    """One signature per dtype: the [B, H] state arrays are passed flattened (1-D, contiguous),
    gate arrays raw and C-contiguous with the ndim in ``RNN_RAW_NDIM``."""
    sigs = {}
    for name, spec in _rnn_specs().items():
        params = (spec["in_params"] + ", " + spec["out_params"]).split(", ")
        raw_ndim = tuple((p.split()[-1], RNN_RAW_NDIM[p.split()[-1]]) for p in params
                         if p.startswith("raw "))
        sigs[name] = [Signature(tuple(_rnn_param_dtype(p, dt) for p in params), raw_ndim=raw_ndim)
                      for dt in FLOAT_DTYPES]
    return sigs


def _attention_signatures():
    """Per dtype T: a boolean or a T mask (no mask launches with a 1-element boolean dummy),
    flat raw arrays, 32- and 64-bit indexing (a [B, H, L, S] tensor of 2**31 elements or more)."""
    i64, b, f64 = _scalar("int64"), _scalar("bool"), _scalar("float64")
    forward, backward = [], []
    for dt in FLOAT_DTYPES:
        for idx32 in (True, False):
            for mask_dt in ("bool", dt):
                forward.append(Signature((mask_dt, i64, i64, b, i64, i64, i64, b, f64, dt),
                                         idx32=idx32, raw_ndim=(("mask", 1), ("scores", 1))))
            backward.append(Signature((dt, i64, i64, b, f64, dt), idx32=idx32,
                                      raw_ndim=(("probs", 1), ("grad", 1))))
    return {"masked_softmax_forward": forward, "masked_softmax_backward": backward}


def _layer_norm_signatures():
    """Per dtype T (statistics in ACC_DTYPE[T]): flat raw arrays, 32- and 64-bit indexing (an
    [R, D] array of 2**31 elements or more)."""
    i64, b, f64 = _scalar("int64"), _scalar("bool"), _scalar("float64")
    forward, backward = [], []
    for dt in FLOAT_DTYPES:
        acc = ACC_DTYPE[dt]
        for idx32 in (True, False):
            forward.append(Signature((dt, dt, dt, b, b, i64, f64, dt, acc, acc), idx32=idx32,
                                     raw_ndim=tuple((p, 1) for p in ("x", "weight", "bias", "y",
                                                                     "mean", "rstd"))))
            backward.append(Signature((dt, dt, dt, acc, acc, b, b, i64, i64, i64, dt, acc, acc),
                                      idx32=idx32,
                                      raw_ndim=tuple((p, 1) for p in (
                                          "x", "gy", "weight", "mean", "rstd", "gx", "gweight_part",
                                          "gbias_part"))))
    return {"layer_norm_forward": forward, "layer_norm_backward": backward}


def _conv_signatures():
    """Per dtype T: flat raw arrays, 32- and 64-bit indexing (columns of 2**31 elements or more)."""
    geometry = (_scalar("int64"),) * len(CONV_GEOMETRY)
    im2col, col2im = [], []
    for dt in FLOAT_DTYPES:
        for idx32 in (True, False):
            im2col.append(Signature((dt,) + geometry + (dt,), idx32=idx32, raw_ndim=(("x", 1), ("cols", 1))))
            col2im.append(Signature((dt,) + geometry + (dt,), idx32=idx32,
                                    raw_ndim=(("gcols", 1), ("gx", 1))))
    return {"im2col": im2col, "col2im": col2im}


def _pooling_signatures():
    """Per dtype T and index dtype (int8, int32): flat raw arrays, 32- and 64-bit indexing."""
    geometry = (_scalar("int64"),) * len(CONV_GEOMETRY)
    forward, backward = [], []
    for dt in FLOAT_DTYPES:
        for index_dt in POOL_INDEX_DTYPES:
            for idx32 in (True, False):
                forward.append(Signature((dt,) + geometry + (_scalar("bool"), dt, index_dt),
                                         idx32=idx32, raw_ndim=(("x", 1), ("y", 1), ("index", 1))))
                backward.append(Signature((dt, index_dt) + geometry + (dt,), idx32=idx32,
                                          raw_ndim=(("gy", 1), ("index", 1), ("gx", 1))))
    return {"max_pool2d_forward": forward, "max_pool2d_backward": backward}


SIGNATURES = _signatures()


def adam_bias_corrections(step, lr, beta1, beta2):
    """Return ``(step_size, bias_correction2_sqrt)`` for Adam step ``step`` (1-based), on the host."""
    bias_correction1 = 1.0 - beta1 ** step
    bias_correction2 = 1.0 - beta2 ** step
    return lr / bias_correction1, math.sqrt(bias_correction2)
