"""One training iteration and what it is made of: losses, differentiable and adaptive augmentation, the CUDA
graph that replays it, and torchrun's processes."""
