"""Gradient averaging for DistributedDataParallel: parameters packed into buckets of a few MB, one
all-reduce per bucket, started during backward as soon as a bucket's gradients are all complete."""
import time

from ...tensor import Tensor


class _Bucket:
    """Parameters of one dtype and device whose gradients share one flat buffer and one all-reduce."""

    __slots__ = ("params", "slices", "buffer", "packed", "pending", "request")

    def __init__(self, params):
        self.params = params
        self.slices, offset = [], 0
        for param in params:
            self.slices.append(slice(offset, offset + param.data.size))
            offset += param.data.size
        first = params[0]
        with first.backend.context(first.device):
            self.buffer = first.backend.xp.zeros(offset, dtype=first.dtype)
        self.packed = [False] * len(params)
        self.pending = len(params)
        self.request = None

    def reset(self):
        """Ready for the next backward."""
        self.packed = [False] * len(self.params)
        self.pending = len(self.params)
        self.request = None


def _bucket_params(params, cap_bytes, first_cap_bytes):
    """Split ``params`` (in the order their gradients become ready) into buckets: consecutive
    parameters of one dtype and device, up to ``cap_bytes`` each (the first up to ``first_cap_bytes``,
    so that the first all-reduce starts early in backward)."""
    buckets, current, size = [], [], 0
    for param in params:
        nbytes = param.data.nbytes
        cap = first_cap_bytes if not buckets else cap_bytes
        same_kind = not current or (param.dtype == current[0].dtype and param.device == current[0].device)
        if current and (not same_kind or size + nbytes > cap):
            buckets.append(_Bucket(current))
            current, size = [], 0
        current.append(param)
        size += nbytes
    if current:
        buckets.append(_Bucket(current))
    return buckets


class GradientReducer:
    """Averages the gradients of ``params`` over the ranks of ``comm`` after every backward.

    The autograd engine calls :meth:`ready` when a parameter's gradient of this backward is
    complete and :meth:`done` when the backward ends. A ready gradient is copied into its bucket;
    a full bucket starts its all-reduce (buckets start in a fixed order, the same on every rank, as
    MPI and NCCL need). ``done`` starts what is left (a parameter this backward did not reach
    contributes its current gradient, or zeros), waits for every bucket and writes
    ``sum / world size`` back into each ``.grad``.
    """

    def __init__(self, comm, params, bucket_cap_mb):
        self.comm = comm
        self.sync = True
        # gradients become ready roughly in reverse order of the parameters (the last layer's first)
        ordered = list(reversed(params))
        cap = int(bucket_cap_mb * 2 ** 20)
        self.buckets = _bucket_params(ordered, cap, min(cap, 2 ** 20))
        self.place = {}
        for bucket in self.buckets:
            for k, param in enumerate(bucket.params):
                self.place[id(param)] = (bucket, k)
        self.next_to_start = 0
        # time this rank spent starting and waiting for all-reduces (the part backward did not hide)
        self.communication_seconds = 0.0

    def reset(self):
        """Forget a backward that was interrupted (called before each forward)."""
        for bucket in self.buckets:
            bucket.reset()
        self.next_to_start = 0

    @staticmethod
    def _pack(param, bucket, k):
        view = bucket.buffer[bucket.slices[k]]
        if param.grad is None:
            view.fill(0)
        else:
            view[...] = param.grad.data.reshape(-1)
        bucket.packed[k] = True
        bucket.pending -= 1

    def _start_ready_buckets(self):
        started = time.perf_counter()
        while self.next_to_start < len(self.buckets) and self.buckets[self.next_to_start].pending == 0:
            bucket = self.buckets[self.next_to_start]
            bucket.request = self.comm.start_all_reduce(bucket.buffer, "sum")
            self.next_to_start += 1
        for bucket in self.buckets[:self.next_to_start]:
            bucket.request.test()  # MPI progresses started collectives only inside MPI calls
        self.communication_seconds += time.perf_counter() - started

    def ready(self, param):
        """The gradient of ``param`` is complete for this backward."""
        if not self.sync:
            return
        bucket, k = self.place[id(param)]
        if bucket.packed[k]:
            return
        self._pack(param, bucket, k)
        if bucket.pending == 0:
            self._start_ready_buckets()

    def done(self):
        """The backward ended: finish every bucket and write the averaged gradients."""
        if not self.sync:
            return
        for bucket in self.buckets:
            for k, param in enumerate(bucket.params):
                if not bucket.packed[k]:  # not reached by this backward
                    self._pack(param, bucket, k)
        self._start_ready_buckets()
        scale = 1.0 / self.comm.size
        for bucket in self.buckets:
            started = time.perf_counter()
            bucket.request.wait()
            self.communication_seconds += time.perf_counter() - started
            bucket.buffer *= scale
            for param, where in zip(bucket.params, bucket.slices):
                averaged = bucket.buffer[where].reshape(param.shape)
                if param.grad is None:
                    param.grad = Tensor._wrap(averaged.copy())
                else:
                    param.grad.data[...] = averaged
        self.reset()
