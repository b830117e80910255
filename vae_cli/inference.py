"""What the commands do with a trained checkpoint: evaluate, sample, reconstruct, interpolate,
and look at the latent space. Each function writes its output and returns what it wrote."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from vae_cli import images, plots
from vae_cli.checkpoint import load_checkpoint
from vae_cli.config import Config
from vae_cli.data import load_dataset, prepare_images, to_float
from vae_cli.device import resolve_device
from vae_cli.errors import UserError
from vae_cli.evaluate import evaluate_elbo, importance_weighted_nll
from vae_cli.model import VAE, posterior_samples
from vae_cli.runs import run_data_dir, run_dir_of


@dataclass
class Loaded:
    model: VAE
    config: Config
    checkpoint: dict[str, Any]
    path: Path
    device: torch.device
    picked: dict[str, Any] | None = None  # why this model, when the user named none

    @property
    def run_dir(self) -> Path:
        """The run folder a checkpoint belongs to (where default outputs go)."""
        return run_dir_of(self.path)

    def data_dir(self, flag: Path | None) -> Path:
        return run_data_dir(self.run_dir, flag)


def note_latest_run(loaded: Loaded, runs_dir: Path) -> None:
    """Record that the latest run was picked (which, with its status if not finished)."""
    from vae_cli.population import is_population, member_folders
    from vae_cli.run_files import read_status

    status = read_status(loaded.run_dir)
    state = "" if status == "finished" else f", {status}"
    epoch = loaded.checkpoint["epoch"]
    population = loaded.run_dir.parent
    which = f"the latest run in {runs_dir}{state}"
    if is_population(population):  # the same member as --checkpoint POPULATION picks
        count = len(member_folders(population))
        which = f"the best by test loss of the {count} members of {population}, {which}"
    loaded.picked = {
        "run": str(loaded.run_dir),
        "checkpoint": str(loaded.path),
        "status": status,
        "line": f"using {loaded.run_dir} ({which}): {loaded.path.name}, epoch {epoch}",
    }


def note_population_member(loaded: Loaded, population: Path) -> None:
    """Record which member of a population was used for a command that needs one model."""
    from vae_cli.population import member_folders

    count = len(member_folders(population))
    loaded.picked = {
        "run": str(loaded.run_dir),
        "checkpoint": str(loaded.path),
        "status": "",
        "line": f"using {loaded.run_dir}: the best of the {count} members of {population} by "
        f"test loss (pass --checkpoint {population}/MEMBER for another)",
    }


def load_model(path: Path, device_name: str = "auto") -> Loaded:
    device = resolve_device(device_name)
    checkpoint = load_checkpoint(path, map_location=device)
    config = checkpoint["config"]
    model = VAE(config.model).to(device)
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError:
        raise UserError(
            f"{path}: weights do not match the model its config describes "
            f"(latent_dim {config.model.latent_dim}, hidden_dim "
            f"{config.model.hidden_dim}, arch {config.model.arch})"
        ) from None
    model.eval()
    return Loaded(model, config, checkpoint, path, device)


def save_picture(save: Any, path: Path) -> Path:
    """Run a picture writer, turning disk problems into one-line errors."""
    from vae_cli.outputs import check_output_name, make_output_folder

    check_output_name(path)
    make_output_folder(path)
    try:
        return save()
    except OSError as error:
        raise UserError(f"--out {path}: cannot write ({error.strerror or error})") from None


def test_images(
    loaded: Loaded, data_dir: Path, limit: int | None, binarize: str | None = None
) -> tuple[torch.Tensor, ...]:
    """The checkpoint's dataset's test images as floats (in the checkpoint's binarization
    unless `binarize` says otherwise), and their labels."""
    dataset = load_dataset(data_dir, loaded.config.data.dataset, limit)
    _, test = prepare_images(dataset, binarize or loaded.config.data.binarize)
    return to_float(test).to(loaded.device), dataset.test_labels


def evaluate_checkpoint(
    loaded: Loaded,
    data_dir: Path,
    *,
    iw_samples: int | None = None,
    limit: int | None = None,
    binarize: str | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """The test-set report of `vae eval`; `progress(done, total)` follows the IW estimate."""
    x, _ = test_images(loaded, data_dir, limit, binarize)
    elbo = evaluate_elbo(loaded.model, x)
    result: dict[str, Any] = {
        "checkpoint": str(loaded.path),
        "epoch": loaded.checkpoint["epoch"],
        "step": loaded.checkpoint["step"],
        "dataset": loaded.config.data.dataset,
        "binarize": binarize or loaded.config.data.binarize,
        "trained_binarize": loaded.config.data.binarize,
        **asdict(elbo),
    }
    if loaded.picked is not None:  # no --checkpoint: say which run answered
        result["latest_run"] = {key: loaded.picked[key] for key in ("run", "status")}
    if iw_samples:
        estimate = importance_weighted_nll(loaded.model, x, iw_samples, progress=progress)
        result["iw"] = asdict(estimate)
    # A Bernoulli decoder gives pixels in {0, 1} a probability; scored on continuous pixels
    # its "log-likelihood" is a cross-entropy, not log p(x).
    result["likelihood"] = result["binarize"] != "none"
    if not result["likelihood"]:
        result["caveat"] = CONTINUOUS_CAVEAT
    return result


CONTINUOUS_CAVEAT = (
    "continuous pixels (binarize=none): the Bernoulli decoder's log-likelihood of non-binary "
    "pixels is a cross-entropy, not log p(x), so the loss, IW NLL and bits/dim are not "
    "likelihoods and do not compare with binarized-MNIST results (evaluate with --binarize "
    "static or dynamic, or train with --binarize dynamic)"
)


def prior_noise(loaded: Loaded, n: int, seed: int, temperature: float = 1.0) -> list[torch.Tensor]:
    """z of the top layer's prior and, below it, the noise of each lower layer, drawn on the
    CPU from `seed` (the same picture on every device), scaled by the temperature."""
    generator = torch.Generator().manual_seed(seed)
    sizes = loaded.model.latent_dims[::-1]  # the top first, then down
    return [temperature * torch.randn(n, size, generator=generator) for size in sizes]


@torch.no_grad()
def write_samples(loaded: Loaded, out: Path, *, n: int, seed: int, temperature: float) -> Path:
    """Ancestral samples: the top layer's prior, then each layer below given the one above."""
    noise = [z.to(loaded.device) for z in prior_noise(loaded, n, seed, temperature)]
    pixels = torch.sigmoid(loaded.model.generate(*noise))
    return save_picture(lambda: images.save_grid(pixels, out, nrow=8), out)


