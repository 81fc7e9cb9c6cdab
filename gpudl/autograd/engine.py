"""Reverse-mode traversal of the graph: ``backward`` and ``grad``.

Nodes are visited in reverse topological order found by an iterative depth-first search,
so graphs of any depth (a 40,000-op chain) work without recursion.
"""
from .. import backend as _backend

Tensor = None  # set by gpudl.tensor once the Tensor class exists (it imports this module)

_FREED = ("Trying to backward through the graph a second time (or to use it after it was freed); "
          "pass retain_graph=True to the first backward() if you need to do this")


def _topological_order(roots):
    """Functions reachable from ``roots``, each listed after every function that consumes its outputs."""
    order = []
    visited = set()
    stack = [(fn, False) for fn in roots]
    while stack:
        fn, expanded = stack.pop()
        if expanded:
            order.append(fn)
            continue
        if fn in visited:
            continue
        visited.add(fn)
        if fn.inputs is None:
            raise RuntimeError(_FREED)
        stack.append((fn, True))
        for edge in fn.edges:
            if edge is not None and edge[0] is not None and edge[0] not in visited:
                stack.append((edge[0], False))
    order.reverse()
    return order


# Gradient-ready hooks (DistributedDataParallel's): id(leaf) -> (leaf, group). In a backward that reaches
# the leaf, ``group.ready(leaf)`` runs once the last gradient of that backward has been accumulated into
# ``leaf.grad`` (so its all-reduce can start while backward goes on), and ``group.done()`` after the backward.
_ready_hooks = {}


def register_grad_ready_hooks(group, leaves):
    """Call ``group.ready(leaf)`` when each leaf's gradient is complete, ``group.done()`` after backward."""
    for leaf in leaves:
        _ready_hooks[id(leaf)] = (leaf, group)


def remove_grad_ready_hooks(leaves):
    """Undo :func:`register_grad_ready_hooks` for ``leaves``."""
    for leaf in leaves:
        _ready_hooks.pop(id(leaf), None)


def _leaf_edge_counts(order):
    """For each hooked leaf, how many edges of the graph still bring it a gradient."""
    counts = {}
    for fn in order:
        for value, edge in zip(fn.inputs, fn.edges):
            if edge is not None and edge[0] is None and id(value) in _ready_hooks:
                counts[id(value)] = counts.get(id(value), 0) + 1
    return counts


def _visit_leaf_edges(fn, remaining):
    """Count down the hooked leaves ``fn`` feeds; a leaf whose count reaches 0 is ready."""
    for value, edge in zip(fn.inputs, fn.edges):
        if edge is not None and edge[0] is None and id(value) in remaining:
            remaining[id(value)] -= 1
            if remaining[id(value)] == 0:
                leaf, group = _ready_hooks[id(value)]
                group.ready(leaf)


def _sum_to_shape(grad, shape):
    """Sum ``grad`` over the axes along which an input of ``shape`` was broadcast."""
    if grad.shape == shape:
        return grad
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + k for k, n in enumerate(shape) if n == 1 and grad.shape[lead + k] != 1)
    grad = grad.sum(axis=axes, keepdims=True) if axes else grad
    return grad.reshape(shape)


def run_backward(outputs, grad_outputs, retain_graph=False, capture=None):
    """Propagate ``grad_outputs`` from ``outputs`` to every tensor that requires grad.

    Leaves accumulate into ``.grad``; with ``capture`` (a dict keyed by tensor id) the
    gradients of those tensors are collected there instead and no ``.grad`` is touched.
    """
    pending = {}
    roots = []
    for out, grad in zip(outputs, grad_outputs):
        if capture is not None and id(out) in capture:
            capture[id(out)] = grad if capture[id(out)] is None else capture[id(out)] + grad
        if out.grad_fn is None:
            if capture is None:
                _accumulate_leaf(out, grad)
            continue
        slots = pending.setdefault(out.grad_fn, [None] * out.grad_fn.n_outputs)
        k = out._output_index
        slots[k] = grad if slots[k] is None else slots[k] + grad
        roots.append(out.grad_fn)

    order = _topological_order(roots)
    remaining = _leaf_edge_counts(order) if _ready_hooks and capture is None else None
    for fn in order:
        grads = pending.pop(fn, None)
        if grads is None:
            if remaining:
                _visit_leaf_edges(fn, remaining)
            continue
        fn.check_saved_versions()
        if fn.backend.needs_device_context:
            with fn.backend.context(fn.input_device):
                input_grads = fn._backward(grads, fn.input_device)
        else:
            input_grads = fn._backward(grads, None)
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        for value, edge, grad in zip(fn.inputs, fn.edges, input_grads):
            if edge is None or grad is None:
                continue
            if grad.shape != value.data.shape:
                grad = _sum_to_shape(grad, value.data.shape)
            if grad.dtype != value.data.dtype:
                grad = grad.astype(value.data.dtype)
            if capture is not None and id(value) in capture:
                capture[id(value)] = grad if capture[id(value)] is None else capture[id(value)] + grad
            producer, k = edge
            if producer is None:
                if capture is None:
                    _accumulate_leaf(value, grad, private=fn.private_grads)
                continue
            if value._retains_grad and capture is None:
                _accumulate_leaf(value, grad)
            slots = pending.setdefault(producer, [None] * producer.n_outputs)
            slots[k] = grad if slots[k] is None else slots[k] + grad
        if remaining:
            _visit_leaf_edges(fn, remaining)
        if not retain_graph:
            fn.release()
    if remaining is not None:
        for group in {id(group): group for _, group in (_ready_hooks[i] for i in remaining)}.values():
            group.done()


