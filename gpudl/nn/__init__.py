"""Neural-network building blocks with PyTorch's names and semantics: ``Module`` and ``Parameter``,
layers, containers, initialisers (``nn.init``), losses and ``nn.functional``."""
from . import functional, init, parallel, utils
from .attention import MultiheadAttention
from .activation import ELU, GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, SiLU, Softmax, Softplus, Tanh
from .containers import ModuleList, Sequential
from .conv import Conv2d
from .dropout import Dropout
from .embedding import Embedding
from .flatten import Flatten
from .linear import Identity, Linear
from .loss import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, L1Loss, MSELoss, NLLLoss
from .module import IncompatibleKeys, Module
from .normalization import BatchNorm1d, BatchNorm2d, LayerNorm
from .parameter import Parameter
from .pooling import AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, MaxPool2d
from .rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNBase, RNNCell, RNNCellBase
from .transformer import TransformerEncoder, TransformerEncoderLayer
from .sync_batchnorm import SyncBatchNorm

__all__ = [
    "AdaptiveAvgPool2d", "AdaptiveMaxPool2d",
    "AvgPool2d", "BCELoss", "BCEWithLogitsLoss", "BatchNorm1d", "BatchNorm2d", "Conv2d", "CrossEntropyLoss",
    "Dropout", "ELU", "Embedding", "Flatten", "GELU", "GRU", "GRUCell", "HuberLoss", "Identity", "IncompatibleKeys", "L1Loss",
    "LSTM", "LSTMCell", "LayerNorm", "LeakyReLU", "Linear", "LogSoftmax", "MSELoss", "MaxPool2d", "Module", "ModuleList",
    "MultiheadAttention", "NLLLoss",
    "Parameter", "RNN", "RNNBase", "RNNCell", "RNNCellBase", "ReLU", "Sequential", "SiLU", "Sigmoid", "Softmax", "Softplus",
    "SyncBatchNorm", "Tanh", "TransformerEncoder", "TransformerEncoderLayer", "functional", "init", "parallel",
    "utils",
]
