"""Handle counts: per handle, how many of its addresses each block holds.

The handle is the index ``release_by_handle`` and ``ips_by_handle`` read. The order of
writes keeps it an over-estimate, never an under-estimate: an allocation counts in the
handle *before* the block is written, a release *after* (as Calico does). A process that
dies between the two leaves a handle that counts too much, which ``check`` reports and
``repair`` (or the next ``release_by_handle``) corrects; never an address no handle
points at.
"""

from __future__ import annotations

import logging

from pycalico.core.datastore import AlreadyExists, Conflict, NotFound

from .errors import HandleInUse, TooManyConflicts
from .store import Store

log = logging.getLogger(__name__)

RETRIES = 100  # Calico's datastoreRetries


def add(store: Store, handle_id: str, cidr: str, num: int, new: bool = False) -> None:
    """Count ``num`` more addresses of ``handle_id`` in block ``cidr``. The handle is
    created without reading first: an allocation is nearly always a handle's first (a
    pod's), and a handle that exists fails the create, is read and updated; with
    ``new``, HandleInUse instead."""
    h = None
    for _ in range(RETRIES):
        try:
            if h is None:
                store.create_handle(handle_id, {cidr: num})
            else:
                counts = dict(h.spec.block or {})
                counts[cidr] = counts.get(cidr, 0) + num
                store.update_handle(h, counts)
            return
        except AlreadyExists:
            if new:
                raise HandleInUse(f"handle {handle_id} exists already") from None
            h = store.handle(handle_id)
        except (Conflict, NotFound):
            h = store.handle(handle_id)
    raise TooManyConflicts(f"handle {handle_id}: gave up after {RETRIES} conflicting updates")


def subtract(store: Store, handle_id: str, cidr: str, num: int | None) -> None:
    """Count ``num`` fewer addresses of ``handle_id`` in ``cidr`` (None: none left
    there). A handle that counts nothing any more is deleted. A missing handle is not an
    error: there is nothing to correct."""
    for _ in range(RETRIES):
        h = store.handle(handle_id)
        if h is None:
            return
        counts = dict(h.spec.block or {})
        have = counts.get(cidr, 0)
        left = 0 if num is None else have - num
        if left < 0:
            log.warning("handle %s: releasing %d addresses in %s but it counted %d", handle_id, num, cidr, have)
            left = 0
        if left:
            counts[cidr] = left
        else:
            counts.pop(cidr, None)
        try:
            if any(counts.values()):
                if counts != dict(h.spec.block or {}):
                    store.update_handle(h, counts)
            else:
                store.delete_handle(h)
            return
        except NotFound:
            return
        except Conflict:
            continue
    raise TooManyConflicts(f"handle {handle_id}: gave up after {RETRIES} conflicting updates")


def set_counts(store: Store, handle_id: str, counts: dict[str, int], expect_rv: str | None = None) -> bool:
    """Make the handle count exactly ``counts`` (deleting it if they are all zero).
    With ``expect_rv``, only if the handle is still at that version (False if not)."""
    counts = {c: n for c, n in counts.items() if n > 0}
    for _ in range(RETRIES):
        h = store.handle(handle_id)
        if expect_rv is not None and (h.metadata.resource_version if h else None) != expect_rv:
            return False
        try:
            if h is None:
                if counts:
                    store.create_handle(handle_id, counts)
            elif not counts:
                store.delete_handle(h)
            elif counts != dict(h.spec.block or {}):
                store.update_handle(h, counts)
            return True
        except (Conflict, AlreadyExists, NotFound):
            if expect_rv is not None:
                return False
            continue
    raise TooManyConflicts(f"handle {handle_id}: gave up after {RETRIES} conflicting updates")
