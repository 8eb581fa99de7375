"""``python -m pycalico.plugins.datastore.kubernetes [--write | --check]``: print,
regenerate or check the shipped CRD manifests (see ``crds``)."""

from .crds import main

raise SystemExit(main())
