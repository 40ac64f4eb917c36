"""Bad input to a public entry point is a ValueError that names the argument, never a silent wrong
answer or a raw error from deep inside torch; valid input at the edges is still accepted."""

import math

import numpy as np
import pytest
import torch

from genmodels.diffusion import (
    NoiseSchedule,
    loss_simple,
    p_mean_variance,
    predict_x0,
    q_posterior,
    q_sample,
    vlb_terms,
)
from genmodels.metrics import frechet_distance, kernel_inception_distance, precision_recall
from genmodels.unet import UNet, UNetConfig
from genmodels.vae import VAE, VAEConfig, elbo_terms, iwae_bound
from genmodels.wgan import Critic, Generator, WGANConfig, gradient_penalty

schedule = NoiseSchedule(T=10)


def says_zero(xt, t):
    return torch.zeros_like(xt)


ENTRY_POINTS = {
    "q_sample": lambda x, t: q_sample(schedule, x, t),
    "q_posterior": lambda x, t: q_posterior(schedule, x, x, t),
    "predict_x0": lambda x, t: predict_x0(schedule, x, t, x),
    "p_mean_variance": lambda x, t: p_mean_variance(says_zero, schedule, x, t),
    "loss_simple": lambda x, t: loss_simple(says_zero, schedule, x, t),
    "vlb_terms": lambda x, t: vlb_terms(says_zero, schedule, x, t, decoder="gaussian"),
}


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_timesteps_must_be_integers_in_1_to_T_one_per_example(name):
    call, x = ENTRY_POINTS[name], torch.randn(2, 3)
    for step in (-1, 0, schedule.T + 1):  # -1 used to wrap around to t = T; 0 reached log(beta_0 = 0)
        with pytest.raises(ValueError, match=r"t must lie in 1\.\.T = 1\.\.10, got"):
            call(x, torch.tensor([step, 1]))
    with pytest.raises(ValueError, match="t must hold integer timesteps.*torch.float32"):
        call(x, torch.tensor([2.5, 1.0]))
    with pytest.raises(ValueError, match=r"t must be a tensor of shape \(B,\) = \(2,\).*got \(3,\)"):
        call(x, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"shape \(B,\) = \(2,\).*got int"):
        call(x, 3)
    for step in (1, schedule.T):  # both ends of the range are valid
        assert torch.isfinite(torch.as_tensor(call(x, torch.full((2,), step))[0])).all()


@pytest.mark.parametrize(("beta_1", "beta_T", "named"), [
    (1e-4, 1.5, "beta_T = 1.5"),  # alpha_bar would turn negative
    (1e-4, 1.0, "beta_T = 1.0"),  # alpha_bar_T = 0: x_0 cannot be recovered from x_T
    (0.0, 0.02, "beta_1 = 0.0"),  # beta_tilde_2 = 0 and its log is -inf
    (-0.1, 0.02, "beta_1 = -0.1"),
    (math.nan, 0.02, "beta_1 = nan"),
])
def test_linear_schedule_needs_betas_in_the_open_unit_interval(beta_1, beta_T, named):
    with pytest.raises(ValueError, match=rf"{named} lies outside \(0, 1\)"):
        NoiseSchedule(T=10, beta_1=beta_1, beta_T=beta_T)
    assert (NoiseSchedule(T=10, beta_1=1e-4, beta_T=0.5).alpha_bar > 0).all()


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return UNet(UNetConfig(channels=8, groups=4, dropout=0.0)).eval()


def test_unet_rejects_bad_timesteps_dtypes_and_empty_batches(unet):
    x = torch.randn(2, 1, 28, 28)
    for t in (torch.tensor([-3, 5]), torch.tensor([2.5, 5.0]), torch.tensor([math.nan, 5.0])):
        with pytest.raises(ValueError, match="t must hold non-negative integer timesteps"):
            unet(x, t)
    with pytest.raises(ValueError, match=r"dtype torch\.uint8.*x\.float\(\)\.div\(127\.5\)\.sub\(1\)"):
        unet(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"dtype torch\.float64.*torch\.float32"):
        unet(x.double(), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="empty batch"):
        unet(torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long))
    torch.testing.assert_close(unet(x, torch.tensor([3.0, 7.0])), unet(x, torch.tensor([3, 7])))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert unet(x, torch.tensor([3, 7])).shape == x.shape


