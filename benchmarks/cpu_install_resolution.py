"""Which torch build does the README's one-step CPU install pick? A check of pip's resolver,
for machines that cannot reach PyTorch's CPU index.

The README installs with `--index-url https://download.pytorch.org/whl/cpu --extra-index-url
https://pypi.org/simple`. This script puts stand-in wheels in that index's place (empty
packages with the real names, versions and `+cpu` labels, torchvision pinning torch exactly as
the real one does), keeps PyPI for everything else, and asks pip what it would install
(`--dry-run --report`, nothing installed). It prints the torch and torchvision it picks and how
many CUDA packages (`nvidia-*`, `cuda-*`, `triton`) come with them, for two indexes:

- "in step": the CPU index carries the same newest versions as PyPI, as PyTorch publishes them;
- "lagging": the CPU index lacks PyPI's newest release, the case the one-step install cannot
  cover (pip then takes PyPI's newer CUDA build); `pip list | grep nvidia` tells.

Needs PyPI (a package registry); runs in about a minute:

    python benchmarks/cpu_install_resolution.py
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CUDA_PREFIXES = ("nvidia-", "cuda-", "triton")


def stand_in_wheel(index: Path, name: str, version: str, requires: list[str]) -> None:
    """An empty wheel with real metadata, and the package's page in a PEP 503 index."""
    dist = f"{name}-{version}"
    folder = index / name
    folder.mkdir(parents=True, exist_ok=True)
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {requirement}\n" for requirement in requires)
    files = {
        f"{name}/__init__.py": b"",
        f"{dist}.dist-info/METADATA": metadata.encode(),
        f"{dist}.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = ""
    with zipfile.ZipFile(folder / f"{dist}-py3-none-any.whl", "w") as wheel:
        for path, data in files.items():
            wheel.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record += f"{path},sha256={digest.decode()},{len(data)}\n"
        wheel.writestr(f"{dist}.dist-info/RECORD", record + f"{dist}.dist-info/RECORD,,\n")
    links = (f'<a href="{found.name}">{found.name}</a>\n' for found in sorted(folder.glob("*.whl")))
    (folder / "index.html").write_text("".join(links))


def pypi_newest(package: str) -> str:
    """PyPI's newest release of a package (pip's own answer, through any configured mirror)."""
    answer = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "index",
            "versions",
            package,
            "--index-url",
            "https://pypi.org/simple",
        ],
        capture_output=True,
        text=True,
        check=True,
        env=uncapped_environment(),
    ).stdout
    return answer.split("(", 1)[1].split(")", 1)[0]


def uncapped_environment() -> dict[str, str]:
    """pip as a user elsewhere runs it: no machine-wide version caps or local wheel folders."""
    return {**os.environ, "PIP_CONSTRAINT": "", "PIP_FIND_LINKS": "", "PIP_CONFIG_FILE": os.devnull}


def resolve(index: Path, report: Path) -> list[tuple[str, str, str]]:
    """(name, version, where from) for each package the README's command would install."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--report",
            str(report),
            "-e",
            f"{REPO}[test]",
            "--index-url",
            index.as_uri(),
            "--extra-index-url",
            "https://pypi.org/simple",
        ],
        check=True,
        env=uncapped_environment(),
    )
    installs = json.loads(report.read_text())["install"]
    return [
        (
            item["metadata"]["name"],
            item["metadata"]["version"],
            "CPU index" if item["download_info"]["url"].startswith("file:") else "PyPI",
        )
        for item in installs
    ]


def main() -> None:
    torch_version, vision_version = pypi_newest("torch"), pypi_newest("torchvision")
    older_torch, older_vision = "2.14.1", "0.29.1"  # one release behind, as the lagging index
    print(f"PyPI's newest: torch {torch_version}, torchvision {vision_version}")
    for label, pairs in (
        ("in step", [(older_torch, older_vision), (torch_version, vision_version)]),
        ("lagging", [(older_torch, older_vision)]),
    ):
        with tempfile.TemporaryDirectory() as scratch:
            index = Path(scratch) / "cpu"
            for torch_release, vision_release in pairs:
                stand_in_wheel(index, "torch", f"{torch_release}+cpu", ["filelock", "sympy"])
                stand_in_wheel(
                    index,
                    "torchvision",
                    f"{vision_release}+cpu",
                    ["numpy", f"torch=={torch_release}", "pillow>=5.3.0"],
                )
            picked = resolve(index, Path(scratch) / "report.json")
        builds = {
            name: f"{version} from {source}"
            for name, version, source in picked
            if name in ("torch", "torchvision")
        }
        cuda = [name for name, _, _ in picked if name.startswith(CUDA_PREFIXES)]
        print(
            f"{label:8s} CPU index: torch {builds['torch']}, torchvision "
            f"{builds['torchvision']}; {len(cuda)} CUDA packages; {len(picked)} in all"
        )


if __name__ == "__main__":
    main()
