"""Class order: which condition is the reference (label 0) and which is exposed (the last label).

One rule for every way a store is made — ``prepare`` from a plate map and the crops importer: the
``conditions`` setting when given (exactly the conditions the input holds, the reference first), else
the condition whose name reads like a reference (Ref, control, DMSO, untreated, vehicle, …) first and
the others sorted by name. Never the order in which rows happen to appear: a plate map that lists the
treated wells first would make them the reference, and every fraction would be measured backwards.
The order chosen is logged as a warning whenever ``conditions`` was not given.
"""

from __future__ import annotations

import logging
import re

from protocell.prepare.io import InputError

log = logging.getLogger("protocell.prepare")

REFERENCE_NAMES = r"^(ref|reference|control|ctrl|dmso|untreated|mock|vehicle|neg|negative|wt|wild[ _-]?type)"


def class_order(present, given=None, source: str = "the plate map") -> list[str]:
    """Conditions in class order (the reference first, the exposed population last). ``present``: every
    row's condition ("" or None: a row without one, scored only, not a class); ``given``: the
    ``conditions`` setting (None or empty: the rule of the module doc); ``source`` names the input in
    messages."""
    found = list(dict.fromkeys(str(c) for c in present if c is not None and str(c) != ""))
    if given:
        order = [str(x) for x in given]
        unknown = [x for x in found if x not in order]
        absent = [x for x in order if x not in found]
        if unknown or absent or len(set(order)) < len(order):
            raise InputError(
                f"conditions={order} does not match the conditions of {source} {found}: "
                + "; ".join(
                    ([f"not listed: {unknown}"] if unknown else [])
                    + ([f"no image has {absent}"] if absent else [])
                    + (["listed twice"] if len(set(order)) < len(order) else [])
                )
                + ". List exactly the conditions, reference first (or leave conditions=null)"
            )
        return order
    refs = sorted(c for c in found if re.match(REFERENCE_NAMES, c.lower()))
    order = refs[:1] + sorted(c for c in found if c not in refs[:1])
    if len(order) > 1:
        why = (
            f"{order[0]!r} reads like a reference"
            if refs
            else "no condition reads like a reference (Ref, control, DMSO, untreated, …), so the first by name is"
        )
        more = f" (so do {refs[1:]}: they are exposed classes here)" if len(refs) > 1 else ""
        log.warning(
            "class order %s: %s%s — label 0, the reference; %r is the exposed class. If that is wrong, set "
            "conditions=[<reference>,<exposed>]",
            order,
            why,
            more,
            order[-1],
        )
    return order
