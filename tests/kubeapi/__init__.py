"""A kube-apiserver stand-in for tests: an in-memory, HTTP/JSON implementation of
the Kubernetes API conventions pycalico's Kubernetes datastore relies on (global
resourceVersions, compare-and-swap updates, list paging, watch resume, bookmarks,
410 after compaction, CRDs). Test code only; see server.KubeAPIServer."""

from .server import DEFAULT_NAMESPACES, KubeAPIServer

__all__ = ["DEFAULT_NAMESPACES", "KubeAPIServer"]
