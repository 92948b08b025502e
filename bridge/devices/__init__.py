"""Device drivers: one folder per kind of GSM hardware (bridge/devices/<kind>/), all speaking
the protocol in base.py. registry.py lists the kinds; ``build_driver`` looks a device's kind up
there and lets the kind's folder build its driver from its config.
"""

from __future__ import annotations

from .base import Driver
from .registry import build_driver

__all__ = ["Driver", "build_driver"]
