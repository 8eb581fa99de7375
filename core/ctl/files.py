"""Manifests from ``-f``: a file, ``-`` (stdin), or a directory of ``.yaml``, ``.yml``
and ``.json`` files (its subdirectories too with ``-R``), walked in lexical order as
Calico's ``commands/file/iter.go`` walks them.

Every document of every file is loaded and validated before anything is sent to the
datastore: one bad document and :class:`FileInvalid` lists every problem (document and
field path each), so that nothing is applied.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from pycalico.core.ctl import kinds
from pycalico.core.ctl.resources import Item

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


class FileInvalid(Exception):
    """The input cannot be used; ``lines`` has one problem each."""

    def __init__(self, lines: list[str]):
        self.lines = list(lines)
        super().__init__("\n".join(self.lines))


class NoResources(Exception):
    """A file or directory without resources (and no ``--skip-empty``)."""


def manifest_paths(filename: str, recursive: bool) -> list[str]:
    """``filename`` itself, or the manifest files of the directory it names."""
    if filename == "-" or not os.path.isdir(filename):
        return [filename]
    found: list[str] = []

    def walk(directory: str) -> None:
        for entry in sorted(os.listdir(directory)):
            path = os.path.join(directory, entry)
            if os.path.isdir(path):
                if recursive:
                    walk(path)
            elif os.path.splitext(entry)[1].lower() in MANIFEST_SUFFIXES:
                found.append(path)

    walk(filename)
    return found


def read_text(path: str, stdin: Callable[[], str]) -> str:
    if path == "-":
        return stdin()
    try:
        return Path(path).read_text()
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise FileInvalid([f"open {path}: {reason}"]) from None
    except UnicodeDecodeError as exc:
        raise FileInvalid([f"{path}: not UTF-8 text: {exc.reason}"]) from None


def load_items(
    filename: str,
    *,
    recursive: bool = False,
    skip_empty: bool = False,
    stdin: Callable[[], str] = lambda: "",
    validate: bool = True,
    namespace_given: bool = False,
) -> list[Item]:
    """The resources of ``-f filename`` as Items, in order.

    ``validate`` applies Calico's validation (apply, create, replace); delete and get
    only need each document's identity. ``namespace_given`` (``-n`` was used) makes
    the items record whether a namespaced resource named its namespace.
    """
    from pycalico.core.resources.codec import ResourceError, load_resources

    paths = manifest_paths(filename, recursive)
    items: list[Item] = []
    problems: list[str] = []
    empty: str | None = None
    for path in paths:
        text = read_text(path, stdin)
        source = "<stdin>" if path == "-" else path
        try:
            resources = load_resources(text, source, validate=validate)
        except ResourceError as exc:
            problems += exc.lines
            continue
        if not resources:
            empty = empty or path
            continue
        written = None
        if namespace_given and any(type(r).NAMESPACED for r in resources):
            # Defaults put namespaced resources in "default"; -n needs what was written.
            written = load_resources(text, source, defaults=False, validate=False)
        for i, resource in enumerate(resources):
            kind = type(resource).KIND
            if kinds.managed(kind) is None:
                problems.append(
                    f'{source}: {kind} "{resource.name}": Unknown resource type ({kind}) and/or version '
                    f"({resource.api_version}): calicoctl does not manage {kind} resources"
                )
                continue
            namespace = resource.metadata.namespace or ""
            if written is not None:
                namespace = written[i].metadata.namespace or ""
            items.append(Item(kind, resource.name, namespace, resource))
    if problems:
        raise FileInvalid(problems)
    if not skip_empty:
        if empty is not None:
            raise NoResources(f"No resources specified in file {empty}")
        if not items:
            raise NoResources(f"No resources specified in directory {filename}")
    return items
