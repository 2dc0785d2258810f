"""Train a DCGAN on faces: alternating Adam updates of D and G, checkpoints, sample grids and loss plots.

    python train.py --config configs/demo.toml                  # built-in toy faces, minutes on a CPU
    python train.py --epochs 25 --res 128 --data data/celeba128  # a dataset made by preprocess.py
    python train.py --config configs/celeba64.toml --resume auto # continue the newest celeba64 run exactly

Every key of a config file is also a flag (lr_g <-> --lr-g); the command line wins. training_loop() below is the
whole run, top to bottom; the maths of an iteration is fakefacegen/training/iteration.py.
"""
import fakefacegen  # noqa: F401  (first: an older Python stops there with one line)

# isort: split
import signal
import time

import numpy as np
from tqdm import tqdm

from fakefacegen.checkpoint import check_place_in_epoch, load_training_checkpoint, save_checkpoint
from fakefacegen.cli import UserError, run
from fakefacegen.data.training_data import TrainingData
from fakefacegen.files import save_png, write_json
from fakefacegen.grids import grid_image
from fakefacegen.metrics.collapse import CollapseWatch, data_sample, judged_from
from fakefacegen.metrics.fid_sources import FidMeter
from fakefacegen.reports.report import draw_run_figures, environment
from fakefacegen.reports.tensorboard_log import TensorBoardLog, summary_writer_class
from fakefacegen.runs import (
    MetricsLog,
    RunLock,
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
from fakefacegen.training.cuda_graphs import CudaGraphed
from fakefacegen.training.distributed import Distributed
from fakefacegen.training.iteration import METRICS, Iteration
from fakefacegen.training.speed import check_speed_flags, describe_speed
from fakefacegen.training.state import TrainState

FIGURE_SECONDS = 10  # an epoch's grid, loss.png and report.html: at most this often (and at every checkpoint)


def main(argv=None):
    """Train; a run stopped by Ctrl-C or SIGTERM ends, once saved, with the shell's status for that signal
    (130, 143), so that a script can tell it from a finished run (0)."""
    cfg, given = parse_settings(argv, __doc__)
    world, lock = Distributed(cfg["device"]), RunLock()
    try:
        stopped_by = training_loop(cfg, given, world, lock)
    finally:
        lock.release()
        world.close()
    if stopped_by:
        raise SystemExit(128 + stopped_by)


def training_loop(cfg, given, world, lock):
    """The run: set-up, then iterations until the epochs, --max-steps or --max-minutes are spent or Ctrl-C
    comes, saving as it goes (save() says what is written when). Returns the signal that stopped it, or None."""
    # Set-up: the state of a new run, or of the one --resume names with the settings it was trained with.
    state, resumed_from = start_state(cfg, given, world, lock)
    cfg = state.cfg  # read-only from here on
    if world.main:
        make_run_folders(cfg["run"])
    if cfg["tensorboard"]:
        summary_writer_class()  # a missing package stops the run here, in one line, before anything is written
    data = TrainingData(cfg, world)
    if resumed_from:
        check_place_in_epoch(state.batch_in_epoch, cfg["d_steps"], data.batches_per_epoch, resumed_from)
    iteration = Iteration(state, world, planned_iterations(cfg, data))
    if iteration.speed["cuda_graph"]:
        iteration = CudaGraphed(iteration)
    outputs = Outputs(cfg, world, state, data) if world.main else None
    clock, stop = Clock(outputs.log.elapsed if outputs else 0.0), StopRequest()
    if world.main:
        announce(cfg, data, iteration, outputs, world)
    # Rank 0 alone knows the minutes trained before; a run resumed after its last epoch has nothing to do either.
    stopping = world.any(budget_reached(state, clock)) or state.epoch >= cfg["epochs"]
    if stopping and world.main:
        print(nothing_to_do(state, clock))

    while not stopping and state.epoch < cfg["epochs"]:
        # The batches of this epoch, from where the run is inside it.
        iterations, groups = data.epoch(state.epoch, state.batch_in_epoch)
        with epoch_bar(state, iterations, world) as bar:
            for group in groups:
                # One iteration: D's updates, G's updates, the EMA of G (fakefacegen/training/iteration.py).
                clock.images += iteration(group)
                state.step += 1
                state.batch_in_epoch += cfg["d_steps"]
                bar.update(1)
                epoch_done = state.batch_in_epoch == iterations * cfg["d_steps"]

                # The log line: the metrics averaged since the last one, into metrics.csv and the progress bar.
                log_line = state.step % cfg["log_every"] == 0 or epoch_done or 0 < cfg["max_steps"] <= state.step
                if log_line:
                    write_log_line(state, outputs, clock, bar, world)
                if epoch_done:
                    state.epoch, state.batch_in_epoch = state.epoch + 1, 0

                # Stop or save? Every rank must decide alike: under torchrun they decide together, on log lines.
                latest_due = False
                if world.size == 1 or log_line:
                    stopping = world.any(stop.requested or budget_reached(state, clock))
                    latest_due = world.any(clock.save_due(cfg))
                final = stopping or (epoch_done and state.epoch == cfg["epochs"])
                if epoch_done or final or latest_due:
                    checked_means(state.log_window, state.step, checkpoint_dir(cfg["run"]))  # never save NaN weights
                    if world.main:
                        save(state, outputs, epoch_done, write_latest=final or latest_due)
                    clock.saved(final or latest_due)
                if final:
                    break

    if outputs:
        outputs.close()
    world.check_in_sync(state.G, state.D)
    if world.main:
        farewell(state, outputs, data, stop)
    return stop.signal


def start_state(cfg, given, world, lock):
    """(A new TrainState, or the one --resume names with the settings it was trained with and the flags given
    now; the checkpoint's path or None). Its settings hold the run's name, which `lock` holds for this process
    from here on (rank 0's: under torchrun the ranks are one run)."""
    ckpt = path = None
    if cfg["resume"]:
        path = find_resume_checkpoint(cfg["resume"], cfg, "run" in given)
        ckpt = load_training_checkpoint(path)
        cfg = settings_from_checkpoint(ckpt, path, cfg, given)
    if cfg["batch_size"] % world.size:
        raise UserError(f"--batch-size {cfg['batch_size']} is the global batch: make it a multiple of the "
                        f"{world.size} processes")
    check_speed_flags(cfg, world.device, world.size)  # a speed setting this run cannot have: before any file
    run_name = world.same_on_all(cfg["run"] or default_run_name(cfg))  # the clocks of ranks may differ
    state = TrainState({**cfg, "run": run_name}, world.device)
    if ckpt is not None:
        state.load_state_dict(ckpt, path)  # a part that does not fit the networks is refused before the lock
    if world.main:
        lock.take(run_name)  # before the check below: two new runs of one name cannot both pass it
    if ckpt is None and run_checkpoints(run_name):
        raise UserError(f"run {run_name} already exists: continue it with --resume auto --run {run_name}, "
                        "or pick another --run")
    if ckpt is not None and world.main:
        print(f"resuming {path} at epoch {state.epoch + 1}, iteration {state.step}")
    return state, path


def planned_iterations(cfg, data):
    """How long the run is meant to be: --epochs of the data, or --max-steps if that comes first."""
    total = len(data.dataset) // cfg["batch_size"] // cfg["d_steps"] * cfg["epochs"]
    return min(total, cfg["max_steps"]) if cfg["max_steps"] else total


def epoch_bar(state, iterations, world):
    """The progress bar of an epoch, from where the run is inside it; rank 0's alone is shown."""
    cfg = state.cfg
    return tqdm(total=iterations, initial=state.batch_in_epoch // cfg["d_steps"], disable=not world.main,
                desc=f"epoch {state.epoch + 1}/{cfg['epochs']}", unit="it", dynamic_ncols=True, leave=False)


def announce(cfg, data, iteration, outputs, world):
    """The line a run starts with: its data, device, speed settings and where it writes."""
    processes = f" x {world.size} processes" if world.size > 1 else ""
    print(f"{data.description}; run {cfg['run']} on {world.device}{processes} ({describe_speed(iteration.speed)}); "
          f"outputs in {outputs.out_dir}/, checkpoints in {outputs.ckpt_dir}/")
    if iteration.speed["cuda_graph_off"]:
        print(f"CUDA graph: {iteration.speed['cuda_graph_off']}")


def budget_reached(state, clock):
    """Whether --max-steps or --max-minutes (0: no limit) is used up, also by a run resumed past them."""
    cfg = state.cfg
    return 0 < cfg["max_steps"] <= state.step or 0 < cfg["max_minutes"] <= clock.minutes()


def nothing_to_do(state, clock):
    """What a resumed run that is already at its budget says: which budget, and the flag that extends it."""
    cfg, run_name = state.cfg, state.cfg["run"]
    if 0 < cfg["max_steps"] <= state.step:
        spent, flag = f"--max-steps {cfg['max_steps']}", f"--max-steps {2 * max(state.step, cfg['max_steps'])}"
    elif 0 < cfg["max_minutes"] <= clock.minutes():
        spent, flag = f"--max-minutes {cfg['max_minutes']:g}", f"--max-minutes {2 * cfg['max_minutes']:g}"
    else:
        spent, flag = f"--epochs {cfg['epochs']}", f"--epochs {2 * max(state.epoch, cfg['epochs'])}"
    return (f"{run_name} is already at iteration {state.step}, epoch {state.epoch} ({clock.minutes():.1f} training "
            f"minutes), the budget of {spent} it was given: nothing to do. To train on, resume with a larger budget, "
            f"e.g. python train.py --resume auto --run {run_name} {flag}")


def write_log_line(state, outputs, clock, bar, world):
    """Average the metrics since the last line (one host sync), append them to metrics.csv, show them."""
    values = checked_means(world.mean(state.log_window), state.step, checkpoint_dir(state.cfg["run"]))
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


class Outputs:
    """What rank 0 writes besides checkpoints: its folders, metrics.csv, report.html's environment, the collapse
    checks and, with --fid-every and --tensorboard, its FID meter and TensorBoard log."""

    def __init__(self, cfg, world, state, data):
        self.out_dir, self.ckpt_dir = output_dir(cfg["run"]), checkpoint_dir(cfg["run"])
        resume_step = state.step or None  # a resumed run's metrics.csv keeps its lines up to the checkpoint
        write_json(self.out_dir / "config.json", cfg)
        self.log = MetricsLog(self.out_dir / "metrics.csv", resume_step)
        self.env = {**environment(world.device), **({"processes": str(world.size)} if world.size > 1 else {})}
        self.fid_meter = FidMeter(fid_real_set(cfg), cfg["res"], cfg["fid_n"], world.device, cfg["seed"]) \
            if cfg["fid_every"] else None
        self.tensorboard = TensorBoardLog(self.out_dir / "tensorboard", resume_step) if cfg["tensorboard"] else None
        self.collapse_watch = CollapseWatch(data_sample(data.dataset, cfg["seed"]), cfg["loss"], judged_from(cfg))
        self.warnings = {}
        self.figures_drawn = -float("inf")  # when the figures were last drawn (time.monotonic)

    def close(self):
        if self.tensorboard:
            self.tensorboard.close()


def save(state, outputs, epoch_done, write_latest):
    """Everything a run writes besides its log, in one place, synchronously (the files are on disk when it
    returns). Called at an epoch's end, when --ckpt-minutes have passed, at the run's end and on a stop:
    - latest.pt when `write_latest` (every --ckpt-minutes, at the end, on a stop): not at every epoch's end,
      since on a GPU an epoch can take seconds and a checkpoint each time would cost more than the training;
    - at an epoch's end, epoch_NNN.pt every --ckpt-every epochs and FID every --fid-every (best.pt when best);
    - the grid of the fixed noise, loss.png, fid.png and report.html with any checkpoint or FID, and at an
      epoch's end when FIGURE_SECONDS have passed since they were last drawn. An epoch's end with nothing due
      returns at once (no recalibration of G_eval, no render, no wait for the device)."""
    cfg, epoch, step = state.cfg, state.epoch, state.step
    names = ["latest.pt"] if write_latest else []
    if epoch_done and cfg["ckpt_every"] and epoch % cfg["ckpt_every"] == 0:
        names.append(f"epoch_{epoch:03d}.pt")
    fid_due = outputs.fid_meter is not None and epoch_done and epoch % cfg["fid_every"] == 0
    if not (names or fid_due or time.monotonic() - outputs.figures_drawn >= FIGURE_SECONDS):
        return
    G_eval = state.eval_generator()
    if fid_due and measure_fid(state, outputs, G_eval):
        names.append("best.pt")
    grid_name = f"epoch_{epoch:03d}.png" if epoch_done else f"step_{step:06d}.png"
    checkpoints = "".join(f", {outputs.ckpt_dir}/{name}" for name in names)
    tqdm.write(f"iteration {step}, epoch {epoch if epoch_done else epoch + 1}: saving "
               f"{outputs.out_dir}/samples/{grid_name}{checkpoints}")
    if names:
        save_checkpoint([outputs.ckpt_dir / name for name in names], state.state_dict(G_eval))
    samples = render(G_eval, state.fixed_noise, state.device)
    watch_collapse(state, outputs, samples)
    grid = grid_image(samples)
    save_png(grid, outputs.out_dir / "samples" / grid_name)
    if outputs.tensorboard:
        outputs.tensorboard.grid(step, grid)
    draw_run_figures(outputs.out_dir, outputs.env, outputs.log.rows, outputs.warnings)
    outputs.figures_drawn = time.monotonic()


def watch_collapse(state, outputs, samples):
    """collapse.py's checks of this save's samples and the log so far; a warning is printed when it appears."""
    cfg = state.cfg
    found = outputs.collapse_watch.warnings(samples, outputs.log.rows, state.step * cfg["batch_size"] * cfg["d_steps"])
    for kind, text in found.items():
        if kind not in outputs.warnings:
            tqdm.write(f"warning: {kind}: {text}")
    outputs.warnings = found


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
    """Ctrl-C / SIGTERM set a flag and record which came; the loop saves latest.pt at the end of the iteration
    and stops, and main exits with that signal's status."""

    def __init__(self):
        self.requested, self.signal = False, None
        signal.signal(signal.SIGINT, self.handle)
        signal.signal(signal.SIGTERM, self.handle)

    def handle(self, signum, frame):
        # A second Ctrl-C means now. Another signal after the first is the same request: compare.py's SIGTERM
        # to a child that the terminal's Ctrl-C reached too must not cut its save short.
        if self.requested:
            if signum == self.signal:
                raise KeyboardInterrupt
            return
        self.requested, self.signal = True, signum


def farewell(state, outputs, data, stop):
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
