#!/usr/bin/env python3
"""Download official SAM 2.1 checkpoints, with a progress bar and a size and checksum check.

    python scripts/download_checkpoints.py --size tiny            # one size
    python scripts/download_checkpoints.py --size all --dir checkpoints

Each file is downloaded to a temporary name, its length checked against the server's
Content-Length, its SHA-256 computed, then it is loaded into the matching SAM 2 model
(strict key check) before being renamed into place. A ``<name>.sha256`` file is written next to
it; later runs verify existing files against it instead of downloading again.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml_backend.models import CHECKPOINT_BASE_URL, MODEL_CONFIGS, checkpoint_name  # noqa: E402


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_loadable(path: Path, size: str) -> None:
    """Load the file into the SAM 2 model of ``size`` with strict keys (raises on mismatch)."""
    import torch
    from sam2.build_sam import build_sam2

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"not a loadable checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path} has no 'model' entry; not a SAM 2 checkpoint")
    model = build_sam2(MODEL_CONFIGS[size], ckpt_path=None, device="cpu")
    model.load_state_dict(state["model"], strict=True)


def download(size: str, folder: Path, base_url: str, check_model: bool) -> Path:
    import httpx
    from tqdm import tqdm

    name = checkpoint_name(size)
    dest = folder / name
    sum_file = folder / f"{name}.sha256"
    if dest.is_file() and sum_file.is_file():
        expected = sum_file.read_text().split()[0]
        if sha256(dest) == expected:
            print(f"{dest}: present, checksum ok")
            return dest
        print(f"{dest}: checksum mismatch, downloading again")
    folder.mkdir(parents=True, exist_ok=True)
    url = f"{base_url.rstrip('/')}/{name}"
    tmp = folder / f".{name}.part"
    digest = hashlib.sha256()
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=60) as response:
            response.raise_for_status()
            total = int(response.headers.get("content-length") or 0)
            with tmp.open("wb") as out, tqdm(total=total or None, unit="B", unit_scale=True, desc=name) as bar:
                for chunk in response.iter_bytes(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        got = tmp.stat().st_size
        if total and got != total:
            raise OSError(f"{name}: received {got} bytes, expected {total}")
        if check_model:
            verify_loadable(tmp, size)
        os.replace(tmp, dest)
        sum_file.write_text(f"{digest.hexdigest()}  {name}\n")
        print(f"{dest}: {got} bytes, sha256 {digest.hexdigest()}")
        return dest
    except (httpx.HTTPError, OSError, ValueError, RuntimeError) as exc:
        tmp.unlink(missing_ok=True)
        raise SystemExit(
            f"error: could not download {url}: {exc}\n"
            "Without network access, copy the .pt file into the folder by hand, or use "
            "SAM2_CHECKPOINT=random for a smoke run (random weights)."
        ) from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="tiny", choices=[*MODEL_CONFIGS, "all"])
    parser.add_argument("--dir", default=os.environ.get("SAM2_CHECKPOINT_DIR", "checkpoints"), type=Path)
    parser.add_argument("--base-url", default=CHECKPOINT_BASE_URL)
    parser.add_argument("--no-model-check", action="store_true", help="skip loading the file into the model")
    args = parser.parse_args()
    sizes = list(MODEL_CONFIGS) if args.size == "all" else [args.size]
    for size in sizes:
        download(size, args.dir, args.base_url, not args.no_model_check)
    return 0


if __name__ == "__main__":
    sys.exit(main())
