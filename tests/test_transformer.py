"""nn.TransformerEncoderLayer, nn.TransformerEncoder and the Vision Transformer model: structure,
gradient checks, dropout, and side by side with PyTorch through state_dict (skipped where PyTorch is
not installed: run with .venv-torch)."""
import numpy as np
import pytest

import gpudl as gd
from gpudl import models, nn, optim
from gpudl.autograd import gradcheck
from tests.test_attention import close

TORCH_NAMES = ["self_attn.in_proj_weight", "self_attn.in_proj_bias", "self_attn.out_proj.weight",
               "self_attn.out_proj.bias", "linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias",
               "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias"]


def test_encoder_layer_structure():
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16)
    assert list(layer.state_dict()) == TORCH_NAMES
    assert layer.self_attn.dropout == 0.1 and layer.dropout.p == layer.dropout1.p == layer.dropout2.p == 0.1
    assert layer.linear1.weight.shape == (16, 8) and layer.norm1.eps == 1e-5 and not layer.norm_first
    assert nn.TransformerEncoderLayer(8, 2, bias=False).norm1.bias is None
    encoder = nn.TransformerEncoder(layer, 3, norm=nn.LayerNorm(8))
    assert len(encoder.layers) == 3 and encoder.num_layers == 3
    assert list(encoder.state_dict())[:2] == ["layers.0." + n for n in TORCH_NAMES[:2]]
    assert list(encoder.state_dict())[-2:] == ["norm.weight", "norm.bias"]
    encoder.layers[0].linear1.weight.data[...] = 0  # the layers are copies, each with its own parameters
    assert (encoder.layers[1].linear1.weight.numpy() != 0).any() and (layer.linear1.weight.numpy() != 0).any()


@pytest.mark.parametrize("activation,error", [("tanh", ValueError), (3, ValueError)])
def test_encoder_layer_bad_activation(activation, error):
    with pytest.raises(error, match="activation should be 'relu', 'gelu' or a callable"):
        nn.TransformerEncoderLayer(8, 2, activation=activation)


def test_encoder_layer_is_causal_needs_a_mask():
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16)
    with pytest.raises(RuntimeError, match="Need attn_mask if specifying the is_causal hint"):
        layer(gd.randn(5, 3, 8), is_causal=True)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_layer_gradcheck(norm_first, activation):
    gd.manual_seed(1)
    layer = nn.TransformerEncoderLayer(4, 2, dim_feedforward=6, dropout=0.0, activation=activation,
                                       norm_first=norm_first).double()
    x = gd.randn(3, 2, 4, dtype="float64", requires_grad=True)
    mask = gd.tensor(np.triu(np.ones((3, 3), bool), k=1))
    padding = gd.tensor(np.array([[False, False, True], [False, False, False]]))
    assert gradcheck(lambda x, w, b: layer(x, src_mask=mask, src_key_padding_mask=padding), x,
                     layer.self_attn.in_proj_weight, layer.linear1.bias)


def test_dropout_in_training_only():
    gd.manual_seed(2)
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.5)
    x = gd.randn(5, 3, 8)
    assert not np.allclose(layer(x).numpy(), layer(x).numpy())
    layer.eval()
    np.testing.assert_array_equal(layer(x).numpy(), layer(x).numpy())


def test_callable_activation_and_unbatched_input():
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, activation=nn.GELU(), batch_first=True)
    assert isinstance(layer.activation, nn.GELU)
    x = gd.randn(5, 8)
    assert layer(x).shape == (5, 8) and layer(x.unsqueeze(0)).shape == (1, 5, 8)


# --- the Vision Transformer model ---------------------------------------------------------------

