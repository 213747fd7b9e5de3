"""The methods: one file per continual-learning method, each a class registered by name.

See README.md in this folder for the contract and the hooks. Method files import what they need from here:
``from . import Method, register``.
"""
from bench.method import Context, Method  # noqa: F401
from bench.registry import get, names, register, registry  # noqa: F401
