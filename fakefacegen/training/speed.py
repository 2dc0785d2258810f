"""The speed policy: what `auto` means on each kind of device (bf16 autocast, channels_last, the CUDA graph), the
settings a run cannot have, and the memory format the models are put in. docs/speed.md has the measurements."""
import torch

from fakefacegen.cli import UserError


def native_bf16(device):
    """Whether the hardware itself computes in bf16: CUDA GPUs of compute capability 8.0 and up (Ampere,
    Hopper; torch.cuda.is_bf16_supported() also says yes on a T4 or V100, which emulate it), and CPUs with
    AVX-512, where oneDNN has bf16 kernels (on AVX2 it emulates them: a step was 18x slower)."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    return device.type == "cpu" and torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def speed_settings(cfg, device, processes=1):
    """Resolve `auto` to what was measured fastest on this kind of device (docs/speed.md).
    CUDA: the iteration as a CUDA graph, channels_last, and bf16 autocast where the GPU has bf16 (H100, 64 px,
    batch 128: 48.2k img/s, against 27.4k in fp32 and 14.5k for the best eager step). An eager CUDA step is
    bound by kernel launches, and there autocast's casts made it slower (11.8k against 14.5k), so without the
    graph `auto` keeps fp32. AVX-512 CPU: bf16 autocast and channels_last (2.2x the textbook loop at 64 px).
    Elsewhere fp32, the default layout and no graph. `cuda_graph_off` says why the graph is off where it
    was wanted."""
    blocker = check_speed_flags(cfg, device, processes)
    graph = cfg["cuda_graph"] in ("auto", "on") and device.type == "cuda" and blocker is None
    fast_cpu = device.type == "cpu" and native_bf16(device)  # oneDNN's fast bf16 kernels are NHWC
    return {"cuda_graph": graph,
            "channels_last": cfg["channels_last"] == "on"
            or (cfg["channels_last"] == "auto" and (device.type == "cuda" or fast_cpu)),
            "amp": cfg["amp"] == "bf16" or (cfg["amp"] == "auto" and (fast_cpu or graph and native_bf16(device))),
            "cuda_graph_off": blocker if cfg["cuda_graph"] != "off" and device.type == "cuda" else None}


def check_speed_flags(cfg, device, processes=1):
    """A speed setting asked for that this run cannot have is refused (train.py asks before loading data);
    returns why the iterations cannot be a CUDA graph (None: they can)."""
    if cfg["cuda_graph"] == "on" and device.type != "cuda":
        raise UserError(f"--cuda-graph on needs a CUDA GPU, and this run trains on {device.type}: use "
                        "--cuda-graph auto (or off)")
    blocker = cuda_graph_blocker(cfg, processes)
    if cfg["cuda_graph"] == "on" and blocker:
        raise UserError(f"--cuda-graph on: {blocker}; use --cuda-graph auto (or off) to train eagerly")
    return blocker


def cuda_graph_blocker(cfg, processes):
    """Why this run's iterations cannot be one CUDA graph (None: they can)."""
    if processes > 1:
        return ("under torchrun each iteration runs eagerly: capturing DDP's all-reduce needs NCCL's "
                "asynchronous error handling off and DDP built on a side stream, which this repo does not do")
    if cfg["lr_schedule"] != "constant" and cfg["optim"] != "adam":
        return (f"--lr-schedule {cfg['lr_schedule']} changes the learning rate every iteration, which a graph "
                f"reads from a device tensor: fused Adam does, --optim {cfg['optim']} does not")
    return None


def describe_speed(speed):
    """The speed settings in a few words, for the line a run starts with."""
    parts = [name for name, on in (("CUDA graph", speed["cuda_graph"]), ("bf16 autocast", speed["amp"]),
                                   ("channels_last", speed["channels_last"])) if on]
    return ", ".join(parts) or "fp32"


def use_tf32(device):
    """TF32 matrix products for training on CUDA (evaluation switches them off for FID's features)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True


def prepare_models(state, speed):
    """The memory format the speed settings ask for, on G, D and the EMA of G (whose update mixes it with G's
    weights), and on the optimisers' state, which a checkpoint holds in the layout of the run that wrote it:
    CUDA's fused Adam refuses state strided otherwise than its parameters."""
    memory_format = torch.channels_last if speed["channels_last"] else torch.contiguous_format
    for model in (state.G, state.D, state.G_ema):
        if model is not None:
            model.to(memory_format=memory_format)
    for optimizer in (state.opt_g, state.opt_d):
        for param, param_state in optimizer.state.items():
            for key, value in param_state.items():
                if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                    param_state[key] = torch.empty_like(param).copy_(value)  # the parameter's layout
