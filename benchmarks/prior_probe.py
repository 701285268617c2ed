"""Do a prior's UNet features carry across modalities? A linear probe trained on RGB, read on the others.

For each backbone, the UNet's three feature taps (t = 0, the empty prompt, upsampled to the finest tap
and concatenated) are computed for held-out prior-split scenes rendered in all four modalities. A linear
classifier per position is trained on the RGB features of one set of scenes (9-class labels of the
layout) and scored, frozen, on each modality of another set: the drop from RGB to a modality is what a
segmenter trained on RGB would lose if the UNet were frozen. For scale, the same probe trained on that
modality itself ("same-modality"). Issue 12 compared the committed prior with cross-modally aligned ones
(BENCHMARKS.md, "The small recipe"):

    python -m benchmarks.prior_probe --backbones priors/tiny /path/to/aligned_prior --scenes 48

DPLG's premise (issue 25, probe b): does noising the target latent shrink the modality gap? With
``--timesteps`` the taps are those of the recipe's backbone (``DiffusionBackbone``: the latent noised at
t with the fixed noise, the UNet at t); the probe is trained on RGB at t = 0 (what a segmenter trained on
the source sees) and read on every modality at every t. ``--seeds`` draws other scene sets (seed s: the
scenes from ``HELDOUT_START + 2000 s``) and another probe initialisation, for the spread.
``--control-amplitude`` adds a positive control, ``rgb+pattern``: the RGB scenes with a fixed sensor
pattern, a gap a denoiser can wash out. ``--control-kind latent`` (default) adds a fixed standard-normal
pattern times the amplitude to every image's latent (one value per latent pixel and channel, the same for
every image); ``latent-noise`` (view ``rgb+noise``) a different standard-normal draw for every image
times the amplitude, i.e. Gaussian sensor noise in the latent, the kind of perturbation the diffusion
forward process models and a denoiser is trained to remove; ``pixel`` adds a fixed +-amplitude pattern
per pixel to the image (``sensor_pattern``), most of which the VAE encoder filters out. The control
shows whether the probe can see noise help where the gap is of that kind; it is not evidence about the
real modalities:

    python -m benchmarks.prior_probe --timesteps 0 25 50 100 --seeds 0 1 2 --control-amplitude 0.6

``--probe-timestep matched`` trains one probe per t, on the RGB scenes noised and read at that same t,
and reads every view at t with it. The default reader (``0``, trained at t = 0) is DPLG's teacher, which
is trained on clean source and reads the noised target; the matched reader removes what changing t does
to the taps by itself (the UNet's time embedding moves them even for a clean latent), so that what is left
is whether the noise shrinks the gap in the prior's features, DPLG's premise without its reader.

``--denoising`` asks whether the prior is a denoiser at all: for held-out latents of every modality,
noised at t with a fresh standard-normal draw per image, the UNet's epsilon error against that of the
best linear estimate from the latents' global mean and variance (:func:`linear_eps_estimate`), which
knows nothing about images. A UNet far under that floor removes noise a linear shrinkage cannot:

    python -m benchmarks.prior_probe --denoising --timesteps 0 10 25 50 100 200 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from benchmarks.common import t_interval
from madm_pl.labels import CITYSCAPES_TO_9, IGNORE_INDEX
from madm_pl.method.metrics import miou_from_confusion
from madm_pl.models.backbone import tap_layers, tap_output
from madm_pl.models.presets import build_stack
from madm_pl.prior.scenes import HELDOUT_START, render_paired_pool
from madm_pl.synthetic import MODALITIES, SPLIT_PRIOR, render_scene, scene_seed_sequence

NUM_CLASSES = 9
HEIGHT, WIDTH = 64, 128


def sensor_pattern(height: int, width: int, amplitude: float, seed: int = 0) -> Tensor:
    """The positive control's fixed sensor pattern: per pixel +-``amplitude`` (a fair coin per pixel, the
    same for every image and channel), i.e. a fixed-pattern, pixel-frequency noise of one sensor.

    Returns:
        (1,1,height,width) float32 with values in {-amplitude, +amplitude}.
    """
    generator = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (1, 1, height, width), generator=generator).float() * 2 - 1
    return amplitude * signs


def with_sensor_pattern(images: Tensor, amplitude: float, seed: int = 0) -> Tensor:
    """uint8 images (N,3,H,W) plus :func:`sensor_pattern` (in [0,1] units), clipped: uint8 (N,3,H,W)."""
    pattern = sensor_pattern(images.shape[-2], images.shape[-1], amplitude, seed)
    return (images.float() / 255 + pattern).clamp(0, 1).mul(255).round().to(torch.uint8)


def scenes(start: int, count: int) -> tuple[Tensor, Tensor]:
    """Images (count, modalities, 3, H, W) uint8 and 9-class labels (count, H, W) of prior-split scenes."""
    images = render_paired_pool(0, count, HEIGHT, WIDTH, start=start, progress=False)
    layouts = np.stack(
        [
            render_scene(scene_seed_sequence(0, SPLIT_PRIOR, "rgb", i), HEIGHT, WIDTH).layout
            for i in range(start, start + count)
        ]
    )
    table = np.full(256, IGNORE_INDEX, dtype=np.int64)
    table[: len(CITYSCAPES_TO_9)] = np.where(CITYSCAPES_TO_9 < 0, IGNORE_INDEX, CITYSCAPES_TO_9)
    return images, torch.from_numpy(table[layouts])


@torch.no_grad()
def features(stack, images: Tensor) -> Tensor:
    """The UNet's taps at t = 0 for uint8 images (N, 3, H, W): (N, C, h, w) at the finest tap's size."""
    taps: list[Tensor] = []
    hooks = [
        layer.register_forward_hook(lambda m, a, out: taps.append(tap_output(out)))
        for layer in tap_layers(stack.unet)
    ]
    try:
        latents = stack.vae.encode(images.float() / 127.5 - 1).latent_dist.mean
        latents = latents * stack.vae.config.scaling_factor
        timesteps = torch.zeros(len(images), dtype=torch.long)
        stack.unet(latents, timesteps, stack.uncond.expand(len(images), -1, -1))
    finally:
        for hook in hooks:
            hook.remove()
    size = max((tap.shape[-2:] for tap in taps), key=lambda s: s[0] * s[1])
    return torch.cat([F.interpolate(tap, size=size, mode="bilinear") for tap in taps], 1)


def latent_pattern(channels: int, height: int, width: int, amplitude: float, seed: int = 7) -> Tensor:
    """The latent control's fixed pattern: ``amplitude`` x a standard-normal (1,channels,height,width)
    tensor from ``seed``, added to every image's latent (the tiny prior's latents have std ~1.07)."""
    generator = torch.Generator().manual_seed(seed)
    return amplitude * torch.randn(1, channels, height, width, generator=generator)


@torch.no_grad()
def noised_features(
    backbone, images: Tensor, timestep: int, latent_offset: Tensor | None = None, batch_size: int = 16
) -> Tensor:
    """The recipe's taps at ``timestep`` for uint8 images (N,3,H,W): the backbone's encode (plus
    ``latent_offset``, the latent control), its fixed-noise ``add_noise`` at t and the UNet at t with the
    empty prompt (``DiffusionBackbone.forward_latent``); (N, C, h, w) at the finest tap's size."""
    time_offset = torch.zeros(1, backbone.time_embed_dim)
    out = []
    for start in range(0, len(images), batch_size):
        latent = backbone.encode(images[start : start + batch_size].float() / 127.5 - 1)
        if latent_offset is not None:
            # one offset for every image (a fixed pattern), or one per image (per-image sensor noise)
            offset = latent_offset if len(latent_offset) == 1 else latent_offset[start : start + batch_size]
            latent = latent + offset
        latent = backbone.add_noise(latent, timestep)
        taps, _ = backbone.forward_latent(latent, timestep, backbone.uncond, time_offset)
        size = taps[-1].shape[-2:]  # s8, the finest
        out.append(torch.cat([F.interpolate(tap, size=size, mode="bilinear") for tap in taps], 1))
    return torch.cat(out)


