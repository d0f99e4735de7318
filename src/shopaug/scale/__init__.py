"""The same augmentation steps on Ray (``shopaug run --engine ray``); see docs/scale.md.

Needs ``pip install 'shopaug[scale]'``; importing this package does not import Ray.
"""

from __future__ import annotations

from shopaug.scale.engine import RayEngine, ray_engine

__all__ = ["RayEngine", "ray_engine"]
