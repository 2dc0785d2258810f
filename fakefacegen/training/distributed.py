"""torchrun's world: rank, size, the device of this process, and the few collective operations the training
loop needs. Alone (no torchrun) every operation is a no-op, so the loop is written once for both."""
import gc
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from fakefacegen.cli import resolve_device


class Distributed:
    """torchrun's world: rank, size, and the few collective operations the loop needs (a no-op when alone)."""

    def __init__(self, device_name):
        self.size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.size == 1:
            self.device = resolve_device(device_name)
            if self.device.type == "cuda" and self.device.index is not None:
                torch.cuda.set_device(self.device)  # so that streams, graphs and the default generator are its
            return
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        wants_cuda = device_name != "cpu" and torch.cuda.is_available()
        self.device = torch.device("cuda", local_rank) if wants_cuda else torch.device("cpu")
        if wants_cuda:
            torch.cuda.set_device(self.device)
        dist.init_process_group("nccl" if wants_cuda else "gloo")

    @property
    def main(self):
        return self.rank == 0

    def shard(self, rows):
        """This rank's contiguous share of a global batch (or of global noise)."""
        share = len(rows) // self.size
        return rows[self.rank * share:(self.rank + 1) * share]

    def mean(self, tensor):
        if self.size > 1:
            dist.all_reduce(tensor)
            tensor /= self.size
        return tensor

    def any(self, flag):
        """True on every rank if it is true on any: ranks must agree before leaving the loop together."""
        if self.size == 1:
            return flag
        value = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def same_on_all(self, value):
        """Rank 0's value of a picklable object, on every rank."""
        if self.size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def wrap(self, model):
        if self.size == 1:
            return model
        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def check_in_sync(self, *models):
        """Compare every parameter across ranks (float64 sums per tensor); say so on rank 0.

        BatchNorm's running statistics are left out: each rank updates them from its own share of the
        batch, DDP copies rank 0's at every forward, and checkpoints hold rank 0's."""
        if self.size == 1:
            return
        sums = torch.stack([p.detach().double().sum() for m in models for p in m.parameters()])
        gathered = [torch.empty_like(sums) for _ in range(self.size)]
        dist.all_gather(gathered, sums)
        if any(not torch.equal(gathered[0], other) for other in gathered[1:]):
            raise RuntimeError("the processes ended with different weights: please report this")
        if self.main:
            print(f"weights identical on all {self.size} processes")

    def close(self):
        if self.size > 1:
            dist.destroy_process_group()
            # DDP's reducers still hold the group, in reference cycles: without this they are freed in the
            # interpreter's finalisation, where gloo's threads abort a finished run about one time in ten
            gc.collect()
