"""Where the tests find the reference data (DAPG demos and expert weights): never part of the repo.

By default it is `../shared/data` beside the checkout. `AWAC_ROBOT_REFERENCE_DATA` names another
folder holding the same `adroit/` files, so a clone made elsewhere runs these tests instead of
skipping them; a test whose file is absent skips and names the path it looked at.
"""

from __future__ import annotations

import os
from pathlib import Path

BESIDE_CHECKOUT = Path(__file__).resolve().parents[2] / "shared" / "data"
ADROIT = Path(os.environ.get("AWAC_ROBOT_REFERENCE_DATA") or BESIDE_CHECKOUT) / "adroit"


def absent(path: Path) -> str:
    """The skip reason for a missing reference file: which path, and how to point the tests at the data."""
    return f"reference data absent: {path} (see ../shared/data/README.md, or set AWAC_ROBOT_REFERENCE_DATA)"
