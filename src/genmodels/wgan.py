"""The Wasserstein GAN (Arjovsky et al. 2017) and its gradient penalty (Gulrajani et al. 2017).

The critic f_w estimates W1(P_r, P_theta) = max_{||f||_L <= 1} E_{P_r}[f(x)] - E_{P_theta}[f(x)];
the generator g_theta maps z ~ N(0, I) to samples. The losses below are written to be
*minimized*, each with the sign convention of the paper's Algorithm 1 in its comment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from genmodels.train import model_from_checkpoint, read_checkpoint

__all__ = [
    "ConvCritic",
    "ConvGenerator",
    "Critic",
    "DCGANConfig",
    "Generator",
    "WGANConfig",
    "clip_weights_",
    "critic_loss",
    "generator_loss",
    "gradient_penalty",
    "load_generator",
]


@dataclass
class WGANConfig:
    data_dim: int = 784  # D: a flattened 28 x 28 image, or 2 for the toy densities
    latent_dim: int = 64  # size of z ~ N(0, I)
    hidden_dims: tuple[int, ...] = (256, 512, 512)  # generator widths; the critic mirrors them
    image_output: bool = True  # generator ends in a sigmoid (pixels in [0, 1]); False: linear output


def _mlp(sizes: list[int], activation: type[nn.Module]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(n_in, n_out), activation()]
    return layers[:-1]  # no activation after the last layer


def _check_batch(name: str, x: torch.Tensor, size: int, network: nn.Module) -> torch.Tensor:
    """x (B, ...) as (B, size), once checked to be a non-empty batch of finite floats for ``network``."""
    if x.ndim < 2 or math.prod(x.shape[1:]) != size:
        raise ValueError(f"{name} must be a batch of shape (B, {size}), got {tuple(x.shape)}")
    if len(x) == 0:
        raise ValueError(f"empty batch: {name} has shape {tuple(x.shape)}; pass at least one example")
    weights = next(network.parameters()).dtype
    if x.dtype != weights and not torch.is_autocast_enabled(x.device.type):
        fix = f"{name}.float() / 255 for pixels 0..255" if x.dtype == torch.uint8 else f"{name}.to({weights})"
        raise ValueError(f"{name} has dtype {x.dtype}, the network's weights {weights}: convert with {fix}")
    x = x.reshape(len(x), size)  # (B, ...) -> (B, size)
    finite = torch.isfinite(x).all(dim=1)
    if not finite.all():
        raise ValueError(f"{name} has {int((~finite).sum())} of {len(x)} rows with NaN or infinite values: "
                         "the data, or the network that made them, is broken; find where they first appear")
    return x


class Generator(nn.Module):
    """g_theta: z (B, latent_dim) -> x (B, data_dim), in [0, 1] for images."""

    def __init__(self, config: WGANConfig):
        super().__init__()
        self.config = config
        layers = _mlp([config.latent_dim, *config.hidden_dims, config.data_dim], nn.ReLU)
        self.net = nn.Sequential(*layers, *([nn.Sigmoid()] if config.image_output else []))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(_check_batch("z", z, self.config.latent_dim, self))

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n samples g_theta(z), z ~ N(0, I): (n, data_dim)."""
        device = next(self.parameters()).device
        return self(torch.randn(n, self.config.latent_dim, generator=generator, device=device))


def _check_pixels(x: torch.Tensor) -> torch.Tensor:
    """Refuse images far outside [0, 1], the range of the generator's sigmoid (pixels 0..255 or data
    in [-1, 1] would be scored without complaint); interpolates and real data pass."""
    low, high = torch.aminmax(x.detach())
    if low < -0.5 or high > 1.5:
        raise ValueError(f"the image critic expects pixels in [0, 1], as the generator makes them, "
                         f"got values in [{low.item():.3g}, {high.item():.3g}]: scale pixels 0..255 "
                         "by x.float() / 255, and data in [-1, 1] by (x + 1) / 2")
    return x


