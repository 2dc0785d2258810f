"""GAN objectives on D's logits: DCGAN's BCE, hinge, WGAN (weight clipping) and WGAN-GP (gradient penalty),
the R1 penalty on real images, balanced consistency and LeCam regularisation.

Each loss is a pair: d_loss(real_logits, fake_logits) for D, g_loss(fake_logits) for G. D never applies a
sigmoid itself; for BCE the logits go through binary_cross_entropy_with_logits, Sigmoid + BCE made stable.
"""
import torch
import torch.nn.functional as F

from fakefacegen.training import diffaug

LOSSES = ("bce", "hinge", "wgan", "wgan-gp")
G_LOSSES = ("nonsaturating", "saturating")


def d_loss(kind, real_logits, fake_logits, real_target=1.0):
    """real_target < 1 is one-sided label smoothing (BCE only): D's target for real images, never for fakes."""
    if kind == "bce":
        return (F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, real_target))
                + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
    if kind == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    # wgan, wgan-gp: the critic's estimate of the Wasserstein distance, negated to be minimised
    return fake_logits.mean() - real_logits.mean()


def g_loss(kind, fake_logits, g_form="nonsaturating"):
    if kind == "bce":
        if g_form == "saturating":  # the original minimax objective: min log(1 - D(G(z))), which stalls
            return -F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    return -fake_logits.mean()


def gradient_penalty(D, real, fake, generator=None):
    """WGAN-GP: E[(||grad_x D(x)||_2 - 1)^2] at random points between real and fake samples (per sample)."""
    eps = torch.rand(real.shape[0], *[1] * (real.dim() - 1), device=real.device, generator=generator)
    mixed = (eps * real + (1 - eps) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(D(mixed).sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


def r1_penalty(critic, real):
    """R1 (Mescheder et al., 2018): E[||grad_x D(x)||^2] on real images, which keeps D flat where the data is;
    the caller weights it by gamma / 2."""
    x = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return grad.float().flatten(1).square().sum(1).mean()


def consistency_penalty(critic, real, fake, real_logits, fake_logits, generator=None):
    """Balanced consistency regularisation (bCR, Zhao et al. 2021, "Improved Consistency Regularization for
    GANs"): D should score an image and its translated copy alike, real and fake both; the mean squared
    difference of the logits. A translation by up to 1/8 of the side, as in the paper, drawn from `generator`."""
    moved_real = critic(diffaug.translation(real, generator))
    moved_fake = critic(diffaug.translation(fake, generator))
    return (moved_real - real_logits).square().mean() + (moved_fake - fake_logits).square().mean()


def lecam_penalty(real_logits, fake_logits, anchors):
    """LeCam regularisation (Tseng et al. 2021, "Regularizing Generative Adversarial Networks under Limited
    Data"): D's logits on reals are kept from rising above the moving average of its logits on fakes, and those
    on fakes from falling below the average on reals, which bounds how far D can pull the two apart on a small
    set. anchors: (average on reals, average on fakes)."""
    return F.relu(real_logits - anchors[1]).square().mean() + F.relu(anchors[0] - fake_logits).square().mean()


@torch.no_grad()
def clip_weights(params, limit):
    """WGAN's Lipschitz constraint: every parameter of the critic into [-limit, limit]."""
    for p in params:
        p.clamp_(-limit, limit)