@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_vision_transformer_shapes_and_training(pool):
    gd.manual_seed(3)
    model = models.build("transformer", pool=pool, depth=1, embed_dim=16, mlp_dim=32)
    x = gd.randn(6, 1, 28, 28)
    assert model(x).shape == (6, 10)
    np.testing.assert_allclose(model(x.reshape(6, 28, 28)).numpy(), model(x).numpy())
    assert model.pos_embed.shape == (1, 16 + (pool == "cls"), 16)
    t = gd.tensor(np.arange(6) % 10)
    opt = optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = nn.functional.softmax_cross_entropy(model(x), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_vision_transformer_width_and_errors():
    assert models.build("transformer", width=32).patch_embed.out_features == 32
    assert models.build("transformer", width=32).encoder.layers[0].linear1.out_features == 64
    with pytest.raises(ValueError, match="patch_size 5 does not divide image_size 28"):
        models.build("transformer", patch_size=5)
    with pytest.raises(ValueError, match="pool must be 'mean' or 'cls'"):
        models.build("transformer", pool="max")


def test_gpudl_train_transformer(tmp_path):
    """``gpudl train transformer`` learns the easy stand-in data set and ends on the accuracy line."""
    from cli_helpers import last_line_accuracy, run_cli, write_fake_fashion
    (tmp_path / "data").mkdir()
    data = write_fake_fashion(tmp_path / "data")
    result = run_cli("train", "transformer", "--epochs", 2, "--lr", 3e-3, "--data", data, "--out",
                     tmp_path / "run", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert last_line_accuracy(result) > 60


# --- side by side with PyTorch (float64, through state_dict, dropout 0) -----------------------

def _compare(torch, device, model, reference, x, **masks):
    """Outputs and every gradient (input and parameters) of gpudl's ``model`` and PyTorch's ``reference``."""
    assert list(model.state_dict()) == list(reference.state_dict())
    model.load_state_dict({k: v.numpy() for k, v in reference.state_dict().items()})
    model.to(device)
    mine = gd.tensor(x, device=device, requires_grad=True)
    theirs = torch.tensor(x, requires_grad=True)
    out = model(mine, **{k: gd.tensor(v, device=device) if isinstance(v, np.ndarray) else v
                         for k, v in masks.items()})
    ref = reference(theirs, **{k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in masks.items()})
    close(out.numpy(), ref.detach().numpy(), "output")
    direction = np.random.default_rng(1).standard_normal(out.shape)
    (out * gd.tensor(direction, device=device)).sum().backward()
    (ref * torch.tensor(direction)).sum().backward()
    close(mine.grad.numpy(), theirs.grad.numpy(), "grad input")
    grads = dict(model.named_parameters())
    for name, p in reference.named_parameters():
        close(grads[name].grad.numpy(), p.grad.numpy(), f"grad {name}")


CAUSAL = np.triu(np.ones((5, 5), bool), k=1)
PADDING = np.array([[False] * 3 + [True] * 2, [False] * 5, [False] * 4 + [True]])
LAYER_MASKS = {
    "no mask": {},
    "causal src_mask": dict(src_mask=CAUSAL),
    "float causal src_mask with is_causal": dict(src_mask=np.where(CAUSAL, -np.inf, 0.0), is_causal=True),
    "src_key_padding_mask": dict(src_key_padding_mask=PADDING),
    "both masks": dict(src_mask=CAUSAL, src_key_padding_mask=PADDING),
}


@pytest.mark.parametrize("masks", list(LAYER_MASKS))
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_matches_pytorch(torch, device, norm_first, activation, masks):
    options = dict(LAYER_MASKS[masks])
    is_causal = options.pop("is_causal", False)
    torch.manual_seed(0)
    make = dict(dim_feedforward=12, dropout=0.0, activation=activation, norm_first=norm_first)
    reference = torch.nn.TransformerEncoderLayer(8, 2, **make).double()
    model = nn.TransformerEncoderLayer(8, 2, **make).double()
    x = np.random.default_rng(0).standard_normal((5, 3, 8))
    options.setdefault("src_mask", None)
    _compare(torch, device, model, reference, x, **options, **({"is_causal": True} if is_causal else {}))


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_matches_pytorch(torch, device, norm_first):
    torch.manual_seed(0)
    make = dict(dim_feedforward=12, dropout=0.0, activation="gelu", norm_first=norm_first, batch_first=True)
    reference = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(8, 2, **make), 2,
                                            norm=torch.nn.LayerNorm(8), enable_nested_tensor=False).double()
    model = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, **make), 2, norm=nn.LayerNorm(8)).double()
    x = np.random.default_rng(0).standard_normal((3, 5, 8))
    _compare(torch, device, model, reference, x, mask=CAUSAL, src_key_padding_mask=PADDING)


def test_vision_transformer_matches_its_pytorch_twin(torch, device):
    from gpudl.benchmark_torch import build
    gd.manual_seed(4)
    model = models.build("transformer").double()
    reference = build("transformer").double()
    reference.load_state_dict({k: torch.from_numpy(v.numpy()) for k, v in model.state_dict().items()})
    _compare(torch, device, model, reference, np.random.default_rng(5).standard_normal((4, 1, 28, 28)))
