"""The PyTorch twin of gpudl.benchmark's training steps, for ``gpudl bench --compare torch``.

Same architectures as gpudl.benchmark's models (initialised by PyTorch), same loss, optimizer and input
shapes. Imported only in the PyTorch worker process (``python -m gpudl.benchmark``), which sets
``torch.set_num_threads`` from the same thread count as the gpudl worker's BLAS.
"""
import os

import torch

from .benchmark import (CLASSES, INPUT_SHAPES, LEARNING_RATE, MOMENTUM, THREAD_VARIABLES, TrainingStep, check_model,
                        functional_cnn_class)

nn = torch.nn
_threads = os.environ.get("OMP_NUM_THREADS")
if _threads:
    torch.set_num_threads(int(_threads))


FunctionalCNN = functional_cnn_class(nn)  # gpudl.benchmark.FunctionalCNN's code on torch.nn


class LSTMClassifier(nn.Module):
    """gpudl.models.LSTMClassifier: LSTM over the 28 rows, its last hidden state into a linear layer."""

    def __init__(self, input_size=28, hidden_size=128, num_classes=CLASSES):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, batch_first=True)
        self.fc = nn.Linear(hidden_size, num_classes)

    def forward(self, x):
        _, (h_n, _) = self.lstm(x)
        return self.fc(h_n[-1])


class VisionTransformer(nn.Module):
    """gpudl.models.VisionTransformer (mean pooling), with the same parameter names: 7x7 patches as 16
    tokens, a linear embedding plus a learned position embedding, a pre-norm encoder (GELU) with a final
    LayerNorm, the tokens' mean into a linear layer."""

    def __init__(self, image_size=28, patch_size=7, embed_dim=64, depth=2, num_heads=4, mlp_dim=128,
                 num_classes=CLASSES, dropout=0.0):
        super().__init__()
        self.image_size, self.patch_size = image_size, patch_size
        self.patch_embed = nn.Linear(patch_size * patch_size, embed_dim)
        self.pos_embed = nn.Parameter(torch.randn(1, (image_size // patch_size) ** 2, embed_dim) * 0.02)
        layer = nn.TransformerEncoderLayer(embed_dim, num_heads, mlp_dim, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(embed_dim), enable_nested_tensor=False)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, x):
        n, side, p = x.shape[0], self.image_size // self.patch_size, self.patch_size
        patches = x.reshape(n, side, p, side, p).permute(0, 1, 3, 2, 4).reshape(n, side * side, p * p)
        return self.head(self.encoder(self.patch_embed(patches) + self.pos_embed).mean(dim=1))


def build(model_name, **options):
    """The PyTorch model matching gpudl.models.build(model_name) (``options``: the transformer's sizes)."""
    check_model(model_name)
    if model_name == "transformer":
        return VisionTransformer(**options)
    if model_name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                             nn.Linear(512, CLASSES))
    if model_name == "cnn":
        return FunctionalCNN()
    return LSTMClassifier()


def _device():
    """cuda when gpudl's worker beside this one runs on the GPU (GPUDL_BACKEND), else cpu."""
    from . import backend
    if backend.default_device().kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("--compare torch on the GPU needs a PyTorch build with CUDA; this one has none")
    return torch.device("cuda")


def make_step(model_name, batch_size, model=None, optimizer=None, seed=0):
    """A TrainingStep of the PyTorch twin of ``model_name`` at ``batch_size``."""
    device = _device()
    if model is None:
        torch.manual_seed(seed)
        model = build(model_name).to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
    inputs = torch.randn(batch_size, *INPUT_SHAPES[model_name], device=device)
    targets = torch.randint(0, CLASSES, (batch_size,), device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    return TrainingStep(model, optimizer, inputs, targets, nn.functional.cross_entropy, sync)


def peak_memory(make, steps=2):
    """Peak bytes of the CUDA caching allocator over building and ``steps`` steps; None on the CPU,
    where PyTorch's allocations are not visible to tracemalloc."""
    if _device().type == "cpu":
        return None
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step = make()
    for _ in range(steps):
        step()
    return torch.cuda.max_memory_allocated() - before


def environment():
    """PyTorch's version, threads and BLAS, next to the thread variables of this process."""
    from .benchmark import thread_pools
    config = torch.__config__.show()
    blas = next((item.split("=", 1)[1] for item in config.replace(",", " ").split() if item.startswith("BLAS_INFO=")),
                None)
    return {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(), "torch_blas": blas,
            "device": str(_device()), "thread_pools": thread_pools(),
            "thread_variables": {name: os.environ.get(name) for name in THREAD_VARIABLES}}