def _accumulate_leaf(tensor, grad, private=False):
    if tensor.grad is None:
        # a private, writable array: unless the op vouches for it (``Function.private_grads``), grad may be a
        # read-only broadcast view, the very array another input or the caller holds (add's backward passes g
        # on unchanged), or a NumPy scalar (0-d results), so it is copied
        if private and _backend.is_array(grad):
            tensor.grad = Tensor._wrap(grad)
        else:
            tensor.grad = Tensor._wrap(tensor.backend.xp.array(grad, copy=True))
    else:
        tensor.grad.data += grad  # in place: the buffer is private (above), and a 0-d array stays an array


def backward(tensor, gradient=None, retain_graph=False, create_graph=False):
    """Accumulate d(tensor)/d(leaf) into ``leaf.grad`` for every leaf that requires grad."""
    if create_graph:
        raise NotImplementedError("backward(create_graph=True): higher-order gradients are not supported yet")
    if not tensor.requires_grad:
        raise RuntimeError("backward(): the tensor does not require grad and has no grad_fn "
                           "(did you compute it under no_grad(), or from tensors without requires_grad=True?)")
    if gradient is None:
        if tensor.data.size != 1:
            raise RuntimeError(f"backward(): gradient can be implicit only for a tensor with one element; "
                               f"this one has shape {tensor.shape}, so pass gradient= of that shape")
        grad = tensor.backend.xp.ones_like(tensor.data)
    else:
        grad = _as_gradient(gradient, tensor, "backward")
    run_backward([tensor], [grad], retain_graph=retain_graph)


def _as_gradient(gradient, tensor, where):
    data = gradient.data if isinstance(gradient, Tensor) else gradient
    if not _backend.is_array(data):
        data = _backend.to_device(_backend.host_array_from_data(data, tensor.dtype), tensor.device)
    if _backend.device_of(data) != tensor.device:
        raise RuntimeError(f"{where}: gradient is on {_backend.device_of(data)} but the tensor is on {tensor.device}")
    if data.shape != tensor.shape:
        raise RuntimeError(f"{where}: gradient has shape {tuple(data.shape)} but the tensor has shape {tensor.shape}")
    return data.astype(tensor.dtype, copy=False)


def grad(outputs, inputs, grad_outputs=None, retain_graph=False, create_graph=False, allow_unused=False):
    """Gradients of ``outputs`` with respect to ``inputs``, returned as a tuple; ``.grad`` is not touched."""
    if create_graph:
        raise NotImplementedError("grad(create_graph=True): higher-order gradients are not supported yet")
    single_output = isinstance(outputs, Tensor)
    outputs = [outputs] if single_output else list(outputs)
    single_input = isinstance(inputs, Tensor)
    inputs = [inputs] if single_input else list(inputs)
    if grad_outputs is None:
        grad_outputs = [None] * len(outputs)
    elif isinstance(grad_outputs, Tensor) or _backend.is_array(grad_outputs):
        grad_outputs = [grad_outputs]
    seeds = []
    for out, g in zip(outputs, grad_outputs):
        if not out.requires_grad:
            raise RuntimeError("grad(): an output does not require grad")
        if g is None:
            if out.data.size != 1:
                raise RuntimeError(f"grad(): grad_outputs must be given for the output of shape {out.shape}")
            seeds.append(out.backend.xp.ones_like(out.data))
        else:
            seeds.append(_as_gradient(g, out, "grad"))
    for t in inputs:
        if not t.requires_grad:
            raise RuntimeError(f"grad(): an input (shape {t.shape}) does not require grad")
    capture = {id(t): None for t in inputs}
    run_backward(outputs, seeds, retain_graph=retain_graph, capture=capture)
    results = []
    for k, t in enumerate(inputs):
        g = capture[id(t)]
        if g is None and not allow_unused:
            raise RuntimeError(f"grad(): input {k} (shape {t.shape}) was not used to compute the outputs; "
                               "pass allow_unused=True to get None for it")
        results.append(None if g is None else Tensor._wrap(g))
    return tuple(results)
