"""Data: data sets, the mini-batch ``DataLoader``, IDX files (MNIST, Fashion-MNIST), spirals.

Everything here runs on the host; batches move to the device once each, in the DataLoader.
"""
from .dataset import Dataset, Subset, TensorDataset, random_split
from .distributed_sampler import DistributedSampler, ShardedBatchSampler
from .idx import DataError, read_idx, write_idx
from .loader import DataLoader
from .mnist import MNIST, FashionMNIST
from .sampler import BatchSampler, RandomSampler, Sampler, SequentialSampler, SubsetRandomSampler
from .spiral import Spiral, spiral

__all__ = ["BatchSampler", "DataError", "DataLoader", "Dataset", "DistributedSampler", "ShardedBatchSampler",
           "FashionMNIST", "MNIST", "RandomSampler", "Sampler",
           "SequentialSampler", "Spiral", "Subset", "SubsetRandomSampler", "TensorDataset", "random_split", "read_idx",
           "spiral", "write_idx"]