IMAGES = WGANConfig(hidden_dims=(32,))


def test_image_critic_wants_finite_float_pixels_in_0_1_of_its_size():
    critic = Critic(IMAGES)
    with pytest.raises(ValueError, match=r"pixels in \[0, 1\].*got values in \[0, 255\].*x\.float\(\) / 255"):
        critic(torch.randint(0, 256, (4, 784)).float())
    with pytest.raises(ValueError, match=r"got values in \[-1, 1\].*\(x \+ 1\) / 2"):
        critic(torch.linspace(-1, 1, 784).expand(4, 784))
    with pytest.raises(ValueError, match="x has 4 of 4 rows with NaN or infinite values"):
        critic(torch.full((4, 784), math.nan))
    with pytest.raises(ValueError, match=r"x must be a batch of shape \(B, 784\).*got \(4, 1, 32, 32\)"):
        critic(torch.rand(4, 1, 32, 32))
    with pytest.raises(ValueError, match=r"x has dtype torch\.uint8.*x\.float\(\) / 255"):
        critic(torch.randint(0, 256, (4, 784), dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"x has dtype torch\.float64"):
        critic(torch.rand(4, 784, dtype=torch.float64))
    with pytest.raises(ValueError, match="empty batch"):
        critic(torch.rand(0, 784))
    real, fake = torch.rand(8, 784), Generator(IMAGES).sample(8).detach()
    assert gradient_penalty(critic, real, fake).item() >= 0  # interpolates stay in [0, 1]
    toy = Critic(WGANConfig(data_dim=2, latent_dim=4, hidden_dims=(16,), image_output=False))
    assert toy(torch.tensor([[-40.0, 300.0]])).shape == (1,)  # toy densities have no pixel range


def test_generator_wants_finite_float_noise_of_its_latent_size():
    generator = Generator(IMAGES)
    with pytest.raises(ValueError, match="z has 4 of 4 rows with NaN or infinite values"):
        generator(torch.full((4, 64), math.nan))
    with pytest.raises(ValueError, match=r"z must be a batch of shape \(B, 64\).*got \(4, 32\)"):
        generator(torch.randn(4, 32))
    with pytest.raises(ValueError, match=r"z has dtype torch\.int64"):
        generator(torch.zeros(4, 64, dtype=torch.long))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a bfloat16 batch reaches the critic under autocast
        assert Critic(IMAGES)(generator.sample(3)).shape == (3,)


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return VAE(VAEConfig(hidden_dims=(16,), latent_dim=4))


def test_vae_rejects_other_dtypes_and_empty_batches(vae):
    binary = (torch.rand(3, 1, 28, 28) > 0.5).float()
    with pytest.raises(ValueError, match=r"x has dtype torch\.uint8.*binarize\(x\.float\(\) / 255\)"):
        elbo_terms(vae, binary.to(torch.uint8))
    with pytest.raises(ValueError, match=r"x has dtype torch\.float64.*torch\.float32"):
        iwae_bound(vae, binary.double(), k=2)
    with pytest.raises(ValueError, match=r"x has dtype torch\.bool"):
        elbo_terms(vae, binary.bool())
    with pytest.raises(ValueError, match="empty batch"):
        elbo_terms(vae, torch.zeros(0, 1, 28, 28))
    with pytest.raises(ValueError, match=r"z has dtype torch\.float64"):
        vae.decode(torch.zeros(2, 4, dtype=torch.float64))
    assert elbo_terms(vae, binary).elbo.shape == (3,)


def test_iwae_bound_needs_at_least_one_sample(vae):
    x = (torch.rand(3, 784) > 0.5).float()
    with pytest.raises(ValueError, match="k must be a whole number, at least 1.*got 0"):
        iwae_bound(vae, x, k=0)
    with pytest.raises(ValueError, match="chunk must be a whole number, at least 1.*got 0"):
        iwae_bound(vae, x, k=5, chunk=0)


def test_precision_recall_and_kid_need_a_positive_k_and_subsets():
    features = np.random.default_rng(0).standard_normal((50, 4))
    with pytest.raises(ValueError, match="k must be at least 1.*got 0"):  # k = 0 gave (0.0, 0.0)
        precision_recall(features, features + 0.1, k=0)
    with pytest.raises(ValueError, match="subsets must be at least 1.*got 0"):  # gave (nan, nan)
        kernel_inception_distance(features, features, subsets=0)
    with pytest.raises(ValueError, match="subset_size must be at least 2.*got 1"):
        kernel_inception_distance(features, features, subset_size=1)


def test_frechet_distance_needs_symmetric_positive_semidefinite_covariances():
    mu, identity = np.zeros(3), np.eye(3)
    indefinite = np.diag([1.0, 1.0, -1.0])
    with pytest.raises(ValueError, match=r"sigma1 is not positive semi-definite: .* eigenvalue is -1,"):
        frechet_distance(mu, indefinite, mu, identity)  # gave -2.0
    with pytest.raises(ValueError, match="sigma2 is not positive semi-definite"):
        frechet_distance(mu, identity, mu, -identity)  # gave 0.0
    lopsided = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    with pytest.raises(ValueError, match=r"sigma1 is not symmetric.*\|sigma1 - sigma1\^T\| is 0\.5"):
        frechet_distance(mu, lopsided, mu, identity)
    # Singular covariances are covariances: rank one (rounding leaves eigenvalues of about -1e-17) and zero.
    v = np.array([1.0, 2.0, -1.0]) / math.sqrt(3)
    rank_one = np.outer(v, v)
    assert frechet_distance(mu, rank_one, mu, np.zeros((3, 3))) == pytest.approx(np.trace(rank_one))
    features = np.random.default_rng(1).standard_normal((5, 20))  # 5 samples of 20 features
    rank_four = np.cov(features, rowvar=False)
    # square roots of eigenvalues that are zero up to rounding (~1e-16) leave about 1e-7
    assert frechet_distance(np.zeros(20), rank_four, np.zeros(20), rank_four) == pytest.approx(0.0, abs=1e-5)


# --------------------------------------------------------------------------------------------
# Mistakes that used to give numbers without an error


def test_a_v_network_loaded_as_a_bare_unet_is_refused_with_the_loader_to_use():
    from genmodels.diffusion import load_ddpm
    from genmodels.unet import load_unet

    published = __import__("pathlib").Path(__file__).resolve().parents[1] / "checkpoints" / "ddpm.pt"
    with pytest.raises(ValueError, match=r"predicts 'v' on the noise schedule.*load_ddpm.*raw=True"):
        load_unet(published)
    network, _ = load_unet(published, raw=True)
    model, ddpm_schedule, _ = load_ddpm(published)
    assert isinstance(network, UNet) and ddpm_schedule.T == 1000


def test_a_model_output_that_would_broadcast_is_refused():
    x0 = torch.zeros(3, 1, 28, 28)
    t = torch.full((3,), 5)
    for squeezed in (lambda x, t: torch.zeros(len(x), 1, 1, 1), lambda x, t: torch.zeros(1, 1, 28, 28)):
        with pytest.raises(ValueError, match=r"model returned \(.*\) for x_t of shape \(3, 1, 28, 28\)"):
            loss_simple(squeezed, schedule, x0, t)
        with pytest.raises(ValueError, match="the model returned"):
            p_mean_variance(squeezed, schedule, x0, t)
    from genmodels.diffusion import ddim_sample, dpm_solver_2m_sample

    with pytest.raises(ValueError, match="the model returned"):
        ddim_sample(lambda x, t: torch.zeros(len(x), 1, 1, 1), schedule, (2, 1, 28, 28), steps=3)
    with pytest.raises(ValueError, match="the model returned"):
        dpm_solver_2m_sample(lambda x, t: torch.zeros(len(x), 1, 1, 1), schedule, (2, 1, 28, 28), steps=3)


def test_bound_options_and_ranges_are_checked():
    from genmodels.diffusion import prior_term

    x0, t = torch.zeros(2, 1, 4, 4), torch.full((2,), 1)
    with pytest.raises(ValueError, match=r"decoder must be one of 'discretized', 'gaussian', got 'discrete'"):
        vlb_terms(says_zero, schedule, x0, t, decoder="discrete")
    with pytest.raises(ValueError, match=r"variance must be one of 'beta', 'beta_tilde', got 'beta-tilde'"):
        vlb_terms(says_zero, schedule, x0, t, variance="beta-tilde")
    with pytest.raises(ValueError, match="variance must be one of"):
        p_mean_variance(says_zero, schedule, x0, t, variance="tilde")
    with pytest.raises(ValueError, match=r"256 levels in \[-1, 1\].*x \* 2 - 1"):
        vlb_terms(says_zero, schedule, torch.full((2, 1, 4, 4), 255.0), t)
    vlb_terms(says_zero, schedule, torch.full((2, 1, 4, 4), 3.0), t, decoder="gaussian")  # no grid to fit
    with pytest.raises(ValueError, match=r"dtype torch.uint8.*floats in \[-1, 1\]"):
        prior_term(schedule, torch.zeros(2, 1, 4, 4, dtype=torch.uint8))


def test_snr_and_dpm_solver_check_their_timesteps():
    from genmodels.diffusion import dpm_solver_2m_sample, min_snr_weight, snr

    for bad in (torch.tensor([0, 3]), torch.tensor([-1, 3]), torch.tensor([11, 3])):
        with pytest.raises(ValueError, match=r"t must lie in 1..T"):
            snr(schedule, bad)
        with pytest.raises(ValueError, match=r"t must lie in 1..T"):
            min_snr_weight(schedule, bad)
    with pytest.raises(ValueError, match="pass steps or timesteps, not both"):
        dpm_solver_2m_sample(says_zero, schedule, (2, 3), steps=7, timesteps=[9, 5, 1])
    with pytest.raises(ValueError, match=r"steps must lie in 2..T = 2..10, got 0"):
        dpm_solver_2m_sample(says_zero, schedule, (2, 3), steps=0)
    with pytest.raises(ValueError, match="timesteps must decrease strictly"):
        dpm_solver_2m_sample(says_zero, schedule, (2, 3), timesteps=[9.0, 5.5, 1.0])
    as_tensor = dpm_solver_2m_sample(says_zero, schedule, (2, 3), timesteps=torch.tensor([9, 5, 1]),
                                     generator=torch.Generator().manual_seed(0))
    as_list = dpm_solver_2m_sample(says_zero, schedule, (2, 3), timesteps=[9, 5, 1],
                                   generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(as_tensor, as_list)


def test_kid_on_sets_no_larger_than_a_subset_has_no_spread_to_report():
    own = np.random.default_rng(0)
    a, b = own.standard_normal((200, 4)), own.standard_normal((200, 4)) + 1
    kid, spread = kernel_inception_distance(a, b, subsets=10, subset_size=1000)
    assert kid > 0 and math.isnan(spread)  # ten copies of one estimate are not a measured spread
    kid_half, spread_half = kernel_inception_distance(a, b, subsets=10, subset_size=100)
    assert spread_half > 0


def test_legible_share_refuses_a_percentage_and_a_classifier_without_class_logits():
    from genmodels.features import legible_share

    images = torch.zeros(4, 1, 28, 28)
    classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\) \(a probability, not a percentage\)"):
        legible_share(classifier, images, confidence=90)
    with pytest.raises(ValueError, match="confidence must lie in"):
        legible_share(classifier, images, confidence=1.0)
    with pytest.raises(ValueError, match=r"must return class logits, one row per image: \(4, number of"):
        legible_share(torch.nn.Identity(), images)
    with pytest.raises(ValueError, match="no images: legible_share needs at least one"):
        legible_share(classifier, images[:0])


def test_reference_checks_refuses_no_images_before_it_runs_the_classifier():
    from genmodels.features import ClassifierConfig, DigitReference, MNISTClassifier, reference_checks

    network = MNISTClassifier(ClassifierConfig(channels=(4, 8), feature_dim=8))
    reference = DigitReference(torch.zeros(10, 8, dtype=torch.float64), torch.eye(8, dtype=torch.float64),
                               1.0, torch.zeros(10), 0.99)
    with pytest.raises(ValueError, match="no images: reference_checks needs at least one"):
        reference_checks(network, torch.zeros(0, 1, 28, 28), reference)


def test_the_digit_reference_refuses_a_share_as_percentage_unlabelled_or_missing_digits():
    from genmodels.features import (
        ClassifierConfig,
        DigitReference,
        MNISTClassifier,
        fit_digit_reference,
        legible_share,
    )

    network = MNISTClassifier(ClassifierConfig(channels=(4, 8), feature_dim=8))
    images, labels = torch.zeros(20, 1, 28, 28), torch.arange(20) % 10
    with pytest.raises(ValueError, match=r"coverage must lie in \(0, 1\) \(a share of real digits\)"):
        fit_digit_reference(network, images, labels, images, coverage=99)
    with pytest.raises(ValueError, match="20 images but 19 labels: give one label per image"):
        fit_digit_reference(network, images, labels[:19], images)
    with pytest.raises(ValueError, match=r"the labels hold the digits \[0, 1, 2, 3, 4\]; fitting needs "
                                         "images of every digit 0-9"):
        fit_digit_reference(network, images, labels % 5, images)
    reference = DigitReference(torch.zeros(10, 8), torch.eye(8), 1.0, torch.zeros(10), 0.99)
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    with pytest.raises(ValueError, match=r"a reference needs the classifier's features and its head "
                                         r".*Sequential"):
        legible_share(plain, images, reference=reference)


def test_the_convolutional_critic_and_clipping_refuse_wrong_scales():
    from genmodels.wgan import ConvCritic, DCGANConfig, clip_weights_

    critic = ConvCritic(DCGANConfig(channels=4))
    images = torch.rand(3, 784)
    assert critic(images).shape == (3,)
    for wrong in (images * 255, images * 2 - 1.8):
        with pytest.raises(ValueError, match=r"expects pixels in \[0, 1\]"):
            critic(wrong)
    for c in (-0.01, 0.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="c must be a positive number"):
            clip_weights_(critic, c)
    clip_weights_(critic, 0.01)
    assert max(p.abs().max().item() for p in critic.parameters()) <= 0.01


def test_langevin_refuses_infinite_scores_and_warns_when_the_chain_diverges():
    from genmodels.langevin import dsm_loss, langevin_sample

    x0 = torch.zeros(5, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="NaN or infinite values at the starting particles"):
        langevin_sample(lambda x: torch.full_like(x, math.inf), x0, 0.1, 3)
    with pytest.raises(ValueError, match="step_size must be positive, got inf"):
        langevin_sample(lambda x: -x, x0, math.inf, 3)
    with pytest.warns(RuntimeWarning, match=r"the chain diverged: 5 of 5 particles.*smaller step"):
        langevin_sample(lambda x: -x, x0 + 1, 3.0, 2000, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"score_model returned \(5, 1\) for x of shape \(5, 2\)"):
        dsm_loss(lambda x: x[:, :1], x0, 0.1)


def test_a_nan_image_is_refused_rather_than_drawn_blank():
    from genmodels.plotting import image_grid

    images = torch.rand(4, 1, 28, 28)
    images[2, 0, 3, 3] = math.nan
    with pytest.raises(ValueError, match="1 of 4 images hold NaN pixels"):
        image_grid(images)


def test_devices_configs_and_loader_arguments_get_clear_errors(monkeypatch, tmp_path):
    from genmodels.train import CheckpointError, load_model, pick_device, save_checkpoint

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"pick_device\('cuda'\), but this machine has no CUDA device"):
        pick_device("cuda")
    assert pick_device("cpu") == torch.device("cpu")
    for config, field in ((UNetConfig(channels=33, groups=1), "channels = 33 must be even"),
                          (UNetConfig(channels=8, groups=4, channel_mults=(1, 2, 2, 2)), "at most three"),
                          (UNetConfig(channels=12, groups=8), "groups = 8 must divide every width"),
                          (UNetConfig(channels=8, groups=4, blocks_per_level=0), "blocks_per_level = 0")):
        with pytest.raises(ValueError, match=field):
            UNet(config)
    unet = UNet(UNetConfig(channels=8, groups=4))
    with pytest.raises(ValueError, match=r"t must be a tensor of integer timesteps.*got int.*torch.full"):
        unet(torch.zeros(2, 1, 28, 28), 500)
    with pytest.raises(ValueError, match="got dtype torch.bool"):
        unet(torch.zeros(2, 1, 28, 28), torch.ones(2, dtype=torch.bool))
    path = save_checkpoint(tmp_path / "vae.pt", VAE(VAEConfig(hidden_dims=(8,), latent_dim=2)),
                           config=VAEConfig(hidden_dims=(8,), latent_dim=2))
    with pytest.raises(CheckpointError,
                       match="UNetConfig is not the config of a VAE; load it with genmodels.vae.load_vae"):
        load_model(path, VAE, UNetConfig)
    with pytest.raises(TypeError, match="config_class must be the config dataclass itself"):
        load_model(path, VAE, VAEConfig())


