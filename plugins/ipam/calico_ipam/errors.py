"""The errors calico-ipam raises to its callers.

Datastore errors (``DatastoreUnavailable`` and the rest of
``pycalico.core.datastore.DatastoreError``) pass through unchanged; conflicts never do:
every compare-and-swap is retried inside, and ``TooManyConflicts`` says when the
retries ran out.
"""

from __future__ import annotations


class IPAMError(Exception):
    """Base of every calico-ipam error."""


class NoPool(IPAMError):
    """No IP pool may be used for the request (none enabled, none selecting this node
    or namespace, none allowing workloads, or a requested pool is unknown or disabled)."""


class IPAMExhausted(IPAMError):
    """The pools the request may use have no free address for it. The message names
    each pool and how full it is."""


class BlockLimitReached(IPAMExhausted):
    """This node's blocks are full and it may not claim another (maxBlocksPerHost)."""


class AddressInUse(IPAMError):
    """``assign_ip`` of an address that is already assigned (or cooling down)."""


class NotAssigned(IPAMError, LookupError):
    """The address is not assigned (free, cooling down, or in no block)."""


class StaleRelease(IPAMError):
    """A release named a handle or sequence number that no longer matches the
    allocation: the address was released and handed out again since the caller read it.
    Nothing in that block was released."""


class HandleInUse(IPAMError):
    """An assignment asked to create its handle (``new_handle``) found that the handle
    exists already; no address was assigned."""


class AffinityConflict(IPAMError):
    """The block is affine to another node (or to none) where this node's was needed."""


class TooManyConflicts(IPAMError):
    """Compare-and-swap kept failing: other writers changed the same records every
    time (Calico's "Max retries hit - excessive concurrent IPAM requests")."""
