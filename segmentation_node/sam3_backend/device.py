"""Run sam3 on a machine without CUDA.

sam3 0.1.4 hard-codes CUDA in constructors and inference paths (`device="cuda"`, `.cuda()`,
`pin_memory()`). Rather than patching the package, `cpu_redirect()` intercepts those calls at
the torch-function level and points them at the CPU. Where CUDA is available it does nothing.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch.overrides import TorchFunctionMode


def _is_cuda(device) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    return isinstance(device, int)  # a bare ordinal means a CUDA device


class _CudaToCpu(TorchFunctionMode):
    """Rewrites CUDA device arguments to CPU and makes `.cuda()` / `pin_memory()` no-ops."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in (torch.Tensor.cuda, torch.Tensor.pin_memory):
            return args[0]
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = torch.device("cpu")
        if func is torch.Tensor.to:
            # Tensor.to(device, ...) passes the device positionally.
            args = tuple(torch.device("cpu") if i > 0 and _is_cuda(a) and not isinstance(a, int)
                         else a for i, a in enumerate(args))
        return func(*args, **kwargs)


@contextlib.contextmanager
def cpu_redirect() -> Iterator[None]:
    """Context in which sam3 code that asks for CUDA gets the CPU (no-op when CUDA exists)."""
    if torch.cuda.is_available():
        yield
        return
    with _CudaToCpu():
        yield


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
