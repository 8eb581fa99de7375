"""``calicoctl crds``: print the CRD manifests this plugin ships, ready for
``kubectl apply -f -``. Registered in the ``pycalico.calicoctl`` entry-point group."""

from __future__ import annotations

DOC = """\
Usage:
  calicoctl crds

Description:
  Print the CustomResourceDefinitions of Calico's crd.projectcalico.org/v1 kinds that
  the Kubernetes datastore uses, as multi-document YAML (kubectl apply -f -).
"""


def run(argv: list[str], ctx) -> int:
    if argv[1:] in (["-h"], ["--help"]):
        ctx.out(DOC)
        return 0
    if argv[1:]:
        ctx.err(f"Invalid option: 'calicoctl {' '.join(argv)}'. Use flag '--help' to read about a specific subcommand.\n")
        return 1
    from .crds import crd_manifests

    ctx.out(crd_manifests())
    return 0
