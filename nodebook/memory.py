"""Counting the memory autograd keeps for the backward pass.

The paper's claim (Sec. 2, Table 1) is that the adjoint method trains with
O(1) memory in the number of solver steps, where backpropagating through the
solver stores every intermediate activation, O(steps). ``saved_tensor_bytes``
measures exactly that: the bytes of the tensors autograd saves while ``fn``
runs (chapter "The adjoint method", memory section).
"""

from __future__ import annotations

from typing import Callable

import torch


def saved_tensor_bytes(fn: Callable[[], object]) -> int:
    """Run ``fn()`` with gradients enabled; return the bytes autograd saved.

    Every tensor that an autograd node saves for backward passes through a
    ``torch.autograd.graph.saved_tensors_hooks`` pack hook; a storage saved
    several times (say by two ops reading the same activation) is counted
    once. Parameters and inputs that are saved count too, so compare runs
    that differ in one thing only (e.g. the number of solver steps).
    """
    seen: dict = {}
    keep: list = []  # hold saved tensors so no storage address is reused mid-count

    def pack(x: torch.Tensor):
        keep.append(x)
        try:
            storage = x.untyped_storage()
            key = (storage.data_ptr(), storage.device)
            seen[key] = max(seen.get(key, 0), storage.nbytes())
        except (RuntimeError, NotImplementedError):  # e.g. sparse or meta tensors
            seen[id(x)] = x.numel() * x.element_size()
        return x

    def unpack(x):
        return x

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        fn()
    keep.clear()
    return sum(seen.values())
