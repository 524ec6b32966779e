"""Pictures of the latent space: the test set's latent means coloured by class (``latent.png``)
and, for a 2-D latent, the decoded manifold (``manifold.png``, Kingma and Welling 2014, Fig. 4).
"""

from __future__ import annotations

from pathlib import Path

import torch
from pyro import distributions as dist
from pyro import poutine

from pyrovae.components.base import OBSERVED
from pyrovae.runs.diagnostics import continuous_sites, elementwise, latent_means
from pyrovae.runs.pictures import device_of, legible_images

__all__ = [
    "LATENT_PICTURE",
    "MANIFOLD_PICTURE",
    "save_latent_scatter",
    "manifold",
    "save_manifold",
    "save_latent_pictures",
]

LATENT_PICTURE = "latent.png"
MANIFOLD_PICTURE = "manifold.png"


def project(means: torch.Tensor) -> tuple[torch.Tensor, str, str]:
    """Two coordinates per row of ``means``: the latent itself when 2-D (a 1-D latent beside
    zeros), else its first two principal components (scikit-learn's PCA); with the axes' name
    and a note for the title."""
    if means.shape[1] <= 2:
        padded = torch.nn.functional.pad(means, (0, 2 - means.shape[1]))
        return padded, "z", ""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2).fit(means.double().numpy())
    share = pca.explained_variance_ratio_.sum()
    points = torch.from_numpy(pca.transform(means.double().numpy()))
    note = f"\nfirst two principal components of {means.shape[1]} ({share:.0%} of the variance)"
    return points, "PC", note


def save_latent_scatter(
    program: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, path: str | Path
) -> None:
    """The latent means of ``x`` (``diagnostics.latent_means``), coloured by ``labels``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points, axis, note = project(latent_means(program, x, labels).detach().float().cpu())
    labels = labels.cpu()
    classes = int(labels.max()) + 1 if len(labels) else 1
    fig, ax = plt.subplots(figsize=(6, 5))
    scatter = ax.scatter(
        points[:, 0], points[:, 1], c=labels, s=4, alpha=0.7,
        cmap="tab10" if classes <= 10 else "tab20", vmin=-0.5, vmax=max(classes, 10) - 0.5,
    )  # fmt: skip
    if classes <= 20:
        handles, names = scatter.legend_elements(num=list(range(classes)))
        ax.legend(handles, names, title="class", fontsize=7, loc="best", markerscale=0.8)
    ax.set_xlabel(f"{axis} 1")
    ax.set_ylabel(f"{axis} 2")
    ax.set_title(f"latent means of {len(x)} test datapoints{note}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@torch.no_grad()
def manifold(program: torch.nn.Module, n: int = 20, label: int | None = None):
    """``(n * n, *x_shape)``: the likelihood's mean at an ``n`` by ``n`` grid of the 2-D
    latent's prior quantiles, (i + 0.5) / n through the inverse normal CDF (scaled by the
    prior's own location and scale where it is a product of normals), row by row; None unless
    the program has exactly one continuous latent site, of 2 dimensions."""
    labels = {} if label is None else {"y": torch.full((1,), label, device=device_of(program))}
    kwargs = labels or {"batch_size": 1}
    sites = continuous_sites(poutine.trace(program.model).get_trace(None, **kwargs))
    if len(sites) != 1 or sites[0]["fn"].event_shape.numel() != 2:
        return None
    site = sites[0]
    quantiles = dist.Normal(0.0, 1.0).icdf((torch.arange(n) + 0.5) / n).to(device_of(program))
    rows, columns = torch.meshgrid(quantiles.flip(0), quantiles, indexing="ij")
    z = torch.stack([columns.reshape(-1), rows.reshape(-1)], dim=-1)
    prior = elementwise(site["fn"])
    if isinstance(prior, dist.Normal):
        z = prior.loc.reshape(-1)[-2:] + prior.scale.reshape(-1)[-2:] * z
    z = z.reshape(n * n, *site["fn"].event_shape)
    conditioned = poutine.condition(program.model, data={site["name"]: z})
    if label is None:
        trace = poutine.trace(conditioned).get_trace(None, batch_size=n * n)
    else:
        y = torch.full((n * n,), label, device=z.device)
        trace = poutine.trace(conditioned).get_trace(None, y=y)
    observed = trace.nodes[OBSERVED]
    try:
        values = observed["fn"].mean
    except NotImplementedError:
        values = observed["value"]
    return values.reshape(n * n, *program.x_shape)


def save_manifold(program: torch.nn.Module, path: str | Path, n: int = 20) -> bool:
    """Write the manifold grid (one small grid per class for a program that uses labels,
    Kingma et al. 2014's Fig. 1); False (nothing written) where ``manifold`` is None or the
    data are not images."""
    from torchvision.utils import make_grid, save_image

    if not getattr(program, "uses_labels", False):
        grid = manifold(program, n)
        images = None if grid is None else legible_images(grid)
        if images is None:
            return False
        save_image(images, str(path), nrow=n, padding=1, pad_value=0.5)
        return True
    side = max(2, n // 2)
    tiles = []
    for label in range(program.num_classes):
        grid = manifold(program, side, label)
        images = None if grid is None else legible_images(grid)
        if images is None:
            return False
        tiles.append(make_grid(images, nrow=side, padding=1, pad_value=0.5))
    save_image(torch.stack(tiles), str(path), nrow=5, padding=6, pad_value=1.0)
    return True


def save_latent_pictures(
    program: torch.nn.Module,
    directory: str | Path,
    x: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
) -> list[Path]:
    """``latent.png`` when the datapoints ``x`` have ``labels``, ``manifold.png`` for a 2-D
    latent; the paths written."""
    directory = Path(directory)
    written = []
    if x is not None and labels is not None and len(x) > 0:
        save_latent_scatter(program, x, labels, directory / LATENT_PICTURE)
        written.append(directory / LATENT_PICTURE)
    if save_manifold(program, directory / MANIFOLD_PICTURE):
        written.append(directory / MANIFOLD_PICTURE)
    return written
