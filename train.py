"""Train a DCGAN on faces: alternating Adam updates of D and G, checkpoints, sample grids and loss plots.

    python train.py --config configs/demo.toml                  # built-in toy faces, minutes on a CPU
    python train.py --epochs 25 --res 128 --data data/celeba128  # a dataset made by preprocess.py
    python train.py --config configs/celeba64.toml --resume auto # continue the newest celeba64 run exactly

Every key of a config file is also a flag (lr_g <-> --lr-g); the command line wins.
"""
import signal
import time

import numpy as np
from tqdm import tqdm

from fakefacegen.checkpoint import cpu_copy, load_training_checkpoint, save_checkpoint
from fakefacegen.cli import UserError, run
from fakefacegen.collapse import CollapseWatch, data_spread
from fakefacegen.data.training_data import TrainingData
from fakefacegen.files import BackgroundWriter, save_png, write_json
from fakefacegen.grids import grid_image
from fakefacegen.metrics.fid_sources import FidMeter
from fakefacegen.reports.report import FigureDrawer, environment
from fakefacegen.reports.tensorboard_log import TensorBoardLog, summary_writer_class
from fakefacegen.runs import (
    MetricsLog,
    checkpoint_dir,
    default_run_name,
    fid_real_set,
    find_resume_checkpoint,
    make_run_folders,
    output_dir,
    run_checkpoints,
)
from fakefacegen.sampling import render
from fakefacegen.settings import parse_settings, settings_from_checkpoint
from fakefacegen.training.distributed import Distributed
from fakefacegen.training.speed import check_speed_flags, describe_speed
from fakefacegen.training.state import TrainState
from fakefacegen.training.step import METRICS, TrainingStep


def main(argv=None):
    cfg, given = parse_settings(argv, __doc__)
    world = Distributed(cfg["device"])
    try:
        train(cfg, given, world)
    finally:
        world.close()


def train(cfg, given, world):
    """Start or resume a run, then train epoch by epoch, saving at each epoch's end and when asked to stop."""
    state, resumed = start_state(cfg, given, world)
    cfg = state.cfg
    check_speed_flags(cfg, world.device, world.size)
    if world.main:
        make_run_folders(cfg["run"])
    if cfg["tensorboard"]:
        summary_writer_class()  # a missing package stops the run here, in one line, before anything is written
    data = TrainingData(cfg, world)
    step = TrainingStep(state, world, planned_iterations(cfg, data))
    outputs = Outputs(cfg, world, resume_step=state.step if resumed else None,
                      data_spread=data_spread(data.dataset, cfg["seed"]) if world.main else None)
    clock, stop = Clock(outputs.log.elapsed if outputs.log else 0.0), StopRequest()
    if world.main:
        announce(cfg, data, step, outputs, world)
    budget_spent = world.any(budget_reached(state, clock))  # rank 0 alone knows the minutes trained before
    if budget_spent and world.main:
        print(f"{cfg['run']} is already at iteration {state.step} ({clock.minutes():.1f} training minutes): "
              "nothing to do within --max-steps / --max-minutes")
    try:
        write_latest = True
        while state.epoch < cfg["epochs"] and not stop.requested and not budget_spent:
            budget_spent, finished_epoch = train_epoch(state, step, data, outputs, clock, stop, world)
            final = stop.requested or budget_spent or state.epoch == cfg["epochs"]
            write_latest = final or not finished_epoch or clock.save_due(cfg)  # mid-epoch means it was due
            if world.main:
                save(state, outputs, finished_epoch, write_latest)
            clock.saved(write_latest)
        if stop.requested and not write_latest and world.main:  # Ctrl-C came during an epoch's save
            save(state, outputs, finished_epoch=False, write_latest=True)
    finally:
        outputs.close()  # the last checkpoint is on disk before the run says it is done
    world.check_in_sync(state.G, state.D)
    if world.main:
        farewell(state, outputs, data, stop)


def announce(cfg, data, step, outputs, world):
    """The line a run starts with: its data, device, speed settings and where it writes."""
    processes = f" x {world.size} processes" if world.size > 1 else ""
    print(f"{data.description}; run {cfg['run']} on {world.device}{processes} ({describe_speed(step.speed)}); "
          f"outputs in {outputs.out_dir}/, checkpoints in {outputs.ckpt_dir}/")
    if step.speed["cuda_graph_off"]:
        print(f"CUDA graph: {step.speed['cuda_graph_off']}")


