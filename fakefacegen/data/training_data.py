"""A run's data: its dataset, where the batches come from (the device, or loader workers), each epoch's
batches in groups of d_steps, and how many undecodable images were skipped."""
from fakefacegen.cli import UserError
from fakefacegen.data import dataloader
from fakefacegen.data.toyfaces import TOYFACES


class TrainingData:
    """The dataset, where its batches come from (the device, or loader workers) and images skipped so far."""

    def __init__(self, cfg, world):
        self.cfg, self.world = cfg, world
        self.dataset = dataloader.open_dataset(cfg["data"], cfg["res"], cfg["seed"], cfg["toy_size"])
        per_iteration = cfg["batch_size"] * cfg["d_steps"]
        if len(self.dataset) < per_iteration:
            raise UserError(f"{self.dataset.description}: fewer images than one iteration needs ({per_iteration}); "
                            "lower --batch-size or --d-steps")
        if world.size > 1 and isinstance(self.dataset, dataloader.ImageFolder):
            # An undecodable file would leave one rank with a shorter batch and the ranks out of step.
            raise UserError("under torchrun, --data must be a packed dataset: pack the folder with preprocess.py")
        if cfg["data_on_device"] == "on" and isinstance(self.dataset, dataloader.ImageFolder):
            raise UserError("--data-on-device on needs a packed dataset (preprocess.py) or toyfaces, not a folder")
        on_device = cfg["data_on_device"] == "on" or (cfg["data_on_device"] == "auto"
                                                      and dataloader.fits_on_device(self.dataset, world.device))
        if world.main and cfg["data"] == TOYFACES:
            print("training on the built-in toy faces (--data PATH trains on real images)")
        self.device_images = dataloader.load_to_device(self.dataset, world.device) if on_device else None
        self.loader = None if on_device else dataloader.BatchLoader(self.dataset, cfg["workers"])
        where = "on the device" if on_device else f"through {cfg['workers']} loader workers"
        self.description = f"{self.dataset.description}, read {where}"
        self.skipped = 0
        # The batches an epoch uses: its whole batches (epoch_batches drops a partial one) in whole groups of d_steps.
        self.batches_per_epoch = len(self.dataset) // cfg["batch_size"] // cfg["d_steps"] * cfg["d_steps"]

    def epoch(self, epoch, start):
        """(iterations in the epoch, an iterator over this rank's d_steps-batch groups from batch `start` on)."""
        cfg = self.cfg
        every_rank = dataloader.epoch_batches(len(self.dataset), cfg["batch_size"], cfg["seed"], epoch)
        batches = self.world.shard(every_rank.T).T.contiguous()  # this rank's share of each batch, in one block
        end = self.batches_per_epoch  # a last partial group is dropped
        loader = iter(dataloader.epoch_loader(self.device_images, self.loader, batches[start:end]))
        return end // cfg["d_steps"], self.groups(loader, (end - start) // cfg["d_steps"])

    def groups(self, loader, count):
        for _ in range(count):
            group = []
            for _ in range(self.cfg["d_steps"]):
                images, bad = next(loader)
                self.skipped += bad
                group.append(images)
            yield group
