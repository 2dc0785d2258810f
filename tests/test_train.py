"""train.py end to end: outputs, exact resume after SIGKILL, config precedence, eval-mode sampling."""
import csv
import json
import os
import resource
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO, TINY, assert_one_line_error, run_script

import train
from fakefacegen.checkpoint import CHECKPOINT_FORMAT, discriminator_from_state, load_checkpoint, save_checkpoint
from fakefacegen.cli import UserError
from fakefacegen.metrics.inception import load_inception
from fakefacegen.network import Generator, MinibatchStdDev, init_dcgan
from fakefacegen.runs import MetricsLog
from fakefacegen.sampling import recalibrated_copy
from fakefacegen.settings import (
    DEFAULTS,
    SEEDS_DCGAN,
    SETTINGS,
    build_parser,
    flag_table,
    parse_settings,
    settings_from_checkpoint,
    shown_default,
)
from fakefacegen.training.state import TrainState

LOSS_COLUMNS = ("step", "epoch", "loss_d", "loss_g", "d_real", "d_fake")


def read_metrics(path):
    with open(path) as f:
        return [tuple(row[c] for c in LOSS_COLUMNS) for row in csv.DictReader(f)]


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_a_run_writes_its_outputs(tiny_run):
    cwd, ckpt_path = tiny_run
    out = cwd / "outputs" / "tiny"
    assert json.loads((out / "config.json").read_text())["res"] == 32
    assert (out / "samples" / "step_000006.png").is_file() and (out / "loss.png").is_file()
    assert [int(r[0]) for r in read_metrics(out / "metrics.csv")] == [1, 2, 3, 4, 5, 6]
    ckpt = load(ckpt_path)
    assert {"G", "D", "G_eval", "opt_g", "opt_d", "epoch", "step", "batch_in_epoch", "fixed_noise", "rng",
            "config"} <= set(ckpt)
    assert ckpt["step"] == 6 and ckpt["batch_in_epoch"] == 6 and ckpt["fixed_noise"].shape == (64, 100)