@torch.no_grad()
def write_manifold(loaded: Loaded, out: Path, *, side: int) -> Path:
    """The decoded 2-D top latent over a grid of the prior's quantiles (lower layers at
    their means)."""
    top = loaded.model.latent_dims[-1]
    if top != 2:
        raise UserError(
            f"--grid needs a model whose top latent is 2-D; {loaded.path} has {top} dimensions "
            "(train one with --latent-dim 2, or --latent2-dim 2 with two stochastic layers)"
        )
    pixels = torch.sigmoid(loaded.model.generate(images.latent_grid(side).to(loaded.device)))
    return save_picture(lambda: images.save_grid(pixels, out, nrow=side), out)


@torch.no_grad()
def write_reconstructions(
    loaded: Loaded, data_dir: Path, out: Path, *, n: int, seed: int, mean_only: bool
) -> Path:
    """The first n test images, each over its reconstruction."""
    x, _ = test_images(loaded, data_dir, None)
    x = x[:n]
    generator = torch.Generator(device=loaded.device).manual_seed(seed)
    pixels = torch.sigmoid(loaded.model(x, generator, mean_only=mean_only)[0])
    nrow = min(n, 8)
    grid = images.interleave_rows(
        images.pad_to_rows(x, nrow), images.pad_to_rows(pixels, nrow), nrow
    )
    return save_picture(lambda: images.save_grid(grid, out, nrow=nrow), out)


