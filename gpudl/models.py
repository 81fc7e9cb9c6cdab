"""Ready-made classifiers for 28×28 images: an MLP, a CNN, an LSTM reading rows as time steps and a
small Vision Transformer reading patches as tokens."""
from . import nn
from .factories import empty
from .ops import cat


class MLP(nn.Sequential):
    """Flatten → (Linear → ReLU → Dropout) per hidden size → Linear; 784-512-512-10 by default."""

    def __init__(self, in_features=784, hidden_sizes=(512, 512), num_classes=10, dropout=0.0):
        layers = [nn.Flatten()]
        width = in_features
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
            width = size
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)


class CNN(nn.Sequential):
    """conv 32 3×3 pad 1 → max-pool 2 → ReLU → conv 64 3×3 pad 1 → max-pool 2 → ReLU → fc 128 → ReLU → fc 10.

    ReLU after the pool equals ReLU before it (both are monotonic, so they commute, ties and
    gradients included) on a quarter of the elements."""

    def __init__(self, in_channels=1, channels=(32, 64), hidden_size=128, num_classes=10, image_size=28,
                 dropout=0.0):
        layers = []
        width, side = in_channels, image_size
        for out_channels in channels:
            layers += [nn.Conv2d(width, out_channels, 3, padding=1), nn.MaxPool2d(2), nn.ReLU()]
            width, side = out_channels, side // 2
        layers += [nn.Flatten(), nn.Linear(width * side * side, hidden_size), nn.ReLU()]
        layers += ([nn.Dropout(dropout)] if dropout else []) + [nn.Linear(hidden_size, num_classes)]
        super().__init__(*layers)


class LSTMClassifier(nn.Module):
    """An LSTM over the rows of an image ([N, 28, 28]: 28 steps of 28 features); its last hidden
    state goes through a linear layer to the class scores."""

    def __init__(self, input_size=28, hidden_size=128, num_layers=1, num_classes=10, dropout=0.0):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers=num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden_size, num_classes)

    def forward(self, x):
        _, (h_n, _) = self.lstm(x)
        return self.fc(self.dropout(h_n[-1]))


class VisionTransformer(nn.Module):
    """A small Vision Transformer: the image cut into ``patch_size``² patches (16 tokens of 7×7 pixels by
    default), each embedded by one linear layer, plus a learned position embedding; a pre-norm
    TransformerEncoder (GELU, ``depth`` layers, ``num_heads`` heads) with a final LayerNorm; the mean over
    the tokens (``pool="mean"``) or a learned class token (``pool="cls"``) through a linear layer to the
    class scores. Takes [N, 1, H, W] or [N, H, W]."""

    def __init__(self, image_size=28, patch_size=7, embed_dim=64, depth=2, num_heads=4, mlp_dim=128,
                 num_classes=10, dropout=0.0, pool="mean"):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"VisionTransformer: patch_size {patch_size} does not divide image_size {image_size}")
        if pool not in ("mean", "cls"):
            raise ValueError(f"VisionTransformer: pool must be 'mean' or 'cls', got {pool!r}")
        self.image_size, self.patch_size, self.pool = image_size, patch_size, pool
        tokens = (image_size // patch_size) ** 2 + (pool == "cls")
        self.patch_embed = nn.Linear(patch_size * patch_size, embed_dim)
        if pool == "cls":
            self.cls_token = nn.Parameter(empty(1, 1, embed_dim))
            nn.init.normal_(self.cls_token, std=0.02)
        self.pos_embed = nn.Parameter(empty(1, tokens, embed_dim))
        nn.init.normal_(self.pos_embed, std=0.02)
        layer = nn.TransformerEncoderLayer(embed_dim, num_heads, mlp_dim, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(embed_dim))
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, x):
        n, side, p = x.shape[0], self.image_size // self.patch_size, self.patch_size
        patches = x.reshape(n, side, p, side, p).permute(0, 1, 3, 2, 4).reshape(n, side * side, p * p)
        tokens = self.patch_embed(patches)
        if self.pool == "cls":
            tokens = cat([self.cls_token.expand(n, 1, tokens.shape[-1]), tokens], dim=1)
        h = self.encoder(tokens + self.pos_embed)
        return self.head(h[:, 0] if self.pool == "cls" else h.mean(dim=1))


MODELS = {"mlp": MLP, "cnn": CNN, "lstm": LSTMClassifier, "transformer": VisionTransformer}
# What one number, the model's "width" (``gpudl train --width``), sets: its default and the constructor options.
WIDTHS = {
    "mlp": (512, "units of each hidden layer", lambda width: {"hidden_sizes": (width, width)}),
    "cnn": (32, "channels of the first convolution (the second has twice as many)",
            lambda width: {"channels": (width, 2 * width)}),
    "lstm": (128, "hidden size of the LSTM", lambda width: {"hidden_size": width}),
    "transformer": (64, "token embedding size (feed-forward twice as wide)",
                    lambda width: {"embed_dim": width, "mlp_dim": 2 * width}),
}


def build(name: str, width: int | None = None, **options):
    """The model called ``name`` (``mlp``, ``cnn``, ``lstm`` or ``transformer``) with ``options``;
    ``width``, when given, sets the model's size as ``WIDTHS`` says."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    if width is not None:
        options.update(WIDTHS[name][2](width))
    return MODELS[name](**options)