def start_state(cfg, given, world):
    """(a new TrainState, False), or (the one --resume names, with the settings it was trained with, True)."""
    ckpt = None
    if cfg["resume"]:
        path = find_resume_checkpoint(cfg["resume"], cfg, "run" in given)
        ckpt = load_training_checkpoint(path)
        cfg = settings_from_checkpoint(ckpt, path, cfg, given)
    if cfg["batch_size"] % world.size:
        raise UserError(f"--batch-size {cfg['batch_size']} is the global batch: make it a multiple of the "
                        f"{world.size} processes")
    cfg["run"] = world.same_on_all(cfg["run"] or default_run_name(cfg))  # the clocks of ranks may differ
    if ckpt is None and run_checkpoints(cfg["run"]):
        raise UserError(f"run {cfg['run']} already exists: continue it with --resume auto --run {cfg['run']}, "
                        "or pick another --run")
    state = TrainState(cfg, world.device)
    if ckpt is not None:
        state.load_state_dict(ckpt)
        if world.main:
            print(f"resuming {path} at epoch {state.epoch + 1}, iteration {state.step}")
    return state, ckpt is not None


def planned_iterations(cfg, data):
    """How long the run is meant to be: --epochs of the data, or --max-steps if that comes first."""
    per_epoch = len(data.dataset) // cfg["batch_size"] // cfg["d_steps"]
    total = per_epoch * cfg["epochs"]
    return min(total, cfg["max_steps"]) if cfg["max_steps"] else total


def train_epoch(state, step, data, outputs, clock, stop, world):
    """Iterations until the epoch ends, a stop is asked, the budget is spent or latest.pt is due;
    returns (budget spent, epoch finished)."""
    cfg = state.cfg
    iterations, groups = data.epoch(state.epoch, state.batch_in_epoch)
    done = state.batch_in_epoch // cfg["d_steps"]
    bar = tqdm(total=iterations, initial=done, disable=not world.main, desc=f"epoch {state.epoch + 1}/{cfg['epochs']}",
               unit="it", dynamic_ncols=True, leave=False)
    budget_spent = False
    for group in groups:
        clock.images += step(group)
        state.batch_in_epoch += cfg["d_steps"]
        state.step += 1
        bar.update(1)
        finished = state.batch_in_epoch == iterations * cfg["d_steps"]
        budget_spent = budget_reached(state, clock)
        # Every rank must agree on log lines (they average the metrics together): no clock in this test.
        log_line = state.step % cfg["log_every"] == 0 or finished or 0 < cfg["max_steps"] <= state.step
        if log_line:
            write_log_line(state, outputs, clock, bar, world)
        # Under torchrun the ranks decide together, on log lines only, so they leave the loop as one.
        if (world.size == 1 or log_line) and world.any(stop.requested or budget_spent or clock.save_due(cfg)):
            break
    bar.close()
    budget_spent, stop.requested = world.any(budget_spent), world.any(stop.requested)
    checked_means(state.log_window, state.step, outputs.ckpt_dir)  # never save weights gone non-finite
    finished = state.batch_in_epoch == iterations * cfg["d_steps"]
    if finished:
        state.epoch, state.batch_in_epoch = state.epoch + 1, 0
    return budget_spent, finished


def budget_reached(state, clock):
    """Whether --max-steps or --max-minutes (0: no limit) is used up, also by a run resumed past them."""
    cfg = state.cfg
    return 0 < cfg["max_steps"] <= state.step or 0 < cfg["max_minutes"] <= clock.minutes()


def write_log_line(state, outputs, clock, bar, world):
    """Average the metrics since the last line (one host sync), append them to metrics.csv, show them."""
    values = checked_means(world.mean(state.log_window), state.step, outputs.ckpt_dir)
    rate = clock.lap()
    if world.main:
        outputs.log.append({"step": state.step, "epoch": state.epoch + 1, **dict(zip(METRICS, values)),
                            "images_per_s": f"{rate:.1f}", "elapsed_s": f"{clock.elapsed:.2f}"})
        bar.set_postfix(loss_d=f"{values[0]:.3f}", loss_g=f"{values[1]:.3f}", img_s=f"{rate:.0f}")
        if outputs.tensorboard:
            outputs.tensorboard.scalars(state.step, {**dict(zip(METRICS, values)), "images_per_s": rate})
    state.log_window.zero_()


