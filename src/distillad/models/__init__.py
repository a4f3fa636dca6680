"""One file per method; importing it registers the method's name (a new method: one line here)."""

from . import (
    dmdd,  # noqa: F401
    dskd,  # noqa: F401
    dskd_fusion,  # noqa: F401
    dtsnet,  # noqa: F401
    patchcore,  # noqa: F401
    rd,  # noqa: F401
    rd_var,  # noqa: F401
    stfpm,  # noqa: F401
)
