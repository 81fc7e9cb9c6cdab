"""Fine-tuning: start a model from saved weights and freeze some of its parameters.

``load_weights(model, "runs/cnn/1/checkpoint.npz")`` copies a saved model's parameters and buffers
into ``model`` when every name and shape matches (else one ValueError lists every mismatch), and
``freeze(model, ["0", "3"])`` stops training the parameters under those name prefixes; build the
optimizer from ``trainable_parameters(model)`` afterwards.
"""
from .serialization import load


def model_weights(state):
    """The model's weights in a loaded checkpoint: ``state["model"]`` for a training checkpoint
    (``gpudl train``, ``fit(checkpoint=...)``), else ``state`` itself (``gpudl.save(model.state_dict())``)."""
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        return state["model"]
    if not isinstance(state, dict):
        raise ValueError(f"expected a checkpoint holding a state dict, got {type(state).__name__}")
    return state


def weight_mismatches(model, weights) -> str:
    """'' when ``weights`` has exactly ``model``'s state-dict names and shapes, else one line listing the
    names missing from ``weights``, the names ``model`` lacks and the names whose shapes differ."""
    own = model.state_dict()
    missing = [name for name in own if name not in weights]
    unexpected = [name for name in weights if name not in own]
    saved_shapes = {name: tuple(getattr(weights[name], "shape", ())) for name in own if name in weights}
    reshaped = [f"{name} {shape} in the checkpoint, {own[name].shape} in the model"
                for name, shape in saved_shapes.items() if shape != own[name].shape]
    parts = [f"{label}: {', '.join(names)}" for label, names in (("missing from the checkpoint", missing),
                                                                  ("not in the model", unexpected),
                                                                  ("different shapes", reshaped)) if names]
    return "; ".join(parts)


def load_weights(model, source):
    """Copy the weights of ``source`` (a checkpoint path or a loaded checkpoint/state dict) into ``model``.

    Every parameter and persistent buffer name of ``model`` must be in the checkpoint with the same
    shape, and the checkpoint must hold nothing else; otherwise a ValueError lists all mismatches and
    ``model`` is left unchanged. Returns ``model``.
    """
    state = load(source) if not isinstance(source, dict) else source
    weights = model_weights(state)
    problems = weight_mismatches(model, weights)
    if problems:
        where = f"checkpoint {str(source)!r}" if not isinstance(source, dict) else "state dict"
        raise ValueError(f"the {where} does not fit {type(model).__name__}: {problems}")
    model.load_state_dict(weights)
    return model


def _under(name, prefix):
    return name == prefix or name.startswith(prefix + ".")


def freeze(model, prefixes):
    """Stop training every parameter of ``model`` whose dotted name is a prefix of ``prefixes`` or lies
    under one (``"0"`` freezes ``0.weight`` and ``0.bias``, not ``10.weight``): ``requires_grad_(False)``.

    A prefix that matches no parameter is a ValueError listing the parameter names. Returns the
    frozen names in the model's order.
    """
    prefixes = [prefix.rstrip(".") for prefix in prefixes]
    names = [name for name, _ in model.named_parameters()]
    unmatched = [prefix for prefix in prefixes if not any(_under(name, prefix) for name in names)]
    if unmatched:
        raise ValueError(f"no parameter of {type(model).__name__} is named {', '.join(map(repr, unmatched))} or "
                         f"lies under it; its parameters are {', '.join(names)}")
    frozen = []
    for name, parameter in model.named_parameters():
        if any(_under(name, prefix) for prefix in prefixes):
            parameter.requires_grad_(False)
            frozen.append(name)
    return frozen


def trainable_parameters(model):
    """The parameters of ``model`` that still require grad: what an optimizer should update."""
    return [parameter for parameter in model.parameters() if parameter.requires_grad]
