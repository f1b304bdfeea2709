"""Formatting shared by the printed tables: MiB, ratios, goal marks, the host line."""

from __future__ import annotations

import argparse
import os
import platform

from bench.video import MiB

#: Published SAM 2.1 speed, A100, bf16, torch.compile, one object (SAM 2 README).
PUBLISHED_A100_FPS = {"tiny": 91.2, "small": 84.8, "base_plus": 64.1, "large": 39.5}


def fmt_mib(b: float | None) -> str:
    return "—" if b is None else f"{b / MiB:,.0f}"


def fmt_ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or not b:
        return "—"
    return f"{a / b:.2f}"


def check(value: float | None, goal: float, *, at_least: bool = False) -> str:
    if value is None:
        return ""
    ok = value >= goal if at_least else value <= goal
    return " ✅" if ok else " ❌"


def host_line(args: argparse.Namespace) -> str:
    import torch

    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        dev = f"cuda ({torch.cuda.get_device_name(0)})"
    else:
        threads = args.threads or torch.get_num_threads()
        dev = f"cpu ({os.cpu_count()} cores, torch {threads} thread(s), {platform.processor() or platform.machine()})"
    return dev