def checked_means(window, step, ckpt_dir):
    """The window's averaged metrics, or a one-line stop if any went non-finite (latest.pt stays good)."""
    sums = window.tolist()  # the one host sync per log line
    values = [v / max(sums[-1], 1) for v in sums[:-1]]
    if not all(np.isfinite(values)):
        raise UserError(f"the loss became non-finite by iteration {step}: lower --lr-d/--lr-g or check the "
                        f"data; {ckpt_dir}/latest.pt is the last good state")
    return values


FIGURE_SECONDS = 10  # an epoch's grid, loss.png and report.html: at most this often (and at every checkpoint)


class Outputs:
    """A run's folders, its metrics.csv, report.html's environment and, with --fid-every and --tensorboard, its
    FID meter and TensorBoard log; written by rank 0 alone, in the background writer."""

    def __init__(self, cfg, world, resume_step, data_spread):
        self.out_dir, self.ckpt_dir = output_dir(cfg["run"]), checkpoint_dir(cfg["run"])
        self.log, self.fid_meter, self.tensorboard, self.writer = None, None, None, BackgroundWriter()
        self.figures = FigureDrawer(in_child=world.device.type == "cuda")
        self.figures_drawn = -float("inf")  # when the figures were last drawn (time.monotonic)
        self.collapse_watch, self.warnings = CollapseWatch(data_spread, cfg["loss"]), {}
        if not world.main:
            return
        write_json(self.out_dir / "config.json", cfg)
        self.log = MetricsLog(self.out_dir / "metrics.csv", resume_step)
        self.env = {**environment(world.device), **({"processes": str(world.size)} if world.size > 1 else {})}
        if cfg["fid_every"]:
            self.fid_meter = FidMeter(fid_real_set(cfg), cfg["res"], cfg["fid_n"], world.device, cfg["seed"])
        if cfg["tensorboard"]:
            self.tensorboard = TensorBoardLog(self.out_dir / "tensorboard", resume_step)

    def close(self):
        """The writer's last jobs done (the last checkpoint on disk), then the figures' process stopped."""
        try:
            self.writer.close()
        finally:
            self.figures.close()


def save(state, outputs, finished_epoch, write_latest):
    """At an epoch's end or a stop: the grid, the loss plot, FID and epoch_NNN.pt / best.pt when due, and
    latest.pt when asked. An epoch's end writes latest.pt only when --ckpt-minutes have passed (or at the run's
    end): on a GPU an epoch can take seconds, and a checkpoint each time would cost more than the training.
    The grid, the figures and the report are drawn at every save, and at an epoch's end when FIGURE_SECONDS
    have passed since the last: a GPU's epochs can be shorter than that, and an epoch's end with nothing due
    costs nothing (no recalibration of G_eval, no render, no wait for the device). What needs the device
    (G_eval, FID, the grid's pixels, a CPU copy of the state) is done here; the files are written by the
    background writer while training goes on."""
    cfg, epoch, step = state.cfg, state.epoch, state.step
    names = ["latest.pt"] if write_latest else []
    if finished_epoch and cfg["ckpt_every"] and epoch % cfg["ckpt_every"] == 0:
        names.append(f"epoch_{epoch:03d}.pt")
    fid_due = outputs.fid_meter is not None and finished_epoch and epoch % cfg["fid_every"] == 0
    if not (names or fid_due or time.monotonic() - outputs.figures_drawn >= FIGURE_SECONDS):
        return  # nothing due at this epoch's end: no recalibration, no grid, nothing that waits for the device
    G_eval = state.eval_generator()
    if fid_due and measure_fid(state, outputs, G_eval):
        names.append("best.pt")
    checkpoint = cpu_copy(state.state_dict(G_eval)) if names else None
    samples = render(G_eval, state.fixed_noise, state.device)
    watch_collapse(state, outputs, samples)
    grid_name = f"epoch_{epoch:03d}.png" if finished_epoch else f"step_{step:06d}.png"
    rows, outputs.figures_drawn = outputs.log.read(), time.monotonic()
    outputs.writer.submit(write_save, outputs, step, [outputs.ckpt_dir / name for name in names], checkpoint,
                          grid_image(samples), grid_name, rows, dict(outputs.warnings))
    checkpoints = "".join(f", {outputs.ckpt_dir}/{name}" for name in names)
    tqdm.write(f"iteration {step}, epoch {epoch if finished_epoch else epoch + 1}: saving "
               f"{outputs.out_dir}/samples/{grid_name}{checkpoints}")