def positions(feature: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Per-position feature rows (N*h*w, C) and their labels (nearest), ignored positions dropped."""
    small = F.interpolate(labels[:, None].float(), size=feature.shape[-2:], mode="nearest")[:, 0].long()
    rows, targets = feature.permute(0, 2, 3, 1).reshape(-1, feature.shape[1]), small.reshape(-1)
    keep = targets != IGNORE_INDEX
    return rows[keep], targets[keep]


def miou(prediction: Tensor, target: Tensor) -> float:
    """Mean IoU (%) by the project's evaluation rule (``miou_from_confusion``, METHOD.md §6): a class
    only predicted counts 0, a class absent from both is skipped.

    Args:
        prediction: (N,) int64 class ids.
        target: (N,) int64 class ids (ignored positions already dropped).
    """
    confusion = torch.bincount(target * NUM_CLASSES + prediction, minlength=NUM_CLASSES**2)
    return 100 * miou_from_confusion(confusion.reshape(NUM_CLASSES, NUM_CLASSES))[0]


def fit_probe(rows: Tensor, targets: Tensor, steps: int = 300) -> Callable[[Tensor], Tensor]:
    """A linear classifier on standardised rows (Adam, full batch); returns rows -> predicted class."""
    mean, std = rows.mean(0), rows.std(0) + 1e-6
    linear = torch.nn.Linear(rows.shape[1], NUM_CLASSES)
    optimizer = torch.optim.Adam(linear.parameters(), lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(linear((rows - mean) / std), targets).backward()
        optimizer.step()
    return lambda x: linear((x - mean) / std).argmax(1)


def noise_table(
    source: str,
    seeds: Sequence[int],
    count: int,
    timesteps: Sequence[int],
    control: float | None,
    control_kind: str = "latent",
    views_shown: Sequence[str] | None = None,
    probe_timestep: str = "0",
) -> dict[str, dict[int, list[float]]]:
    """Probe (b): per view (the modalities, and ``rgb+pattern`` with a control amplitude) and timestep, the
    RGB-trained probe's mIoU on each seed's test scenes. ``probe_timestep`` ``"0"``: one probe trained on
    RGB at t = 0 reads every t; ``"matched"``: the probe read at t was trained on RGB at t. Returns
    ``{view: {t: [mIoU per seed]}}``."""
    from madm_pl.models import DiffusionBackbone

    backbone = DiffusionBackbone(source).eval()
    table: dict[str, dict[int, list[float]]] = {}
    for seed in seeds:
        torch.manual_seed(seed)
        start = HELDOUT_START + 2000 * seed
        train_images, train_labels = scenes(start, count)
        test_images, test_labels = scenes(start + 1000, count)
        views: dict[str, tuple[Tensor, Tensor | None]] = {
            m: (test_images[:, i], None) for i, m in enumerate(MODALITIES)
        }
        if control is not None and control_kind == "pixel":
            views["rgb+pattern"] = (with_sensor_pattern(views["rgb"][0], control), None)
        elif control is not None:
            stride = HEIGHT // backbone.encode(test_images[:1, 0].float() / 127.5 - 1).shape[-2]
            shape = (backbone.vae.config.latent_channels, HEIGHT // stride, WIDTH // stride)
            if control_kind == "latent":
                views["rgb+pattern"] = (views["rgb"][0], latent_pattern(*shape, control))
            else:  # latent-noise: a different standard-normal draw for every image, times the amplitude
                generator = torch.Generator().manual_seed(11)
                noise = control * torch.randn(count, *shape, generator=generator)
                views["rgb+noise"] = (views["rgb"][0], noise)
        if views_shown is not None:
            views = {name: view for name, view in views.items() if name in views_shown}
        reader_steps = list(timesteps) if probe_timestep == "matched" else [0]
        probes = {
            r: fit_probe(*positions(noised_features(backbone, train_images[:, 0], r), train_labels))
            for r in reader_steps
        }
        for view, (images, offset) in views.items():
            for t in timesteps:
                probe = probes[t if probe_timestep == "matched" else 0]
                rows, targets = positions(noised_features(backbone, images, t, offset), test_labels)
                table.setdefault(view, {}).setdefault(t, []).append(miou(probe(rows), targets))
    return table


def linear_eps_estimate(noised: Tensor, alpha_bar: float, mean: float, variance: float) -> Tensor:
    """The best linear estimate of the noise in ``noised = sqrt(abar) z + sqrt(1 - abar) eps`` from z's
    global mean and variance alone (z and eps independent, eps standard normal): the floor a denoiser that
    knows nothing about images reaches.

    ``eps_hat = sqrt(1 - abar) / (abar var + 1 - abar) * (noised - sqrt(abar) mean)``; its expected squared
    error per element is ``abar var / (abar var + 1 - abar)``.

    Args:
        noised: (...) float, the noised latents.
        alpha_bar: abar_t in (0, 1].
        mean, variance: z's mean and variance per element.

    Returns:
        (...) float, like ``noised``.
    """
    gain = (1 - alpha_bar) ** 0.5 / (alpha_bar * variance + 1 - alpha_bar)
    return gain * (noised - alpha_bar**0.5 * mean)


@torch.no_grad()
def denoising_table(
    source: str, seeds: Sequence[int], count: int, timesteps: Sequence[int], batch_size: int = 16
) -> dict[str, dict[int, list[tuple[float, float]]]]:
    """Is the prior a denoiser? Per modality and t, for each seed's ``count`` held-out scenes (the test
    scenes of :func:`noise_table`'s seed), the UNet's epsilon MSE and :func:`linear_eps_estimate`'s on the
    encoded latents noised at t with a fresh standard-normal draw per image (generator seeded by the seed).

    Returns:
        ``{modality: {t: [(unet MSE, linear MSE) per seed]}}``.
    """
    from madm_pl.models import DiffusionBackbone

    backbone = DiffusionBackbone(source).eval()
    time_offset = torch.zeros(1, backbone.time_embed_dim)
    alpha_bars = backbone.scheduler.alphas_cumprod
    table: dict[str, dict[int, list[tuple[float, float]]]] = {}
    for seed in seeds:
        images, _ = scenes(HELDOUT_START + 2000 * seed + 1000, count)
        generator = torch.Generator().manual_seed(seed)
        for index, modality in enumerate(MODALITIES):
            latents = torch.cat(
                [
                    backbone.encode(images[start : start + batch_size, index].float() / 127.5 - 1)
                    for start in range(0, count, batch_size)
                ]
            )
            mean, variance = latents.mean().item(), latents.var().item()
            for t in timesteps:
                alpha_bar = float(alpha_bars[t])
                eps = torch.randn(latents.shape, generator=generator)
                noised = alpha_bar**0.5 * latents + (1 - alpha_bar) ** 0.5 * eps
                predicted = torch.cat(
                    [
                        backbone.forward_latent(
                            noised[start : start + batch_size], t, backbone.uncond, time_offset
                        )[1]
                        for start in range(0, count, batch_size)
                    ]
                )
                linear = linear_eps_estimate(noised, alpha_bar, mean, variance)
                errors = (F.mse_loss(predicted, eps).item(), F.mse_loss(linear, eps).item())
                table.setdefault(modality, {}).setdefault(t, []).append(errors)
    return table


def format_denoising_table(
    table: dict[str, dict[int, list[tuple[float, float]]]], timesteps: Sequence[int]
) -> str:
    """Markdown: rows = t, per modality the UNet's epsilon MSE and the linear floor's (means over the
    seeds, the UNet's ± std)."""
    modalities = list(table)
    lines = ["| t | " + " | ".join(f"{m}: UNet / linear" for m in modalities) + " |"]
    lines.append("| --- |" + " --- |" * len(modalities))
    for t in timesteps:
        cells = []
        for modality in modalities:
            unet = [u for u, _ in table[modality][t]]
            linear = float(np.mean([lin for _, lin in table[modality][t]]))
            cells.append(f"{_spread(unet, '{:.3f}', '{:.3f}')} / {linear:.3f}")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_noise_table(table: dict[str, dict[int, list[float]]], timesteps: Sequence[int]) -> str:
    """Markdown: rows = views, columns = t, cells = mean ± std over the seeds, then the paired change from
    t = 0 to the largest t (mean ± std, then its 95 % t-interval over the seeds, in bold where it excludes
    0)."""
    last = max(timesteps)
    lines = ["| view | " + " | ".join(f"t = {t}" for t in timesteps) + f" | t = {last} - t = 0 [95 %] |"]
    lines.append("| --- |" + " --- |" * (len(timesteps) + 1))
    for view, cells in table.items():
        row = [_spread(cells[t]) for t in timesteps]
        if 0 in cells:
            changes = [b - a for a, b in zip(cells[0], cells[last])]
            cell = _spread(changes, "{:+.1f}")
            interval = t_interval(changes)
            if interval is not None:
                low, high = interval
                cell += f" [{low:+.1f}, {high:+.1f}]"
                if low > 0 or high < 0:
                    cell = f"**{cell}**"
            row.append(cell)
        else:
            row.append("-")
        lines.append(f"| {view} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def _spread(values: Sequence[float], form: str = "{:.1f}", spread_form: str = "{:.1f}") -> str:
    if len(values) < 2:
        return form.format(values[0])
    return f"{form.format(float(np.mean(values)))} ± {spread_form.format(float(np.std(values, ddof=1)))}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["priors/tiny"])
    parser.add_argument("--scenes", type=int, default=48, help="held-out scenes to train and to test on")
    parser.add_argument(
        "--timesteps", nargs="+", type=int, default=None, help="probe (b): read every modality at these t"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="with --timesteps: scene sets")
    parser.add_argument(
        "--control-amplitude", type=float, default=None, help="with --timesteps: add the rgb+pattern control"
    )
    parser.add_argument("--control-kind", choices=("latent", "latent-noise", "pixel"), default="latent")
    parser.add_argument(
        "--views", nargs="+", default=None, help="with --timesteps: only these views (e.g. rgb rgb+pattern)"
    )
    parser.add_argument(
        "--probe-timestep",
        choices=("0", "matched"),
        default="0",
        help="with --timesteps: train the probe on RGB at t = 0 (DPLG's teacher) or at each read t",
    )
    parser.add_argument(
        "--denoising",
        action="store_true",
        help="with --timesteps: the UNet's epsilon error against a linear floor",
    )
    args = parser.parse_args(argv)
    if args.denoising and args.timesteps is None:
        parser.error("--denoising needs --timesteps")
    if args.timesteps is not None:
        if any(t < 0 or t >= 1000 for t in args.timesteps):
            parser.error("--timesteps must lie in [0, 1000)")
        if args.denoising:
            for source in args.backbones:
                errors = denoising_table(source, args.seeds, args.scenes, sorted(args.timesteps))
                head = f"{source}: epsilon MSE, UNet (mean ± std) / linear floor"
                print(f"{head}, seeds {args.seeds}, {args.scenes} scenes\n")
                print(format_denoising_table(errors, sorted(args.timesteps)) + "\n", flush=True)
            return
        for source in args.backbones:
            table = noise_table(
                source,
                args.seeds,
                args.scenes,
                sorted(args.timesteps),
                args.control_amplitude,
                args.control_kind,
                args.views,
                args.probe_timestep,
            )
            control = ""
            if args.control_amplitude is not None:
                control = f"; control: {args.control_kind} pattern, amplitude {args.control_amplitude}"
            reader = "t = 0" if args.probe_timestep == "0" else "at the read t"
            head = f"{source}: RGB-trained probe ({reader}) mIoU, seeds {args.seeds}, {args.scenes} scenes"
            print(f"{head}{control}\n")
            print(format_noise_table(table, sorted(args.timesteps)) + "\n", flush=True)
        return
    torch.manual_seed(0)
    train_images, train_labels = scenes(HELDOUT_START, args.scenes)
    test_images, test_labels = scenes(HELDOUT_START + 1000, args.scenes)
    for source in args.backbones:
        stack = build_stack(source)
        stack.unet.eval()
        stack.vae.eval()
        train = {m: features(stack, train_images[:, i]) for i, m in enumerate(MODALITIES)}
        test = {m: features(stack, test_images[:, i]) for i, m in enumerate(MODALITIES)}
        rgb_probe = fit_probe(*positions(train["rgb"], train_labels))
        cells = []
        for modality in MODALITIES:
            rows, targets = positions(test[modality], test_labels)
            own = miou(rgb_probe(rows), targets)
            if modality == "rgb":
                cells.append(f"rgb {own:.1f}")
            else:
                same = fit_probe(*positions(train[modality], train_labels))
                cells.append(f"{modality} {own:.1f} (same-modality {miou(same(rows), targets):.1f})")
        print(f"{source}: RGB-trained probe mIoU on " + ", ".join(cells), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
