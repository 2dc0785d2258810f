"""Differentiable augmentation (Zhao et al., 2020): the same random transforms on real and fake images before D,
and the adaptive probability of applying them (Karras et al., 2020, StyleGAN2-ADA).

D sees augmented images only, so it cannot memorise a small dataset, while G still receives gradients
through every transform. Each image draws its own parameters; each transform moves the whole image
(all channels together). `generator` makes the draws part of the run's saved random state.

Adaptive: each transform is applied to each image with probability p, and p follows D's overfitting. The
signal is the mean sign of D's raw outputs on real images (how many reals D is sure of): above the target,
p rises, below, it falls, at a speed that takes it from 0 to 1 in --ada-kimg thousand images. Augmenting
"only as much as D needs" keeps the early images clean (a short run is not slowed) and a long run on few
photos from overfitting.
"""
import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")


def parse_policy(text):
    """'color,translation' -> ('color', 'translation'); '' or 'none' -> ()."""
    names = tuple(n.strip() for n in (text or "").split(",") if n.strip() and n.strip() != "none")
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise ValueError(f"unknown augmentation {', '.join(unknown)}: use any of {', '.join(POLICIES)}")
    return names


def augment(x, policy, generator=None, probability=None):
    """The policy's transforms in turn; with `probability` (a 0-dim tensor), each transform is applied to each
    image with that probability, drawn in float32 whatever x's dtype (bf16 would round the odds)."""
    for name in policy:
        moved = TRANSFORMS[name](x, generator)
        if probability is None:
            x = moved
        else:
            draws = torch.rand(x.shape[0], 1, 1, 1, device=x.device, generator=generator)
            x = torch.where(draws < probability, moved, x)
    return x


def overfitting(real_logits):
    """ADA's overfitting signal r_t: the mean sign of D's raw outputs on real images (0: D cannot tell, 1: D is
    sure of every real image)."""
    return torch.sign(real_logits.detach().float()).mean()


@torch.no_grad()
def adapt_probability(probability, signal, target, images, ada_kimg):
    """Move the augmentation probability in place, on the device (no host sync, so a CUDA graph can hold it):
    up by images / (ada_kimg * 1000) when the signal is above the target, down by as much below it."""
    probability.add_(torch.sign(signal - target) * (images / (ada_kimg * 1000))).clamp_(0, 1)


def _rand(x, *shape, generator):
    """Uniform draws per image in float32, whatever x's dtype: in bf16 (fakes under autocast) the draws would be
    rounded to 8 bits, which skews the odds of each shift and cut position by a few percent."""
    return torch.rand(x.shape[0], *shape, device=x.device, generator=generator)


def color(x, generator=None):
    """Random brightness (+-0.5), saturation (0..2x) and contrast (0.5..1.5x), as in DiffAugment."""
    x = x + (_rand(x, 1, 1, 1, generator=generator) - 0.5).to(x.dtype)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand(x, 1, 1, 1, generator=generator) * 2).to(x.dtype) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(x, 1, 1, 1, generator=generator) + 0.5).to(x.dtype) + mean


def translation(x, generator=None, ratio=0.125):
    """Shift each image by up to 1/8 of its size, filling with zeros (a differentiable gather)."""
    b, _, h, w = x.shape
    max_dy, max_dx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = (_rand(x, generator=generator) * (2 * max_dy + 1)).long().clamp(max=2 * max_dy) - max_dy
    dx = (_rand(x, generator=generator) * (2 * max_dx + 1)).long().clamp(max=2 * max_dx) - max_dx
    padded = F.pad(x, (max_dx, max_dx, max_dy, max_dy))
    rows = (torch.arange(h, device=x.device)[None, :] - dy[:, None] + max_dy)  # (b, h)
    cols = (torch.arange(w, device=x.device)[None, :] - dx[:, None] + max_dx)  # (b, w)
    out = padded.gather(2, rows[:, None, :, None].expand(b, x.shape[1], h, padded.shape[3]))
    return out.gather(3, cols[:, None, None, :].expand(b, x.shape[1], h, w))


def cutout(x, generator=None, ratio=0.5):
    """Zero one square of half the image size at a random place in each image."""
    b, _, h, w = x.shape
    size_y, size_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = (_rand(x, generator=generator) * (h + 1 - size_y % 2)).long()
    cx = (_rand(x, generator=generator) * (w + 1 - size_x % 2)).long()
    ys = torch.arange(h, device=x.device)[None, :]
    xs = torch.arange(w, device=x.device)[None, :]
    inside_y = ((ys - cy[:, None] + size_y // 2) >= 0) & ((ys - cy[:, None] + size_y // 2) < size_y)
    inside_x = ((xs - cx[:, None] + size_x // 2) >= 0) & ((xs - cx[:, None] + size_x // 2) < size_x)
    keep = ~(inside_y[:, :, None] & inside_x[:, None, :])
    return x * keep[:, None, :, :].to(x.dtype)


TRANSFORMS = {"color": color, "translation": translation, "cutout": cutout}
