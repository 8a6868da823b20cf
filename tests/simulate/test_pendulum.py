import math

import numpy as np
import pytest
import torch

from pyrocrl import simulate
from pyrocrl.simulate.pendulum import render_pendulum


def small(**kw):
    args = dict(num_sequences=60, seq_len=12, num_domains=3, image_size=16, seed=0)
    args.update(kw)
    return simulate.pendulum(**args)


def centroid_angle(images: torch.Tensor) -> torch.Tensor:
    """Angle of the intensity centroid around the image centre (the pivot), measured from
    the downward vertical towards increasing columns."""
    size = images.shape[-1]
    c = torch.arange(size, dtype=torch.float32) + 0.5 - size / 2
    mass = images.sum((-2, -1))
    cx = (images.sum(-2) * c).sum(-1) / mass
    cy = (images.sum(-1) * c).sum(-1) / mass
    return torch.atan2(cx, cy)


def test_shapes_dtype_and_domains():
    ds = small()
    assert ds.x.shape == (60, 12, 256) and ds.z.shape == (60, 12, 2)
    assert ds.x.dtype == torch.float32 and ds.z.dtype == torch.float32
    assert ds.u.dtype == torch.long and torch.equal(torch.bincount(ds.u), torch.full((3,), 20))
    assert 0.0 <= ds.x.min() and ds.x.max() <= 1.0
    assert ds.x.max() > 0.9, "the bob should be (nearly) white"
    info = ds.info
    assert info["seed"] == 0 and info["image_size"] == 16
    for key in ("damping", "drive_amplitude", "drive_frequency", "process_noise"):
        assert info[key].shape == (3,)
    assert info["phase"].shape == (60,)


def test_deterministic_given_seed_and_leaves_global_rng_alone():
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    a = small(seed=3, pixel_noise=0.05)
    assert torch.equal(torch.rand(3), expected), "the simulator consumed the caller's RNG"
    b = small(seed=3, pixel_noise=0.05)
    assert torch.equal(a.x, b.x) and torch.equal(a.z, b.z)
    c = small(seed=4, pixel_noise=0.05)
    assert not torch.equal(a.z, c.z) and not torch.equal(a.x, c.x)
    assert not torch.equal(a.info["damping"], c.info["damping"])


def test_images_are_the_render_of_the_angle():
    ds = small(image_size=24)
    frames = ds.info["render"](ds.z[..., 0])
    assert frames.shape == (60, 12, 24, 24)
    torch.testing.assert_close(frames.reshape(60, 12, -1), ds.x)
    noisy = small(image_size=24, pixel_noise=0.1)
    assert 0.0 <= noisy.x.min() and noisy.x.max() <= 1.0
    assert (noisy.x - ds.x).abs().mean() > 0.02


@pytest.mark.parametrize("pixel_noise", [0.0, 0.05])
def test_angle_is_recoverable_from_the_pixels(pixel_noise):
    ds = small(num_sequences=100, seq_len=20, image_size=32, pixel_noise=pixel_noise)
    theta = ds.z[..., 0].reshape(-1)
    images = ds.x.reshape(-1, 32, 32)
    estimate = centroid_angle(images)
    assert np.corrcoef(estimate, theta)[0, 1] > 0.99
    if pixel_noise == 0:
        assert (estimate - theta).abs().max() < 0.01
    # the brightest pixel sits on the bob
    flat = images.reshape(len(images), -1).argmax(1)
    row, col = flat // 32, flat % 32
    bright = torch.atan2(col + 0.5 - 16, row + 0.5 - 16)
    assert np.corrcoef(bright, theta)[0, 1] > 0.98


def test_renderer_geometry():
    images = render_pendulum(torch.tensor([0.0, math.pi / 2, -math.pi / 2, math.pi]), 32)
    down, right, left, up = images
    assert down[24:, 12:20].sum() > down[:8].sum() + 5  # hangs down from the centre pivot
    assert right[:, 24:].sum() > right[:, :8].sum() + 5
    assert left[:, :8].sum() > left[:, 24:].sum() + 5
    assert up[:8].sum() > up[24:].sum() + 5
    torch.testing.assert_close(down, down.flip(-1))  # symmetric about the vertical
    torch.testing.assert_close(right, left.flip(-1))


def test_velocity_is_the_derivative_of_the_angle():
    ds = small(num_sequences=100, seq_len=30, dt=0.05)
    theta, omega = ds.z[..., 0], ds.z[..., 1]
    central = (theta[:, 2:] - theta[:, :-2]) / (2 * 0.05)
    middle = omega[:, 1:-1]
    assert np.corrcoef(central.reshape(-1), middle.reshape(-1))[0, 1] > 0.99
    rel = (central - middle).norm() / middle.norm()
    assert rel < 0.1


def test_domains_differ_in_damping_measurably():
    # free, noise-free pendulums: energy E = w^2 / 2 + (g / l)(1 - cos theta) decays as
    # dE/dt = -b w^2, so b can be read off each trajectory
    ds = simulate.pendulum(num_sequences=40, seq_len=60, num_domains=4, image_size=8,
                           dt=0.05, seed=2, drive_response_range=(0.0, 0.0),
                           process_noise_range=(0.0, 0.0), substeps=20)
    theta, omega = ds.z[..., 0].double(), ds.z[..., 1].double()
    energy = 0.5 * omega**2 + 9.81 * (1 - torch.cos(theta))
    dissipated = energy[:, 0] - energy[:, -1]
    integral = torch.trapezoid(omega**2, dx=0.05, dim=1)
    b_hat = dissipated / integral
    true = ds.info["damping"].double()
    per_domain = torch.stack([b_hat[ds.u == d].median() for d in range(4)])
    torch.testing.assert_close(per_domain, true, rtol=0.1, atol=0.02)
    assert true.max() - true.min() > 0.2, "domains should have different damping"
    assert torch.equal(per_domain.argsort(), true.argsort())


def test_angles_stay_moderate():
    for seed in range(3):
        ds = simulate.pendulum(num_sequences=256, seq_len=150, num_domains=8, image_size=8,
                               seed=seed)
        theta = ds.z[..., 0]
        assert theta.abs().max() < 2.2, "no full rotations"
        assert theta.abs().amax(1).median() > 0.3, "the pendulum should swing"
    assert torch.isfinite(ds.z).all()


def test_drive_amplitude_follows_the_response():
    ds = small(num_domains=5, num_sequences=50)
    info = ds.info
    w, b = info["drive_frequency"], info["damping"]
    expected = info["drive_response"] * torch.sqrt((9.81 - w**2) ** 2 + (b * w) ** 2)
    torch.testing.assert_close(info["drive_amplitude"], expected)


@pytest.mark.parametrize("kwargs, match", [
    ({"num_sequences": 0}, "num_sequences"),
    ({"num_sequences": 2}, "num_sequences"),
    ({"seq_len": 0}, "seq_len"),
    ({"num_domains": 0}, "num_domains"),
    ({"image_size": 4}, "image_size"),
    ({"dt": 0.0}, "dt"),
    ({"substeps": 0}, "substeps"),
    ({"pixel_noise": -0.1}, "pixel_noise"),
    ({"damping_range": (1.0, 0.5)}, "damping_range"),
    ({"drive_frequency_range": (0.0, 1.0)}, "drive_frequency_range"),
    ({"process_noise_range": (-1.0, 1.0)}, "process_noise_range"),
    ({"initial_angle": 4.0}, "initial_angle"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        small(**kwargs)
