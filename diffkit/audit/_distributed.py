"""Where this process sits among the processes of a sharded run (``accelerate launch``, ``torchrun``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

__all__ = ["DistState", "dist_state"]


@dataclass(frozen=True)
class DistState:
    """Where this process sits among the processes of a sharded run."""

    rank: int = 0
    world_size: int = 1
    device: Any = None
    state: Any = None  # accelerate.PartialState when launched with several processes

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.state is not None and self.world_size > 1:
            self.state.wait_for_everyone()


def dist_state() -> DistState:
    """The rank and world size under ``accelerate launch`` / ``torchrun``, else a single process.

    On machines without CUDA the processes talk over gloo (``PartialState(cpu=True)``).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistState()
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    return DistState(state.process_index, state.num_processes, state.device, state)
