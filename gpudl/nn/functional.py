"""Every functional op a model needs, under PyTorch's ``torch.nn.functional`` names:
activations, softmax, linear, convolution, pooling, normalisation, embedding, dropout and losses."""
from ..ops import dropout, elu, gelu, leaky_relu, log_softmax, relu, sigmoid, silu, softmax, softplus, tanh
from ..ops.adaptive_pooling import adaptive_avg_pool2d, adaptive_max_pool2d
from ..ops.attention import scaled_dot_product_attention
from ..ops.conv import conv2d
from ..ops.embedding import embedding
from ..ops.linear import linear
from ..ops.loss import softmax_cross_entropy
from ..ops.normalization import batch_norm, layer_norm
from ..ops.pooling import avg_pool2d, max_pool2d
from .loss import (binary_cross_entropy, binary_cross_entropy_with_logits, cross_entropy, huber_loss, l1_loss,
                   l1_penalty, l2_penalty, mse_loss, nll_loss)

__all__ = [
    "adaptive_avg_pool2d", "adaptive_max_pool2d",
    "avg_pool2d", "batch_norm", "binary_cross_entropy", "binary_cross_entropy_with_logits", "conv2d",
    "cross_entropy", "dropout", "elu", "embedding", "gelu", "huber_loss", "l1_loss", "l1_penalty", "l2_penalty",
    "layer_norm", "leaky_relu", "linear", "log_softmax", "max_pool2d", "mse_loss", "nll_loss", "relu",
    "scaled_dot_product_attention", "sigmoid", "silu", "softmax", "softmax_cross_entropy", "softplus", "tanh",
]