def watch_collapse(state, outputs, samples):
    """collapse.py's checks of this save's samples and the log so far; a warning is printed when it appears."""
    cfg = state.cfg
    found = outputs.collapse_watch.warnings(samples, outputs.log.rows, state.step * cfg["batch_size"] * cfg["d_steps"])
    for kind, text in found.items():
        if kind not in outputs.warnings:
            tqdm.write(f"warning: {kind}: {text}")
    outputs.warnings = found


def write_save(outputs, step, paths, checkpoint, grid, grid_name, rows, warnings):
    """A save's files, in the background writer: the checkpoints first, then the grid and, from metrics.csv's
    `rows`, the figures and last the report that shows them with the collapse `warnings`."""
    if checkpoint is not None:
        save_checkpoint(paths, checkpoint)
    save_png(grid, outputs.out_dir / "samples" / grid_name)
    if outputs.tensorboard:
        outputs.tensorboard.grid(step, grid)
    outputs.figures.draw(outputs.out_dir, outputs.env, rows, warnings)


def measure_fid(state, outputs, G_eval):
    """FID into metrics.csv (fid.png follows with the save); True (and state.best_fid updated) when it is the
    best so far."""
    fid = outputs.fid_meter(G_eval)
    outputs.log.append({"step": state.step, "epoch": state.epoch, "fid": f"{fid:.4f}"})
    if outputs.tensorboard:
        outputs.tensorboard.fid(state.step, fid)
    tqdm.write(f"epoch {state.epoch}: FID {fid:.2f} ({state.cfg['fid_n']} samples; best before {state.best_fid:.2f})")
    if fid < state.best_fid:
        state.best_fid = fid
        return True
    return False


class Clock:
    """Training time and speed: seconds trained (carried over from metrics.csv on resume), images since the
    last log line, and when latest.pt was last written."""

    def __init__(self, elapsed):
        self.elapsed, self.images = elapsed, 0
        self.window_start, self.last_save = time.perf_counter(), time.monotonic()

    def lap(self):
        """Close the window since the last lap: add its time to elapsed; returns its images per second."""
        now = time.perf_counter()
        self.elapsed += now - self.window_start
        rate = self.images / (now - self.window_start)
        self.images, self.window_start = 0, now
        return rate

    def minutes(self):
        return (self.elapsed + time.perf_counter() - self.window_start) / 60

    def save_due(self, cfg):
        return time.monotonic() - self.last_save > cfg["ckpt_minutes"] * 60

    def saved(self, latest_written):
        """Saving and FID count as elapsed time, not as training speed."""
        self.lap()
        if latest_written:
            self.last_save = time.monotonic()


class StopRequest:
    """Ctrl-C / SIGTERM set a flag; the loop saves latest.pt at the end of the iteration and stops."""

    def __init__(self):
        self.requested = False
        signal.signal(signal.SIGINT, self.handle)
        signal.signal(signal.SIGTERM, self.handle)

    def handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C means now
            raise KeyboardInterrupt
        self.requested = True


def farewell(state, outputs, data, stop):
    if outputs.tensorboard:
        outputs.tensorboard.close()
    if data.skipped:
        print(f"skipped {data.skipped} images that could not be decoded")
    if stop.requested:
        print(f"stopped at iteration {state.step}; continue with: "
              f"python train.py --resume auto --run {state.cfg['run']}")
    else:
        print(f"done: {state.step} iterations; samples in {outputs.out_dir}/samples/, checkpoint "
              f"{outputs.ckpt_dir}/latest.pt")


if __name__ == "__main__":
    run(main)