def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path):
    """Kill -9 at an arbitrary point, resume with --resume auto: same losses and weights, bit for bit."""
    args = [*TINY, "--toy-size", "256", "--epochs", "2", "--workers", "1", "--flip", "--ckpt-every", "1"]
    run_script("train.py", *args, "--run", "straight", cwd=tmp_path)

    # latest.pt is rewritten every ~50 ms, so the kill lands mid-epoch after some checkpoint.
    cmd = [sys.executable, str(REPO / "train.py"), *args, "--run", "killed", "--ckpt-minutes", "0.001"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = tmp_path / "checkpoints" / "killed" / "latest.pt"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if latest.exists() and load(latest)["step"] >= 9:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load(latest)["step"]
    assert 0 < killed_at < 32, "the run must be killed midway for this test to mean anything"
    assert (tmp_path / "outputs" / "killed" / "metrics.csv").exists()

    run_script("train.py", *args, "--run", "killed", "--resume", "auto", cwd=tmp_path)

    assert read_metrics(tmp_path / "outputs" / "killed" / "metrics.csv") == \
        read_metrics(tmp_path / "outputs" / "straight" / "metrics.csv")
    straight, resumed = load(tmp_path / "checkpoints" / "straight" / "latest.pt"), load(latest)
    assert resumed["step"] == straight["step"] == 32
    for net in ("G", "D", "G_eval"):
        for name, tensor in straight[net].items():
            assert torch.equal(tensor, resumed[net][name]), (net, name)
    assert (tmp_path / "checkpoints" / "killed" / "epoch_002.pt").is_file()


def test_config_file_is_overridden_by_the_command_line(tmp_path):
    (tmp_path / "c.toml").write_text('batch_size = 8\nngf = 12\nlr-g = 0.001\nflip = true\n')
    run_script("train.py", *TINY, "--config", "c.toml", "--batch-size", "16", "--max-steps", "1", "--run", "p",
               cwd=tmp_path)
    cfg = json.loads((tmp_path / "outputs" / "p" / "config.json").read_text())
    assert cfg["batch_size"] == 16  # CLI beats file
    assert cfg["ngf"] == 8  # TINY passes --ngf 8 on the command line
    assert cfg["lr_g"] == 0.001 and cfg["flip"] is True  # file beats default (dashes allowed in keys)
    assert cfg["lr_d"] == 2e-4 and cfg["nz"] == 100  # defaults where neither speaks


def test_shipped_configs_parse():
    for path in sorted((REPO / "configs").rglob("*.toml")):
        cfg, _ = parse_settings(["--config", str(path)], "")
        assert cfg["res"] in (32, 64, 96, 128, 256), path
    for name in ("dcgan_celeba64", "dcgan_celeba128"):  # the seeds' DCGAN stays one config away
        cfg, _ = parse_settings(["--config", str(REPO / "configs" / f"{name}.toml")], "")
        assert {key: cfg[key] for key in SEEDS_DCGAN} == SEEDS_DCGAN


def test_recalibrated_eval_mode_matches_train_mode_samples():
    """The eval-mode sampler gives what training-mode BatchNorm gives on a large batch."""
    torch.manual_seed(0)
    G = init_dcgan(Generator(32, nz=16, ngf=16))
    with torch.no_grad():  # skew the weights so the default running stats (0, 1) are clearly wrong
        for module in G.modules():
            if isinstance(module, torch.nn.ConvTranspose2d):
                module.weight.mul_(20)
    z = torch.randn(1024, 16)
    with torch.no_grad():
        train_mode = G.train()(z)
        stale_eval = G.eval()(z)
        G_eval = recalibrated_copy(G, 4096, 16, "cpu")
        recalibrated = G_eval(z)
        single = G_eval(z[:1])
    assert (recalibrated - train_mode).abs().mean() < 0.02
    assert (stale_eval - train_mode).abs().mean() > 0.1  # what users of other repos see
    assert torch.allclose(single, recalibrated[:1], atol=1e-5)  # a sample does not depend on its batch


def test_fid_during_training_keeps_the_best_checkpoint(tmp_path):
    try:
        load_inception("cpu")
    except Exception as err:  # noqa: BLE001 - any failure here means the weights are not installed
        pytest.skip(f"Inception weights not available: {err}")
    run_script("train.py", *TINY, "--toy-size", "32", "--epochs", "2", "--fid-every", "1", "--fid-n", "16",
               "--run", "fid", cwd=tmp_path)
    with open(tmp_path / "outputs" / "fid" / "metrics.csv") as f:
        fids = [(int(r["epoch"]), float(r["fid"])) for r in csv.DictReader(f) if r["fid"]]
    assert [e for e, _ in fids] == [1, 2] and all(v > 0 for _, v in fids)
    assert (tmp_path / "outputs" / "fid" / "fid.png").is_file()
    best = load(tmp_path / "checkpoints" / "fid" / "best.pt")
    assert abs(best["best_fid"] - min(v for _, v in fids)) < 1e-3  # metrics.csv keeps 4 decimals
    assert best["epoch"] == min(fids, key=lambda p: p[1])[0]


def test_resume_flags_take_effect_or_are_refused(tmp_path):
    """On resume a limit already reached trains nothing, a learning rate given now reaches the optimiser,
    and a flag that would change the optimiser's kind or the networks is refused in one line."""
    run_script("train.py", *TINY, "--max-steps", "3", "--run", "r", cwd=tmp_path)
    latest = tmp_path / "checkpoints" / "r" / "latest.pt"
    rows_before = read_metrics(tmp_path / "outputs" / "r" / "metrics.csv")

    result = run_script("train.py", *TINY, "--resume", "auto", "--run", "r", "--max-steps", "1", cwd=tmp_path)
    assert "already at iteration 3" in result.stdout
    assert load(latest)["step"] == 3 and read_metrics(tmp_path / "outputs" / "r" / "metrics.csv") == rows_before

    run_script("train.py", *TINY, "--resume", "auto", "--run", "r", "--max-steps", "4", "--lr-g", "0.0005",
               "--beta2", "0.99", cwd=tmp_path)
    ckpt = load(latest)
    assert ckpt["step"] == 4
    assert [g["lr"] for g in ckpt["opt_g"]["param_groups"]] == [0.0005]
    assert [g["lr"] for g in ckpt["opt_d"]["param_groups"]] == [2e-4]
    assert all(g["betas"] == (0.5, 0.99) for g in ckpt["opt_g"]["param_groups"] + ckpt["opt_d"]["param_groups"])

    for flags, word in ((["--optim", "sgd"], "optim"), (["--ngf", "16"], "ngf"), (["--ema", "0.9"], "EMA")):
        refused = run_script("train.py", *TINY, "--resume", "auto", "--run", "r", "--max-steps", "5", *flags,
                             cwd=tmp_path, check=False)
        assert_one_line_error(refused, word)
    assert load(latest)["step"] == 4


def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(tmp_path):
    """A file-size limit (what a full disk looks like to a writer): the save fails in one line that names the
    file, and latest.pt is still the last good one."""
    args = [*TINY, "--ngf", "64", "--ndf", "64", "--run", "full"]
    run_script("train.py", *args, "--max-steps", "2", cwd=tmp_path)
    latest = tmp_path / "checkpoints" / "full" / "latest.pt"
    size = latest.stat().st_size

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write() rather than being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, size // 2))

    result = subprocess.run([sys.executable, str(REPO / "train.py"), *args, "--resume", "auto", "--max-steps", "4"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300, preexec_fn=limit_file_size)
    last = result.stderr.strip().splitlines()[-1]  # after the progress bars
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert last.startswith("error: cannot write") and "latest.pt" in last and "intact" in last, last
    assert load(latest)["step"] == 2
    assert not [p.name for p in latest.parent.iterdir() if p.name.startswith(".") and p.name != ".lock"]


WRITE_FOREVER = """
import sys, torch
from fakefacegen.checkpoint import save_checkpoint
for i in range(100_000):
    save_checkpoint([sys.argv[1]], {"w": torch.full((4_000_000,), float(i)), "i": i})
"""


@pytest.mark.parametrize("delay", [0.3, 0.55, 0.8])
def test_kill_9_during_a_write_leaves_the_last_whole_checkpoint(tmp_path, delay):
    """A process that rewrites a 16 MB checkpoint back to back, killed with SIGKILL:
    the file is always a whole checkpoint (old or new), and the temporary the kill left is removed by the next
    write of the same name."""
    path = tmp_path / "latest.pt"
    child = subprocess.Popen([sys.executable, "-c", WRITE_FOREVER, str(path)], cwd=REPO)
    deadline = time.time() + 60
    while not path.exists() and time.time() < deadline and child.poll() is None:
        time.sleep(0.01)
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.wait()
    saved = load(path)
    assert saved["i"] >= 0 and torch.equal(saved["w"], torch.full((4_000_000,), float(saved["i"])))
    strays = [p for p in tmp_path.iterdir() if p.name != "latest.pt"]
    assert all(p.name.startswith(".latest.pt.") and p.name.endswith(".tmp") for p in strays), strays
    save_checkpoint([path], {"i": -1})
    assert load(path)["i"] == -1 and sorted(tmp_path.iterdir()) == [path]


def test_metrics_resume_after_a_fid_line_keeps_the_training_time(tmp_path):
    """A checkpoint saved right after an FID line: the time trained comes from the last log line."""
    log = MetricsLog(tmp_path / "metrics.csv")
    log.append({"step": 10, "epoch": 1, "loss_d": "1.0", "loss_g": "1.0", "d_real": "0.5", "d_fake": "0.5",
                "images_per_s": "100", "elapsed_s": "12.50"})
    log.append({"step": 10, "epoch": 1, "fid": "99.0"})
    assert MetricsLog(tmp_path / "metrics.csv", resume_step=10).elapsed == 12.5


def test_resume_refuses_settings_that_do_not_fit_the_checkpoint():
    """Checked in-process against settings_from_checkpoint: a new batching mid-epoch, and flags that do not go
    with the saved settings."""
    ckpt = {"config": {**DEFAULTS, "batch_size": 128, "ema_kimg": 10.0}, "batch_in_epoch": 4}
    with pytest.raises(UserError, match="inside an epoch"):
        settings_from_checkpoint(ckpt, "latest.pt", {**DEFAULTS, "batch_size": 64}, {"batch_size"})
    settings_from_checkpoint({**ckpt, "batch_in_epoch": 0}, "x.pt", {**DEFAULTS, "batch_size": 64}, {"batch_size"})
    with pytest.raises(UserError, match="--ema-kimg"):
        settings_from_checkpoint(ckpt, "latest.pt", {**DEFAULTS, "ema": 0.99}, {"ema"})


def test_a_checkpoint_from_another_kind_of_device_is_one_line():
    cfg = {**DEFAULTS, "res": 32, "ngf": 8, "ndf": 8, "recal_samples": 8}
    state = TrainState(cfg, "cpu")
    saved = state.state_dict()
    saved["rng"]["noise"] = torch.zeros(16, dtype=torch.uint8)  # a CUDA generator's state is 16 bytes
    with pytest.raises(UserError, match="another kind of device"):
        TrainState(cfg, "cpu").load_state_dict(saved)


def test_a_stop_during_an_epochs_save_still_writes_latest(tmp_path, monkeypatch):
    """SIGTERM while an epoch's grid is being saved (latest.pt not due then): the run stops with latest.pt."""
    saves = []

    def save_and_get_stopped(state, outputs, epoch_done, write_latest):
        saves.append(write_latest)
        if len(saves) == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # lands inside the save, as a slow grid would let it
        original_save(state, outputs, epoch_done, write_latest)

    original_save = train.save
    monkeypatch.setattr(train, "save", save_and_get_stopped)
    monkeypatch.chdir(tmp_path)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as stopped:
            train.main([*TINY, "--toy-size", "64", "--epochs", "3", "--run", "s"])
    finally:
        signal.signal(signal.SIGINT, handlers[0])
        signal.signal(signal.SIGTERM, handlers[1])
    assert stopped.value.code == 128 + signal.SIGTERM
    assert saves == [False, True]  # the epoch's save did not write latest.pt; the stop did
    assert load(tmp_path / "checkpoints" / "s" / "latest.pt")["epoch"] == 1


@pytest.mark.parametrize("signals", [[signal.SIGINT], [signal.SIGTERM], [signal.SIGINT, signal.SIGTERM]],
                         ids=["SIGINT", "SIGTERM", "SIGINT-then-SIGTERM"])
def test_a_stopped_run_saves_and_exits_with_the_signals_status(signals, tmp_path, monkeypatch):
    """Ctrl-C or SIGTERM at iteration 2: latest.pt is saved there, the exit status is 130 or 143 (not 0, which
    says the run finished), and the run resumes. A SIGTERM after Ctrl-C (compare.py stopping a child that the
    terminal's Ctrl-C reached too) does not cut the save short: only the same signal twice means now."""
    def log_and_get_stopped(state, *args):
        original_log_line(state, *args)
        if state.step == 2:
            for signum in signals:
                os.kill(os.getpid(), signum)

    original_log_line = train.write_log_line
    monkeypatch.setattr(train, "write_log_line", log_and_get_stopped)
    stopped = run_script("train.py", *TINY, "--max-steps", "6", "--run", "s", cwd=tmp_path, check=False)
    assert stopped.returncode == 128 + signals[0], stopped.stderr[-2000:]
    assert "stopped at iteration 2; continue with" in stopped.stdout and "Traceback" not in stopped.stderr
    assert load(tmp_path / "checkpoints" / "s" / "latest.pt")["step"] == 2
    monkeypatch.setattr(train, "write_log_line", original_log_line)
    resumed = run_script("train.py", *TINY, "--resume", "auto", "--run", "s", "--max-steps", "3", cwd=tmp_path)
    assert "done: 3 iterations" in resumed.stdout


@pytest.mark.parametrize("seconds, drawn", [(1e9, [1, 6]), (0, [1, 2, 3, 4, 5, 6])])
def test_grids_and_figures_are_drawn_at_most_every_figure_seconds_and_at_the_end(tmp_path, monkeypatch, seconds,
                                                                                 drawn):
    """An epoch's grid, loss.png and report.html are drawn when FIGURE_SECONDS have passed (the first epoch
    draws), and always with a checkpoint (latest.pt at the end)."""
    plotted = []
    monkeypatch.setattr(train, "FIGURE_SECONDS", seconds)
    monkeypatch.setattr(train, "draw_run_figures", lambda out_dir, env, rows, warnings:
                        plotted.append(int(rows[-1]["epoch"])))
    monkeypatch.chdir(tmp_path)
    train.main([*TINY, "--toy-size", "32", "--epochs", "6", "--ckpt-every", "0", "--run", "f"])
    assert plotted == drawn
    samples = sorted(p.name for p in (tmp_path / "outputs" / "f" / "samples").iterdir())
    assert samples == [f"epoch_{e:03d}.png" for e in drawn]


def test_a_checkpoint_from_before_the_augmentation_metrics_resumes(tmp_path):
    """Checkpoints written before metrics.csv gained real_sign and augment_p: their log window is two slots
    shorter, and they hold no augment_p; they resume and log on."""
    run_script("train.py", *TINY, "--max-steps", "3", "--log-every", "2", "--run", "old", cwd=tmp_path)
    path = tmp_path / "checkpoints" / "old" / "latest.pt"
    ckpt = load(path)
    window = ckpt["log_window"]
    ckpt["log_window"] = torch.cat([window[:4], window[-1:]])
    del ckpt["augment_p"]
    ckpt["config"] = {k: v for k, v in ckpt["config"].items() if k not in ("ada_target", "ada_kimg")}
    del ckpt["format"]  # format 1: written before checkpoint formats were numbered
    save_checkpoint([path], ckpt)
    run_script("train.py", *TINY, "--max-steps", "4", "--log-every", "2", "--run", "old", "--resume", "auto",
               cwd=tmp_path)
    resumed = load(path)
    assert resumed["step"] == 4 and resumed["augment_p"].item() == 0.0 and len(resumed["log_window"]) == 7
    assert [r[0] for r in read_metrics(tmp_path / "outputs" / "old" / "metrics.csv")] == ["2", "3", "4"]


def test_a_checkpoint_from_before_the_default_recipe_resumes_as_it_was_trained(tmp_path):
    """A checkpoint written before --mbstd and --ema-kimg existed has neither key: it was trained without them, so it
    resumes and is read back without them, whatever today's defaults."""
    run_script("train.py", *TINY, "--mbstd", "0", "--ema-kimg", "0", "--max-steps", "2", "--run", "old", cwd=tmp_path)
    path = tmp_path / "checkpoints" / "old" / "latest.pt"
    ckpt = load(path)
    ckpt["config"] = {k: v for k, v in ckpt["config"].items() if k not in ("mbstd", "ema_kimg", "ema_rampup")}
    del ckpt["format"]
    save_checkpoint([path], ckpt)
    run_script("train.py", *TINY, "--max-steps", "3", "--run", "old", "--resume", "auto", cwd=tmp_path)
    resumed = load(path)
    assert resumed["step"] == 3 and (resumed["config"]["mbstd"], resumed["config"]["ema_kimg"]) == (0, 0.0)
    assert "G_ema" not in resumed and resumed["format"] == CHECKPOINT_FORMAT  # no EMA of G appeared on resume
    old = tmp_path / "old.pt"
    save_checkpoint([old], ckpt)
    D = discriminator_from_state(load_checkpoint(old), old)  # as latent.py project reads it: the D it was trained with
    assert not any(isinstance(layer, MinibatchStdDev) for layer in D.modules())


@pytest.mark.parametrize("argv, expected", [
    ([], {"batch_size": 64, "ema": 0.0, "ema_kimg": 10.0, "mbstd": 4}),  # the default recipe
    (["--ema", "0.999"], {"ema": 0.999, "ema_kimg": 0.0, "mbstd": 4}),
    (["--config", str(REPO / "configs" / "ema.toml")], {"ema": 0.999, "ema_kimg": 0.0, "mbstd": 0}),
    (["--loss", "wgan-gp", "--d-norm", "none"], {"ema_kimg": 10.0, "mbstd": 0}),
])
def test_the_default_recipe_steps_aside_for_what_it_cannot_go_with(argv, expected):
    cfg, _ = parse_settings(argv, "")
    assert {key: cfg[key] for key in expected} == expected


def test_the_default_recipe_asked_for_with_what_it_cannot_go_with_is_refused():
    with pytest.raises(UserError, match="give the EMA once"):
        parse_settings(["--ema", "0.999", "--ema-kimg", "10"], "")
    with pytest.raises(UserError, match="--mbstd mixes"):
        parse_settings(["--loss", "wgan-gp", "--d-norm", "none", "--mbstd", "4"], "")


def test_every_help_states_the_default_of_the_one_table():
    """--help takes each default from settings.SETTINGS, so a changed default cannot leave a stale help."""
    checked = 0
    for action in build_parser("")._actions:
        if DEFAULTS.get(action.dest) not in (None, ""):
            default = shown_default(DEFAULTS[action.dest])
            assert action.help.endswith(f" (default {default})"), action.help
            assert "(default" not in action.help[:-len(default) - 12], action.help  # said once, at the end
            checked += 1
    assert checked == len([key for key, value in DEFAULTS.items() if value not in (None, "")]) >= 50


def test_every_setting_is_declared_once_and_is_a_flag_in_the_docs_table():
    """One table: every key is one flag of train.py, and docs/training.md's table is the one made from it."""
    names = [s.name for settings in SETTINGS.values() for s in settings]
    assert len(names) == len(set(names)) == len(DEFAULTS)
    flags = {action.dest for action in build_parser("")._actions} - {"help"}
    assert flags == set(names)
    docs = (REPO / "docs" / "training.md").read_text()
    assert flag_table() in docs, ("docs/training.md's flag table differs from the settings: paste "
                                  "`python -c 'from fakefacegen.settings import flag_table; print(flag_table())'`")


def test_a_runs_settings_are_read_only():
    cfg, _ = parse_settings([], "")
    with pytest.raises(TypeError):
        cfg["lr_g"] = 1.0
    state = TrainState({**DEFAULTS, "res": 32, "ngf": 8, "ndf": 8}, "cpu")
    with pytest.raises(TypeError):
        state.cfg["batch_size"] = 1


def test_a_checkpoint_of_a_newer_format_is_refused_in_one_line(tmp_path):
    state = TrainState({**DEFAULTS, "res": 32, "ngf": 8, "ndf": 8, "recal_samples": 8}, "cpu")
    path = tmp_path / "new.pt"
    save_checkpoint([path], {**state.state_dict(), "format": CHECKPOINT_FORMAT + 1})
    with pytest.raises(UserError, match=f"format {CHECKPOINT_FORMAT + 1}.*git pull"):
        load_checkpoint(path)


def test_a_run_at_its_budget_says_how_to_extend_it_and_then_continues_exactly(tmp_path):
    """A capped run resumed with the same cap names the budget and the flag; resumed with a larger one it goes
    on exactly as a run that was given the larger budget from the start."""
    run_script("train.py", *TINY, "--max-steps", "10", "--run", "whole", cwd=tmp_path)
    run_script("train.py", *TINY, "--max-steps", "5", "--run", "capped", cwd=tmp_path)
    again = run_script("train.py", *TINY, "--resume", "auto", "--run", "capped", cwd=tmp_path)
    assert "the budget of --max-steps 5 it was given" in again.stdout
    assert "python train.py --resume auto --run capped --max-steps 10" in again.stdout
    run_script("train.py", *TINY, "--resume", "auto", "--run", "capped", "--max-steps", "10", cwd=tmp_path)
    whole, capped = (load(tmp_path / "checkpoints" / run / "latest.pt") for run in ("whole", "capped"))
    assert capped["step"] == whole["step"] == 10
    for name, tensor in whole["G"].items():
        assert torch.equal(tensor, capped["G"][name]), name
    assert read_metrics(tmp_path / "outputs" / "capped" / "metrics.csv") == \
        read_metrics(tmp_path / "outputs" / "whole" / "metrics.csv")
    run_script("train.py", *TINY, "--epochs", "1", "--run", "one", cwd=tmp_path)  # 8 iterations: a whole epoch
    done = run_script("train.py", *TINY, "--resume", "auto", "--run", "one", cwd=tmp_path)
    assert "the budget of --epochs 1 it was given" in done.stdout and "--run one --epochs 2" in done.stdout