@torch.no_grad()
def write_interpolation(
    loaded: Loaded,
    data_dir: Path,
    out: Path,
    *,
    from_index: int | None,
    to_index: int | None,
    seed: int,
    steps: int,
) -> tuple[Path, int, int]:
    """Decoded points on the straight line between the mu of two test images, originals at
    both ends. Without indices, the seed picks the two images."""
    x, _ = test_images(loaded, data_dir, None)
    if (from_index is None) != (to_index is None):
        raise UserError("give both --from-index and --to-index, or neither (then --seed picks)")
    if from_index is None:
        from_index, to_index = torch.randperm(
            len(x), generator=torch.Generator().manual_seed(seed)
        )[:2].tolist()
    for flag, index in (("--from-index", from_index), ("--to-index", to_index)):
        if not 0 <= index < len(x):
            raise UserError(f"{flag} {index}: the test set has images 0 to {len(x) - 1}")
    mu, _ = loaded.model.encode(x[[from_index, to_index]])
    weights = torch.linspace(0, 1, steps, device=loaded.device).unsqueeze(1)
    path_z = (1 - weights) * mu[0] + weights * mu[1]  # (steps, D)
    row = torch.cat(
        [
            x[from_index : from_index + 1],
            torch.sigmoid(loaded.model.decode(path_z)),
            x[to_index : to_index + 1],
        ]
    )
    save_picture(lambda: images.save_grid(row, out, nrow=len(row)), out)
    return out, from_index, to_index


@dataclass
class LatentView:
    inputs: torch.Tensor  # (n, 784) pixels of the chosen test images
    input_mu: torch.Tensor  # (n, 2) their mu in the 2-D view
    input_sigma: torch.Tensor  # (n, 2) their posterior std along the view's axes
    clouds: torch.Tensor  # (n, S, 2) samples z ~ q(z|x) in the view
    test_mu: torch.Tensor  # (M, 2) mu of every test image in the view
    test_labels: torch.Tensor  # (M,)
    axis_names: tuple[str, str]
    input_labels: torch.Tensor  # (n,) the chosen images' digit labels: their clouds' colour
    layer: str = "z"  # the latent shown: z, or z1 (the bottom layer) of a two-layer model


@torch.no_grad()
def latent_view(
    loaded: Loaded,
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    n_inputs: int,
    samples_per_input: int,
    seed: int,
) -> LatentView:
    """Project mu and posterior samples to 2-D: the latent itself when D = 2, else the PCA of
    the test set's mu."""
    mu_parts, logvar_parts = zip(
        *(loaded.model.encode(x[i : i + 1000]) for i in range(0, len(x), 1000)), strict=True
    )
    mu, logvar = torch.cat(mu_parts).cpu(), torch.cat(logvar_parts).cpu()
    layer = "z" if len(loaded.model.latent_dims) == 1 else "z1"
    if mu.shape[1] == 2:
        dimensions = ("z1", "z2") if layer == "z" else ("z1[0]", "z1[1]")
        centre, basis, names = torch.zeros(2), torch.eye(2), dimensions
    else:
        centre = mu.mean(0)
        basis = torch.linalg.svd(mu - centre, full_matrices=False).Vh[:2].T  # (D, 2)
        names = ("PC1 of mu", "PC2 of mu") if layer == "z" else ("PC1 of mu1", "PC2 of mu1")
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(x), generator=generator)[:n_inputs]
    z = posterior_samples(mu[chosen], logvar[chosen], samples_per_input, generator)
    z = z.transpose(0, 1)  # (n, S, D)
    sigma = torch.exp(0.5 * logvar[chosen])
    return LatentView(
        inputs=x[chosen].cpu(),
        input_mu=(mu[chosen] - centre) @ basis,
        input_sigma=(sigma.pow(2) @ basis.pow(2)).sqrt(),
        clouds=(z - centre) @ basis,
        test_mu=(mu - centre) @ basis,
        test_labels=labels,
        input_labels=labels[chosen],
        axis_names=names,
        layer=layer,
    )


def write_latent_figure(
    loaded: Loaded, data_dir: Path, out: Path, *, n_inputs: int, samples_per_input: int, seed: int
) -> Path:
    x, labels = test_images(loaded, data_dir, None)
    view = latent_view(
        loaded, x, labels, n_inputs=n_inputs, samples_per_input=samples_per_input, seed=seed
    )
    return save_picture(lambda: plots.save_latent_figure(view, out), out)


def write_export(loaded: Loaded, path: Path) -> Path:
    """The loaded model as a .safetensors file (see checkpoint.export_safetensors)."""
    from vae_cli.checkpoint import export_safetensors
    from vae_cli.outputs import check_output_name

    check_output_name(path, ".safetensors")
    state = {**loaded.checkpoint, "model": loaded.model.state_dict()}
    export_safetensors(state, path)
    return path
