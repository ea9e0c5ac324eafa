"""Jupyter explorers (ipywidgets 8): thin layers over diffkit's library functions.

Display one in a notebook cell::

    from diffkit.widgets import ScheduleExplorer
    ScheduleExplorer()

Importing this module needs no display and no kernel.
"""

from __future__ import annotations

from .forward_chain import ForwardChainExplorer
from .reverse_chain import ReverseChainExplorer
from .reverse_compare import ReverseChainCompare
from .schedule import ScheduleExplorer
from .two_pixel import TwoPixelExplorer

__all__ = [
    "ForwardChainExplorer",
    "ReverseChainCompare",
    "ReverseChainExplorer",
    "ScheduleExplorer",
    "TwoPixelExplorer",
]
