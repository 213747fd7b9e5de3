"""A method's role in the comparison: where its row goes in tables and whether it competes for bold.

Torch-free: the method contract (``bench.method``) declares a role per method, run records store it, and
the reporting reads it back without importing any method.
"""
from __future__ import annotations

# table order, top to bottom
ROLES = ("lower-reference",   # no continual learning at all (frozen: the zero-shot model)
         "naive",             # sequential fine-tuning (vanilla): the lower bound of every CL table
         "baseline",          # continual-learning methods from the literature
         "proposed",          # the paper's method and its variants (dns, dns-official)
         "upper-reference")   # sees old data (joint): not a continual-learning method
REFERENCES = ("lower-reference", "upper-reference")   # shown, never bolded


# what a method does to keep old tasks: the figures colour a family with one hue, so families are
# recognisable at a glance (the colours: bench/reporting/style.py)
FAMILIES = ("reference",       # frozen, joint: not continual learning
            "naive",           # sequential fine-tuning
            "regularisation",  # a penalty anchoring important weights (EWC, SI, MAS, L2)
            "distillation",    # the old model's similarities as targets (LwF, Co2L, CILA)
            "replay",          # a buffer of old pairs (ER, DER, GEM, A-GEM)
            "null-space",      # updates projected away from old tasks' inputs (DNS, GPM, Adam-NSCL)
            "optimiser",       # a different optimiser (C-Flat)
            "other")           # the default of a new method that declares none


def role_rank(role: str) -> int:
    return ROLES.index(role) if role in ROLES else ROLES.index("baseline")


def role_from_order(order: int) -> str:
    """The role of a run file written before roles existed (it recorded a numeric ``order``)."""
    if order < 5:
        return "lower-reference"
    if order == 5:
        return "naive"
    if order >= 30:
        return "upper-reference"
    return "proposed" if order >= 20 else "baseline"