class Critic(nn.Module):
    """f_w: x (B, data_dim) -> a real number per example (B,). No batch normalization: the
    gradient penalty constrains the gradient of f at single points, which batch statistics would
    couple across the batch."""

    def __init__(self, config: WGANConfig):
        super().__init__()
        self.config = config
        self.net = nn.Sequential(*_mlp([config.data_dim, *reversed(config.hidden_dims), 1],
                                       lambda: nn.LeakyReLU(0.2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_batch("x", x, self.config.data_dim, self)
        if self.config.image_output:
            _check_pixels(x)
        return self.net(x).squeeze(-1)  # (B, D) -> (B,)


@dataclass
class DCGANConfig:
    """Convolutional generator and critic for 28 x 28 images, after Radford et al.'s DCGAN, the
    architecture of Arjovsky et al.'s experiments: strided (transposed) convolutions, batch
    normalization in the generator, leaky ReLUs in the critic."""

    latent_dim: int = 64  # size of z ~ N(0, I)
    channels: int = 64  # feature maps at 14 x 14; twice as many at 7 x 7
    critic_batchnorm: bool = False  # batch normalization in the critic: never with a gradient penalty


class ConvGenerator(nn.Module):
    """g_theta: z (B, latent_dim) -> x (B, 784) in [0, 1]; z -> 2C x 7 x 7 -> C x 14 x 14 -> 1 x 28 x 28."""

    sample = Generator.sample  # n samples g_theta(z), z ~ N(0, I), as for the MLP generator

    def __init__(self, config: DCGANConfig):
        super().__init__()
        self.config = config
        c = config.channels
        self.project = nn.Sequential(
            nn.Linear(config.latent_dim, 2 * c * 7 * 7), nn.BatchNorm1d(2 * c * 7 * 7), nn.ReLU())
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1), nn.BatchNorm2d(c), nn.ReLU(),  # 7 -> 14
            nn.ConvTranspose2d(c, 1, 4, stride=2, padding=1), nn.Sigmoid(),  # 14 -> 28
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = _check_batch("z", z, self.config.latent_dim, self)
        if self.training and len(z) == 1:
            raise ValueError("one z in training mode: batch normalization needs at least two examples for "
                             "its batch statistics; call generator.eval() first to use its running "
                             "statistics (as for samples to look at), or pass at least two")
        h = self.project(z).reshape(len(z), 2 * self.config.channels, 7, 7)
        return self.net(h).reshape(len(z), 784)


class ConvCritic(nn.Module):
    """f_w: x (B, 784) in [0, 1] -> a real number per example (B,); 1 x 28 x 28 -> C x 14 x 14 ->
    2C x 7 x 7 -> 1."""

    def __init__(self, config: DCGANConfig):
        super().__init__()
        self.config = config
        c = config.channels
        self.net = nn.Sequential(
            nn.Conv2d(1, c, 4, stride=2, padding=1), nn.LeakyReLU(0.2),  # 28 -> 14
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1),  # 14 -> 7
            *([nn.BatchNorm2d(2 * c)] if config.critic_batchnorm else []), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(2 * c * 7 * 7, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_pixels(_check_batch("x", x, 784, self))
        return self.net(x.reshape(len(x), 1, 28, 28)).squeeze(-1)  # (B, 784) -> (B,)


def load_generator(path, map_location: str | torch.device | None = "cpu") -> tuple[nn.Module, dict]:
    """A published WGAN generator, MLP (:class:`Generator`) or convolutional (:class:`ConvGenerator`),
    whichever the checkpoint holds, in eval mode on ``map_location``: (generator, checkpoint)."""
    checkpoint = read_checkpoint(path)  # read and verified once
    if checkpoint["model_class"] == "ConvGenerator":
        return model_from_checkpoint(path, checkpoint, ConvGenerator, DCGANConfig, map_location)
    return model_from_checkpoint(path, checkpoint, Generator, WGANConfig, map_location)


def critic_loss(f_real: torch.Tensor, f_fake: torch.Tensor) -> torch.Tensor:
    """-(mean f_w(x) - mean f_w(g_theta(z))): the negative of the critic's W1 estimate.

    Algorithm 1 ascends g_w = grad_w [mean f_w(x) - mean f_w(g(z))]; minimizing this is the same.
    """
    return -(f_real.mean() - f_fake.mean())


def generator_loss(f_fake: torch.Tensor) -> torch.Tensor:
    """-mean f_w(g_theta(z)): Algorithm 1's g_theta = -grad_theta mean f_w(g_theta(z)), descended."""
    return -f_fake.mean()


@torch.no_grad()
def clip_weights_(critic: nn.Module, c: float) -> None:
    """w <- clip(w, -c, c) for every parameter of the critic, in place (after the optimizer step)."""
    if not 0 < c < math.inf:  # also refuses NaN
        raise ValueError(f"c must be a positive number, got {c}: the box [-c, c] bounds every weight "
                         "(Arjovsky et al. use c = 0.01)")
    for parameter in critic.parameters():
        parameter.clamp_(-c, c)


def gradient_penalty(
    critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor | None = None
) -> torch.Tensor:
    """E[(||grad f(x_hat)||_2 - 1)^2] at x_hat = eps x + (1 - eps) x_tilde, eps ~ U[0, 1] per example.

    Gulrajani et al. (2017), Algorithm 1, lines 6-7; multiply by lambda (10 in the paper) and add
    it to :func:`critic_loss`. The graph is kept, so the penalty trains the critic.
    """
    if real.shape != fake.shape:
        raise ValueError(f"real and fake batches must have the same shape, got {tuple(real.shape)} "
                         f"and {tuple(fake.shape)}")
    if not torch.is_grad_enabled():
        raise RuntimeError("gradient_penalty differentiates the critic at the interpolates and trains it "
                           "through that gradient: call it with gradients enabled, not inside "
                           "torch.no_grad() or torch.inference_mode()")
    if eps is None:
        eps = torch.rand(len(real), device=real.device)
    eps = eps.reshape(-1, *([1] * (real.ndim - 1)))  # one eps per example, broadcast over features
    x_hat = (eps * real + (1 - eps) * fake.detach()).requires_grad_(True)
    (gradient,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return ((gradient.reshape(len(real), -1).norm(dim=1) - 1) ** 2).mean()
