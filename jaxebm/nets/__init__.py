"""Flax Linen networks that give energies or logits (no training logic)."""

from jaxebm.nets.mlp import MLPEnergy

__all__ = ["MLPEnergy"]
