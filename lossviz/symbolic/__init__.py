"""Symbolic helpers: stable sympy primitives and their numeric lowering (numpy, torch, mpmath)."""

from .functions import LogSigmoid, LogSumExp, Sigmoid, elementary, stabilize
from .lower import MP_DIGITS, lower

__all__ = ["Sigmoid", "LogSigmoid", "LogSumExp", "elementary", "stabilize", "lower", "MP_DIGITS"]
