"""calicoctl: Calico's resource CLI (create, apply, replace, delete, get, version).

Modules: ``main`` (the command line and the command registry), ``cli`` (option parsing,
the run context), ``commands`` (the resource verbs), ``resources`` (the verbs on a
Datastore, as pure functions returning results), ``files`` (manifests from files,
directories and stdin), ``kinds`` (kind names and table columns), ``printer`` (yaml,
json and table output) and ``version``.

Everything heavy (the resource types, the datastore plugins) is imported by the
command that needs it, so that ``calicoctl --help`` and argument errors stay cheap.
"""
