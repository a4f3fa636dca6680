"""One file per method; importing it registers the method's name (a new method: one line here)."""

from . import rd  # noqa: F401
from . import stfpm  # noqa: F401
from . import rd_var  # noqa: F401
from . import dskd  # noqa: F401
from . import dtsnet  # noqa: F401
from . import dmdd  # noqa: F401
from . import dskd_fusion  # noqa: F401
