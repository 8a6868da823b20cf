"""A damped, driven pendulum rendered to small grayscale images: the motivating example of
seed 000 (the pixels are high-dimensional, the causal state is (angle, angular velocity)),
with domains that change the friction, the drive and the process noise."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from pyrocrl.simulate._random import seeded
from pyrocrl.simulate.dataset import Dataset

#: rod length, bob radius and rod half-width as fractions of the image size
ROD_LENGTH, BOB_RADIUS, ROD_HALF_WIDTH = 0.36, 0.09, 0.025
#: brightness of the rod (the bob is 1), so the bob is the brightest part of the image
ROD_INTENSITY = 0.6
#: width of the antialiasing ramp, in pixels
SOFTNESS = 0.5
#: frames rendered per vectorized chunk (bounds memory for long videos)
_CHUNK_PIXELS = 2**23


def render_pendulum(theta: torch.Tensor, image_size: int = 32) -> torch.Tensor:
    r"""Render pendulum angles to antialiased grayscale images in ``[0, 1]``.

    The pivot sits at the image centre; the rod points from it at angle :math:`\theta`
    from the downward vertical (counter-clockwise as seen in the image, i.e. positive
    angles swing the bob to the right with row 0 at the top), ending in a round bob:

    .. math::
        I(p) = \max\Big(c_\text{rod}\ \mathrm{sigmoid}\Big(\frac{w - d_\text{rod}(p)}{s}
        \Big),\ \mathrm{sigmoid}\Big(\frac{r - d_\text{bob}(p)}{s}\Big)\Big)

    where :math:`d_\text{rod}` is the distance from the pixel centre :math:`p` to the rod
    segment, :math:`d_\text{bob}` the distance to the bob's centre, :math:`w`, :math:`r`
    the rod half-width and bob radius and :math:`s` = ``SOFTNESS`` pixels. Every frame is
    rendered at once (vectorized over frames).

    Args:
        theta: angles in radians, any shape ``S``.
        image_size: side of the square image in pixels (>= 8).

    Returns:
        ``(*S, image_size, image_size)`` float32 images.
    """
    if not isinstance(image_size, (int, np.integer)) or image_size < 8:
        raise ValueError(f"render_pendulum: image_size must be an int >= 8, got {image_size!r}")
    theta = torch.as_tensor(theta, dtype=torch.float32)
    shape = theta.shape
    flat = theta.reshape(-1)
    size = float(image_size)
    centre = size / 2.0
    coords = torch.arange(image_size, dtype=torch.float32) + 0.5
    py = coords[:, None]  # rows, downwards
    px = coords[None, :]  # columns, rightwards
    length, radius = ROD_LENGTH * size, BOB_RADIUS * size
    half_width = max(ROD_HALF_WIDTH * size, 0.5)
    chunk = max(1, _CHUNK_PIXELS // image_size**2)
    out = []
    for start in range(0, flat.numel(), chunk):  # chunks of frames, not single frames
        th = flat[start:start + chunk, None, None]
        dx, dy = length * torch.sin(th), length * torch.cos(th)  # bob centre - pivot
        rx, ry = px - centre, py - centre  # pixel - pivot
        along = ((rx * dx + ry * dy) / length**2).clamp(0.0, 1.0)
        d_rod = torch.hypot(rx - along * dx, ry - along * dy)
        d_bob = torch.hypot(rx - dx, ry - dy)
        rod = ROD_INTENSITY * torch.sigmoid((half_width - d_rod) / SOFTNESS)
        bob = torch.sigmoid((radius - d_bob) / SOFTNESS)
        out.append(torch.maximum(rod, bob))
    images = torch.cat(out) if out else torch.zeros(0, image_size, image_size)
    return images.reshape(*shape, image_size, image_size)


def _balanced_domains(num_sequences: int, num_domains: int) -> torch.Tensor:
    return (torch.arange(num_sequences) * num_domains) // num_sequences


def _check_range(name: str, value, positive: bool = False) -> tuple[float, float]:
    low, high = value
    if not low <= high or (positive and low <= 0) or low < 0:
        raise ValueError(f"pendulum: {name} must satisfy {'0 < ' if positive else '0 <= '}"
                         f"low <= high, got {value}")
    return float(low), float(high)


def pendulum(
    num_sequences: int = 512,
    seq_len: int = 20,
    num_domains: int = 5,
    image_size: int = 32,
    dt: float = 0.1,
    seed: int = 0,
    pixel_noise: float = 0.0,
    substeps: int = 10,
    gravity: float = 9.81,
    length: float = 1.0,
    damping_range: tuple[float, float] = (0.1, 1.0),
    drive_response_range: tuple[float, float] = (0.1, 0.5),
    drive_frequency_range: tuple[float, float] = (3.5, 6.0),
    process_noise_range: tuple[float, float] = (0.05, 0.3),
    initial_angle: float = 0.8,
    initial_velocity: float = 1.0,
) -> Dataset:
    r"""Videos of a damped, driven, noisy pendulum whose physics changes by domain.

    For a sequence in domain :math:`u` with drive phase :math:`\phi \sim U[0, 2\pi)`:

    .. math::
        d\theta = \omega\,dt,\qquad
        d\omega = \Big(-\frac{g}{l}\sin\theta - b_u\,\omega
                  + A_u\cos(w_u t + \phi)\Big)dt + \sigma_u\,dW_t,

    integrated by semi-implicit (symplectic) Euler-Maruyama with ``substeps`` internal steps
    per frame of length ``dt``, from :math:`\theta_0 \sim U[-\theta_\max, \theta_\max]`,
    :math:`\omega_0 \sim U[-\omega_\max, \omega_\max]`. The latent state of frame
    :math:`t` is :math:`z_t = (\theta_t, \omega_t)`, and

    .. math::
        x_t = \mathrm{clip}_{[0, 1]}\big(\mathrm{render}(\theta_t) + \nu_t\big),\qquad
        \nu_t \sim \mathcal N(0, \texttt{pixel\_noise}^2 I)

    (see :func:`render_pendulum`). Per domain, :math:`b_u` (damping, 1/s),
    :math:`w_u` (drive frequency, rad/s) and :math:`\sigma_u` (process noise,
    rad/s^{3/2}) are uniform in their ranges; the drive amplitude is set from a response
    :math:`a_u` uniform in ``drive_response_range``, the steady-state swing the drive
    would cause in the linearized pendulum,
    :math:`A_u = a_u\sqrt{(g/l - w_u^2)^2 + b_u^2 w_u^2}`, so that drives near resonance
    stay moderate. With the defaults (natural frequency :math:`\sqrt{g/l} = 3.13` rad/s,
    period 2 s, 20 frames per period) the angle stays within about :math:`\pm 1.8` rad and
    never makes a full rotation (the largest :math:`|\theta|` over 20 seeds of 256 videos
    x 300 frames was 1.78 rad; the median per-video maximum over 20 frames is about 0.75),
    so it is a valid latent coordinate without wrapping. The drive frequencies lie above
    the natural frequency on purpose: the pendulum softens as it swings wider, so a drive
    below resonance can pull it into a nonlinear resonance and full rotations.

    Args:
        num_sequences: N >= num_domains videos; domain counts differ by at most one.
        seq_len: T frames per video.
        num_domains: K domains.
        image_size: side of the square frames in pixels (>= 8).
        dt: time between frames (s).
        seed: fixes everything: domain parameters, initial states, noise.
        pixel_noise: standard deviation of Gaussian pixel noise (then clipped to [0, 1]).
        substeps: integration steps per frame.
        gravity, length: :math:`g` and :math:`l` (only :math:`g/l` matters).
        damping_range: range of :math:`b_u`.
        drive_response_range: range of the linear steady-state drive response :math:`a_u`
            (rad).
        drive_frequency_range: range of :math:`w_u`.
        process_noise_range: range of :math:`\sigma_u`.
        initial_angle: :math:`\theta_\max`.
        initial_velocity: :math:`\omega_\max`.

    Returns:
        :class:`Dataset` with ``x: (N, T, image_size**2)`` float32 (row-major flattened
        frames), ``z: (N, T, 2)`` = (angle in rad, angular velocity in rad/s), ``u: (N,)``
        sorted by domain, and ``info`` with the per-domain ``damping``, ``drive_amplitude``,
        ``drive_frequency``, ``drive_response``, ``process_noise`` (each ``(K,)`` tensors),
        the per-sequence ``phase``, ``render`` (a callable ``theta -> images`` at this
        image size), ``seed``, ``image_size`` and every other argument.
    """
    for name, value, low in [("num_sequences", num_sequences, 1), ("seq_len", seq_len, 1),
                             ("num_domains", num_domains, 1), ("substeps", substeps, 1),
                             ("image_size", image_size, 8)]:
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(f"pendulum: {name} must be an int >= {low}, got {value!r}")
    if num_sequences < num_domains:
        raise ValueError(f"pendulum: num_sequences must be >= num_domains={num_domains}, "
                         f"got {num_sequences}")
    for name, value in [("dt", dt), ("gravity", gravity), ("length", length)]:
        if not value > 0:
            raise ValueError(f"pendulum: {name} must be > 0, got {value}")
    for name, value in [("pixel_noise", pixel_noise), ("initial_angle", initial_angle),
                        ("initial_velocity", initial_velocity)]:
        if not value >= 0:
            raise ValueError(f"pendulum: {name} must be >= 0, got {value}")
    if initial_angle >= math.pi:
        raise ValueError(f"pendulum: initial_angle must be < pi, got {initial_angle}")
    damping_range = _check_range("damping_range", damping_range)
    drive_response_range = _check_range("drive_response_range", drive_response_range)
    drive_frequency_range = _check_range("drive_frequency_range", drive_frequency_range,
                                         positive=True)
    process_noise_range = _check_range("process_noise_range", process_noise_range)

    K, N, T = num_domains, num_sequences, seq_len
    omega0_sq = gravity / length
    h = dt / substeps
    with seeded(seed) as rng:
        damping = rng.uniform(*damping_range, size=K)
        frequency = rng.uniform(*drive_frequency_range, size=K)
        response = rng.uniform(*drive_response_range, size=K)
        noise = rng.uniform(*process_noise_range, size=K)
        amplitude = response * np.sqrt((omega0_sq - frequency**2) ** 2
                                       + (damping * frequency) ** 2)
        params = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in
                  dict(damping=damping, drive_amplitude=amplitude, drive_frequency=frequency,
                       drive_response=response, process_noise=noise).items()}
        u = _balanced_domains(N, K)
        b, a, w, s = (params[k][u] for k in ("damping", "drive_amplitude",
                                             "drive_frequency", "process_noise"))
        phase = 2 * math.pi * torch.rand(N)
        theta = initial_angle * (2 * torch.rand(N) - 1)
        omega = initial_velocity * (2 * torch.rand(N) - 1)
        kicks = math.sqrt(h) * s * torch.randn(T, substeps, N)
        states = []
        for t in range(T):
            states.append(torch.stack([theta, omega], dim=-1))
            if t == T - 1:
                break
            for k in range(substeps):
                now = (t * substeps + k) * h
                accel = -omega0_sq * torch.sin(theta) - b * omega + a * torch.cos(w * now
                                                                                + phase)
                omega = omega + h * accel + kicks[t, k]
                theta = theta + h * omega
        z = torch.stack(states, dim=1)  # (N, T, 2)
        x = render_pendulum(z[..., 0], image_size).reshape(N, T, image_size**2)
        if pixel_noise > 0:
            x = (x + pixel_noise * torch.randn_like(x)).clamp(0.0, 1.0)
    info = dict(
        seed=seed, image_size=image_size, dt=dt, substeps=substeps, gravity=gravity,
        length=length, num_domains=K, phase=phase, pixel_noise=pixel_noise,
        render=functools.partial(render_pendulum, image_size=image_size),
        damping_range=damping_range, drive_response_range=drive_response_range,
        drive_frequency_range=drive_frequency_range, process_noise_range=process_noise_range,
        initial_angle=initial_angle, initial_velocity=initial_velocity, **params,
    )
    return Dataset(x=x, z=z, u=u, info=info)
