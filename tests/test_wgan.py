"""The WGAN's pieces: signs of the losses, clipping after the step, a penalty at interpolates."""

import pytest
import torch
from torch import nn

from genmodels.wgan import (
    Critic,
    Generator,
    WGANConfig,
    clip_weights_,
    critic_loss,
    generator_loss,
    gradient_penalty,
)

TOY = WGANConfig(data_dim=2, latent_dim=4, hidden_dims=(16, 16), image_output=False)


def test_shapes_and_ranges():
    config = WGANConfig(hidden_dims=(32,))
    generator, critic = Generator(config), Critic(config)
    images = generator.sample(5, generator=torch.Generator().manual_seed(0))
    assert images.shape == (5, 784) and images.min() >= 0 and images.max() <= 1
    assert critic(images).shape == (5,)
    assert critic(images.reshape(5, 1, 28, 28)).shape == (5,)  # images are flattened
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in critic.modules())


def test_loss_signs():
    """The critic's loss falls when it scores real data higher; the generator's when fakes score higher."""
    f_real, f_fake = torch.tensor([2.0, 4.0]), torch.tensor([-1.0, 1.0])
    assert critic_loss(f_real, f_fake).item() == pytest.approx(-(3.0 - 0.0))
    assert critic_loss(f_real + 1, f_fake) < critic_loss(f_real, f_fake)
    assert generator_loss(f_fake).item() == pytest.approx(0.0)
    assert generator_loss(f_fake + 1) < generator_loss(f_fake)


def test_critic_loss_gradient_is_algorithm_1s_ascent_direction():
    critic = Critic(TOY)
    real, fake = torch.randn(32, 2), torch.randn(32, 2) + 1
    loss = critic_loss(critic(real), critic(fake))
    gradients = torch.autograd.grad(loss, list(critic.parameters()))
    estimate = critic(real).mean() - critic(fake).mean()
    expected = torch.autograd.grad(estimate, list(critic.parameters()))
    for g, e in zip(gradients, expected, strict=True):
        torch.testing.assert_close(g, -e)


def test_weights_lie_in_the_box_after_every_critic_update():
    """Algorithm 1: w <- w + alpha RMSProp(w, g_w), then w <- clip(w, -c, c)."""
    torch.manual_seed(0)
    c = 0.01
    critic = Critic(TOY)
    optimizer = torch.optim.RMSprop(critic.parameters(), lr=0.05)  # large steps leave the box
    for _ in range(5):
        loss = critic_loss(critic(torch.randn(64, 2) * 3), critic(torch.randn(64, 2)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert max(p.abs().max().item() for p in critic.parameters()) > c  # the step left the box
        clip_weights_(critic, c)
        assert max(p.abs().max().item() for p in critic.parameters()) <= c


class Linear(nn.Module):
    """f(x) = u . x with a chosen gradient u everywhere."""

    def __init__(self, u):
        super().__init__()
        self.u = nn.Parameter(torch.as_tensor(u, dtype=torch.float32))

    def forward(self, x):
        return x.reshape(len(x), -1) @ self.u


def test_gradient_penalty_is_zero_for_a_unit_gradient_and_positive_otherwise():
    real, fake = torch.randn(16, 3), torch.randn(16, 3)
    unit = Linear(torch.tensor([0.6, 0.0, 0.8]))
    assert gradient_penalty(unit, real, fake).item() == pytest.approx(0.0, abs=1e-10)
    steep = Linear(torch.tensor([3.0, 0.0, 0.0]))
    assert gradient_penalty(steep, real, fake).item() == pytest.approx((3 - 1) ** 2)
    flat = Linear(torch.tensor([0.0, 0.5, 0.0]))
    assert gradient_penalty(flat, real, fake).item() == pytest.approx(0.25)


def test_gradient_penalty_is_evaluated_at_interpolates():
    """For f(x) = |x|^2 / 2 the gradient at x_hat is x_hat itself, so the penalty reveals x_hat."""

    class HalfSquare(nn.Module):
        def forward(self, x):
            return 0.5 * (x**2).sum(1)

    real = torch.tensor([[4.0, 0.0], [0.0, 2.0]])
    fake = torch.tensor([[0.0, 0.0], [0.0, -2.0]])
    eps = torch.tensor([0.25, 0.5])
    # x_hat = eps real + (1 - eps) fake = (1, 0) and (0, 0): norms 1 and 0.
    penalty = gradient_penalty(HalfSquare(), real, fake, eps=eps)
    assert penalty.item() == pytest.approx(((1 - 1) ** 2 + (0 - 1) ** 2) / 2)
    # Without eps the interpolates are random, strictly between the endpoints.
    torch.manual_seed(0)
    samples = [gradient_penalty(HalfSquare(), real[:1], fake[:1]).item() for _ in range(200)]
    # x_hat = (4 eps, 0), so the penalty (4 eps - 1)^2 ranges over [0, 9] as eps ranges over [0, 1].
    assert min(samples) >= 0 and max(samples) <= 9 + 1e-6 and len(set(samples)) > 100


def test_gradient_penalty_trains_the_critic_and_checks_shapes():
    critic = Critic(TOY)
    penalty = gradient_penalty(critic, torch.randn(8, 2), torch.randn(8, 2))
    penalty.backward()
    # Every weight matrix shapes grad_x f; biases of a piecewise-linear network do not (almost surely).
    weights = [p for name, p in critic.named_parameters() if name.endswith("weight")]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in weights)
    with pytest.raises(ValueError, match="same shape"):
        gradient_penalty(critic, torch.randn(8, 2), torch.randn(4, 2))


def test_dcgan_pair_maps_noise_to_images_and_images_to_one_number_each():
    from genmodels.wgan import ConvCritic, ConvGenerator, DCGANConfig

    config = DCGANConfig(channels=8)
    generator, critic = ConvGenerator(config), ConvCritic(config)
    images = generator.sample(5, generator=torch.Generator().manual_seed(0))
    assert images.shape == (5, 784) and images.min() >= 0 and images.max() <= 1
    assert critic(images).shape == (5,) and critic(images.reshape(5, 1, 28, 28)).shape == (5,)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in critic.modules())
    with_batchnorm = ConvCritic(DCGANConfig(critic_batchnorm=True))
    assert any(isinstance(m, nn.BatchNorm2d) for m in with_batchnorm.modules())
    with pytest.raises(ValueError, match=r"shape \(B, 784\)"):
        critic(torch.zeros(2, 28, 27))
    # clipping keeps every weight of the convolutional critic in the box, as for the MLP
    clip_weights_(critic, 0.01)
    assert all(p.abs().max() <= 0.01 for p in critic.parameters())


def test_load_generator_rebuilds_either_architecture(tmp_path):
    from genmodels.train import save_checkpoint
    from genmodels.wgan import ConvGenerator, DCGANConfig, load_generator

    z = torch.randn(3, 64, generator=torch.Generator().manual_seed(0))
    for model in (Generator(WGANConfig(hidden_dims=(32,))), ConvGenerator(DCGANConfig(channels=8))):
        path = save_checkpoint(tmp_path / f"{type(model).__name__}.pt", model.eval(), config=model.config)
        loaded, _ = load_generator(path)
        assert type(loaded) is type(model) and not loaded.training
        torch.testing.assert_close(loaded(z), model(z))