def test_common_first_attempts_get_errors_that_say_what_to_pass():
    from genmodels.diffusion import ancestral_sample, ddim_sample
    from genmodels.features import ClassifierConfig, MNISTClassifier, extract_features
    from genmodels.metrics import to_uint8
    from genmodels.plotting import image_grid
    from genmodels.train import seed_everything
    from genmodels.vae import binarize

    mnist_like = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"dtype torch.uint8.*x.float\(\) / 127.5 - 1"):
        q_sample(schedule, mnist_like, torch.full((4,), 3))
    with pytest.raises(ValueError, match=r"dtype torch.uint8.*x.float\(\) / 255"):
        binarize(mnist_like)
    for empty in (lambda: to_uint8(torch.zeros(0, 28, 28)), lambda: binarize(torch.zeros(0, 784)),
                  lambda: image_grid(torch.zeros(0, 1, 28, 28))):
        with pytest.raises(ValueError, match="no images"):
            empty()
    classifier = MNISTClassifier(ClassifierConfig(channels=(4, 8), feature_dim=8))
    as_numpy = extract_features(classifier, mnist_like.numpy())
    np.testing.assert_allclose(as_numpy, extract_features(classifier, mnist_like))
    for bad in (-1, 1.5, "42", 2**32, True):
        with pytest.raises(ValueError, match="seed must be a whole number in 0..2\\*\\*32 - 1"):
            seed_everything(bad)
    seed_everything(np.int64(3))
    first = torch.rand(1)
    seed_everything(torch.tensor(3))
    assert torch.equal(torch.rand(1), first)

    class Seen(Exception):
        pass

    class OnMeta(torch.nn.Module):  # a network somewhere else than the CPU: its input is drawn there
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1, device="meta"))

        def forward(self, x, t):
            raise Seen(x.device.type, t.device.type)

    with pytest.raises(Seen) as seen:
        ddim_sample(OnMeta(), schedule, (2, 3), steps=2)
    assert seen.value.args == ("meta", "meta")
    assert ancestral_sample(says_zero, schedule, (2, 3))[0].device.type == "cpu"  # a function: the CPU


