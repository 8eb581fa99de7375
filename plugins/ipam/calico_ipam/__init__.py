"""calico-ipam: Calico's block-affinity IP address management.

Each node claims blocks (default /26, /122) of the IP pools that select it and hands
out addresses from them; when it can claim no more it borrows from other nodes' blocks
unless strictAffinity forbids it. Everything lives in the datastore as Calico keeps it
(IPAMBlock, BlockAffinity, IPAMHandle, IPAMConfig), written only with compare-and-swap.

Modules: ``blocks`` (arithmetic on one block), ``pools`` (pool selection, block walk,
reservations), ``store`` (typed datastore access), ``handles`` (handle counts),
``allocator`` (auto_assign, assign_ip), ``release`` (release by address, handle,
affinity; queries), ``check`` (check, repair, usage), ``ipam`` (the ``IPAM`` class).

Registered through the entry point ``calico-ipam`` of the group ``pycalico.ipam``; it
takes no options (so no ``[ipam.calico-ipam]`` table).
"""

from __future__ import annotations

from pycalico.hooks import hookimpl

from .allocator import AssignResult
from .check import PoolUsage, Problem, Report
from .errors import (
    AddressInUse,
    AffinityConflict,
    BlockLimitReached,
    HandleInUse,
    IPAMError,
    IPAMExhausted,
    NoPool,
    NotAssigned,
    StaleRelease,
    TooManyConflicts,
)
from .ipam import IPAM
from .release import Assignment, ReleaseOptions

NAME = "calico-ipam"

__all__ = [
    "NAME",
    "IPAM",
    "AddressInUse",
    "AffinityConflict",
    "AssignResult",
    "Assignment",
    "BlockLimitReached",
    "HandleInUse",
    "IPAMError",
    "IPAMExhausted",
    "NoPool",
    "NotAssigned",
    "PoolUsage",
    "Problem",
    "ReleaseOptions",
    "Report",
    "StaleRelease",
    "TooManyConflicts",
    "plugin",
]


class CalicoIPAMPlugin:
    """The hook implementations; ``plugin`` below is the registered instance."""

    @hookimpl
    def pycalico_ipam(self, config, datastore) -> IPAM | None:
        if config.ipam.type != NAME:
            return None
        return IPAM(datastore, node=config.hostname)


plugin = CalicoIPAMPlugin()
