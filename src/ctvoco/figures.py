"""What every figure the project draws shares: tick labels a reader takes in at a glance."""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter


def disable_offsets(fig: Figure) -> Figure:
    """Switch off the shared tick offset (``1e-3 + 1.0``) on every numeric axis of ``fig``.

    Tick labels then show each value in full instead of a difference to an offset printed in
    the corner of the axis.
    """
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            formatter = axis.get_major_formatter()
            if isinstance(formatter, ScalarFormatter):
                formatter.set_useOffset(False)
    return fig