def test_metric_bound_and_penalty_arguments_are_checked():
    from genmodels.metrics import FeatureStatistics
    from genmodels.vae import importance_weighted_bound

    statistics = FeatureStatistics(2).update(np.random.default_rng(0).standard_normal((10, 2)))
    with pytest.raises(ValueError, match=r"pass a.mean, a.covariance, b.mean, b.covariance"):
        frechet_distance(statistics, statistics, statistics, statistics)
    with pytest.raises(ValueError, match=r"K >= 1 samples per example first, got \(0, 3\)"):
        importance_weighted_bound(torch.zeros(0, 3))
    vae = VAE(VAEConfig(hidden_dims=(8,), latent_dim=2))
    for k in (2.5, True):
        with pytest.raises(ValueError, match="k must be a whole number, at least 1"):
            iwae_bound(vae, torch.ones(2, 784), k=k)
    critic = Critic(WGANConfig(data_dim=2, latent_dim=2, hidden_dims=(4,), image_output=False))
    with torch.no_grad(), pytest.raises(RuntimeError, match=r"gradients enabled, not inside torch.no_grad"):
        gradient_penalty(critic, torch.zeros(3, 2), torch.ones(3, 2))


def test_counts_schedules_and_single_levels_get_clear_errors():
    from genmodels.diffusion import ancestral_sample, ddim_timesteps
    from genmodels.langevin import annealed_langevin_sample, langevin_sample
    from genmodels.wgan import ConvGenerator, DCGANConfig

    for steps in (2.5, True, 0):
        with pytest.raises(ValueError, match="steps must be a whole number, at least 1"):
            ddim_timesteps(10, steps)
    assert ddim_timesteps(10, np.int64(3)) == [10, 6, 1]  # numpy's integers are whole numbers too
    for T in (1000.0, 1):
        with pytest.raises(ValueError, match="T must be a whole number, at least 2"):
            NoiseSchedule(T=T)
    with pytest.raises(ValueError, match="cosine schedule has no beta_1 or beta_T.*kind='linear'"):
        NoiseSchedule(T=10, kind="cosine", beta_T=0.05)
    for every in (-1, 0.5):
        with pytest.raises(ValueError, match="trajectory_every must be a whole number, at least 0"):
            ancestral_sample(says_zero, schedule, (2, 3), trajectory_every=every)
        with pytest.raises(ValueError, match="trajectory_every must be a whole number, at least 0"):
            langevin_sample(torch.neg, torch.zeros(2, 2), 0.1, 3, trajectory_every=every)
    with pytest.raises(ValueError, match="n_steps must be a whole number, at least 1, got 2.5"):
        langevin_sample(torch.neg, torch.zeros(2, 2), 0.1, 2.5)
    for single in (1.0, torch.tensor(1.0)):
        with pytest.raises(ValueError, match=r"single number 1.0: pass .*\[sigma\]"):
            annealed_langevin_sample(lambda x, i: -x, torch.zeros(2, 2), single, 0.1, 3)
    generator = ConvGenerator(DCGANConfig(latent_dim=4, channels=4))
    with pytest.raises(ValueError, match=r"one z in training mode.*generator.eval\(\)"):
        generator.sample(1)
    assert generator.eval().sample(1).shape == (1, 784)  # the running statistics: one sample is fine


def test_the_density_picture_takes_a_float32_network():
    from genmodels.plotting import density_and_score

    torch.manual_seed(0)
    log_density = torch.nn.Linear(2, 1)  # float32 weights refuse float64 points, as every network here
    score = torch.nn.Linear(2, 2)
    with pytest.raises(RuntimeError):
        log_density(torch.zeros(1, 2, dtype=torch.float64))
    # a plain function gets float64 points, and casts them itself if it needs to
    ax = density_and_score(lambda x: log_density(x.float()).squeeze(1), resolution=5, arrows=3)
    assert ax.images[0].get_array().dtype == np.float64
    ax = density_and_score(torch.nn.Sequential(log_density, torch.nn.Flatten(0)), score=score,
                           resolution=5, arrows=3)
    grid = torch.linspace(-3.0, 3.0, 5)
    points = torch.stack(torch.meshgrid(grid, grid, indexing="xy"), -1).reshape(-1, 2)
    with torch.no_grad():
        expected = log_density(points).exp().reshape(5, 5).double()
        field = score(torch.stack(torch.meshgrid(*[torch.linspace(-3.0, 3.0, 3)] * 2, indexing="xy"),
                                  -1).reshape(-1, 2)).double()
    assert np.allclose(ax.images[0].get_array(), expected.numpy(), rtol=1e-6)
    quiver = ax.collections[-1]
    arrows = np.stack([quiver.U, quiver.V], 1)
    assert np.allclose(arrows, (field / field.norm(dim=1, keepdim=True)).numpy(), atol=1e-6)
