"""The resource verbs: ``create``, ``apply``, ``replace``, ``delete`` and ``get``.

Each reads its manifests (or the kind and names on the command line) first, so that a
bad manifest is refused before the datastore is contacted; then connects, checks the
cluster's version (as Calico does, unless ``--allow-version-mismatch``), runs the verb
over every resource and prints Calico's summary lines.
"""

from __future__ import annotations

import os
from typing import Any

from pycalico.core.ctl import cli, kinds
from pycalico.core.ctl.cli import Context, Opt

FILENAME = Opt("--filename", "-f", value=True)
RECURSIVE = Opt("--recursive", "-R")
SKIP_EMPTY = Opt("--skip-empty")
CONFIG = Opt("--config", "-c", value=True)
NAMESPACE = Opt("--namespace", "-n", value=True)
CONTEXT = Opt("--context", value=True)
ALLOW_MISMATCH = Opt("--allow-version-mismatch")
COMMON = [FILENAME, RECURSIVE, SKIP_EMPTY, CONFIG, NAMESPACE, CONTEXT, ALLOW_MISMATCH]

_OPTIONS_HELP = """\
  -h --help                    Show this screen.
  -f --filename=<FILENAME>     A manifest (YAML or JSON; several documents, lists and
                               <Kind>Lists allowed), "-" for stdin, or a directory:
                               each .yaml, .yml and .json file in it is used.
  -R --recursive               With a directory, also use its subdirectories.
     --skip-empty              Do not fail on files or directories without resources.
  -c --config=<CONFIG>         The calico.toml naming the datastore. Without it:
                               $CALICO_CONFIG, else DATASTORE_TYPE, ETCD_ENDPOINTS,
                               ETCD_*_FILE and KUBECONFIG from the environment.
  -n --namespace=<NS>          Namespace of namespaced resources (NetworkPolicy,
                               NetworkSet, WorkloadEndpoint) that name none; those
                               that do must name this one. Default: "default".
     --context=<context>       The kubeconfig context to use.
     --allow-version-mismatch  Do not compare this client's version with the cluster's.
"""

RESOURCE_LIST = """\
    * bgpConfiguration
    * bgpPeer
    * clusterInformation (read only)
    * felixConfiguration
    * globalNetworkPolicy
    * globalNetworkSet
    * hostEndpoint
    * ipamConfiguration
    * ipPool
    * ipReservation
    * kubeControllersConfiguration
    * networkPolicy
    * networkSet
    * node
    * profile
    * tier
    * workloadEndpoint
"""

DOCS = {
    "create": f"""\
Usage:
  calicoctl create --filename=<FILENAME> [--recursive] [--skip-empty] [--skip-exists]
                   [--config=<CONFIG>] [--namespace=<NS>] [--context=<context>] [--allow-version-mismatch]

Examples:
  calicoctl create -f ./policy.yaml
  cat policy.json | calicoctl create -f -

Options:
{_OPTIONS_HELP}     --skip-exists             Count resources that already exist as created.

Description:
  Creates the resources of a manifest, in order. Valid resource types are:

{RESOURCE_LIST}
  A resource that already exists is an error unless --skip-exists is given. If any
  document of the manifest is invalid, nothing is created.
""",
    "apply": f"""\
Usage:
  calicoctl apply --filename=<FILENAME> [--recursive] [--skip-empty]
                  [--config=<CONFIG>] [--namespace=<NS>] [--context=<context>] [--allow-version-mismatch]

Examples:
  calicoctl apply -f ./policy.yaml
  cat policy.json | calicoctl apply -f -

Options:
{_OPTIONS_HELP}
Description:
  Creates each resource of a manifest that does not exist yet and replaces the
  specification of each one that does (the whole specification: give every field).
  Labels and annotations are added to the stored ones. Valid resource types are:

{RESOURCE_LIST}
  Resources are applied in order. If any document of the manifest is invalid,
  nothing is applied.
""",
    "replace": f"""\
Usage:
  calicoctl replace --filename=<FILENAME> [--recursive] [--skip-empty]
                    [--config=<CONFIG>] [--namespace=<NS>] [--context=<context>] [--allow-version-mismatch]

Examples:
  calicoctl replace -f ./policy.yaml
  cat policy.json | calicoctl replace -f -

Options:
{_OPTIONS_HELP}
Description:
  Replaces the specification of each resource of a manifest; a resource that does
  not exist is an error. With metadata.resourceVersion set, the stored resource must
  still be at that version. Valid resource types are:

{RESOURCE_LIST}""",
    "delete": f"""\
Usage:
  calicoctl delete ( (<KIND> [<NAME>...]) |
                   --filename=<FILENAME> [--recursive] [--skip-empty] )
                   [--skip-not-exists] [--config=<CONFIG>] [--namespace=<NS>] [--context=<context>]
                   [--allow-version-mismatch]

Examples:
  calicoctl delete -f ./policy.yaml
  calicoctl delete policy foo bar

Options:
{_OPTIONS_HELP}  -s --skip-not-exists         Count resources that do not exist as deleted.

Description:
  Deletes resources named in a manifest, or of one type by name. The type is
  case-insensitive and may be plural or short (ippool, ippools, ipp, pool). Valid
  resource types are:

{RESOURCE_LIST}""",
    "get": f"""\
Usage:
  calicoctl get ( (<KIND> [<NAME>...]) |
                --filename=<FILENAME> [--recursive] [--skip-empty] )
                [--output=<OUTPUT>] [--config=<CONFIG>] [--namespace=<NS>] [--all-namespaces]
                [--export] [--context=<context>] [--allow-version-mismatch]

Examples:
  calicoctl get policy
  calicoctl get -o yaml policy my-policy-1 my-policy-2
  calicoctl get workloadendpoints -A -o wide

Options:
{_OPTIONS_HELP}  -o --output=<OUTPUT FORMAT>  ps (the default), wide, yaml, json or
                               custom-columns=<HEADING>[,<HEADING>...].
  -A --all-namespaces          List namespaced resources of every namespace.
     --export                  With names: leave out the cluster-specific metadata
                               (namespace, uid, resourceVersion, creationTimestamp).

Description:
  Shows resources of one type (all of them, or those named), or those named in a
  manifest. The type is case-insensitive and may be plural or short. Valid
  resource types are:

{RESOURCE_LIST}
  YAML and JSON output can be given back to create, apply, replace and delete.
""",
}

OPTIONS = {
    "create": [*COMMON, Opt("--skip-exists")],
    "apply": COMMON,
    "replace": COMMON,
    "delete": [*COMMON, Opt("--skip-not-exists", "-s")],
    "get": [*COMMON, Opt("--output", "-o", value=True, default="ps"), Opt("--all-namespaces", "-A"), Opt("--export")],
}


# --- connecting ------------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    return "; ".join(line for line in str(exc).splitlines() if line.strip()) or type(exc).__name__


def connect(ctx: Context, config_path: str | None) -> Any:
    """The datastore, or None after printing why not (Calico prints these on stdout)."""
    if config_path and not os.path.exists(config_path):
        ctx.out(f"Error reading config file: {config_path}\n")
        return None
    try:
        return ctx.open_datastore(config_path, ctx.env)
    except Exception as exc:  # config, plugin or connection: one line, never a traceback
        ctx.out(f"Failed to create Calico API client: {_one_line(exc)}\n")
        return None


class Unreachable(Exception):
    pass


def version_mismatch(datastore: Any, allow: bool) -> str | None:
    """Calico's CheckVersionMismatch: the error text, or None to go on.

    Raises Unreachable when the datastore cannot be reached at all."""
    if allow:
        return None
    from pycalico.core.ctl.version import client_version
    from pycalico.core.datastore import DatastoreError, DatastoreUnavailable, NotFound

    try:
        info = datastore.get("ClusterInformation", "default")
    except NotFound:
        return None
    except DatastoreUnavailable as exc:
        raise Unreachable(_one_line(exc)) from None
    except DatastoreError as exc:
        return (
            f"Unable to get Cluster Information to verify version mismatch: {exc}\n"
            "Use --allow-version-mismatch to override.\n"
        )
    cluster = info.spec.calico_version
    if not cluster:
        return None
    cluster = cluster.removeprefix("v").split("-")[0]
    client = client_version()
    if cluster != client.removeprefix("v").split("-")[0]:
        return (
            f"Version mismatch.\nClient Version:   {client}\nCluster Version:  {cluster}\n"
            "Use --allow-version-mismatch to override.\n"
        )
    return None


# --- the verbs -------------------------------------------------------------------------------


def create(argv: list[str], ctx: Context) -> int:
    return run("create", argv, ctx)


def apply(argv: list[str], ctx: Context) -> int:
    return run("apply", argv, ctx)


def replace(argv: list[str], ctx: Context) -> int:
    return run("replace", argv, ctx)


def delete(argv: list[str], ctx: Context) -> int:
    return run("delete", argv, ctx)


def get(argv: list[str], ctx: Context) -> int:
    # -a is the old spelling of -A.
    return run("get", [("-A" if a == "-a" else a) for a in argv], ctx)


class _Output:
    """The -o choice of get."""

    def __init__(self, spec: str):
        self.format, self.headings, self.wide = "", None, False
        if spec in ("yaml", "yml"):
            self.format = "yaml"
        elif spec == "json":
            self.format = "json"
        elif spec in ("ps", "wide"):
            self.format, self.wide = "table", spec == "wide"
        else:
            key, _, value = spec.partition("=")
            if key == "custom-columns":
                if not value:
                    raise ValueError("need to specify at least one column")
                self.format, self.headings = "table", value.split(",")
            else:
                raise ValueError(f"unrecognized output format '{spec}'")


def run(verb: str, argv: list[str], ctx: Context) -> int:
    from pycalico.core.ctl import files
    from pycalico.core.ctl import resources as res

    doc = DOCS[verb]
    try:
        values, positional = cli.parse(OPTIONS[verb], argv[1:])
    except cli.UsageError:
        ctx.err(cli.usage_section(doc))
        ctx.err(cli.invalid_option(argv))
        return 1
    if values["help"]:
        ctx.out(doc)
        return 0
    by_file = values["filename"] is not None
    if (by_file and positional) or (not by_file and (verb not in ("delete", "get") or not positional)):
        ctx.err(cli.usage_section(doc))
        ctx.err(cli.invalid_option(argv))
        return 1

    def fail(message: str) -> int:
        ctx.err(f"Failed to get resources: {message}\n" if verb == "get" else f"{message}\n")
        return 1

    output = None
    if verb == "get":
        try:
            output = _Output(values["output"])
        except ValueError as exc:
            ctx.err(f"{exc}\n")
            return 1
    if values["context"]:
        ctx.env["K8S_CURRENT_CONTEXT"] = values["context"]
    namespace = values["namespace"] or ""
    options = res.Options(
        namespace=namespace,
        all_namespaces=bool(values.get("all-namespaces")),
        skip_exists=bool(values.get("skip-exists")),
        skip_not_exists=bool(values.get("skip-not-exists")),
        export=bool(values.get("export")),
    )

    # What to act on: every document checked before the datastore is contacted.
    if by_file:
        try:
            items = files.load_items(
                values["filename"],
                recursive=values["recursive"],
                skip_empty=values["skip-empty"],
                stdin=ctx.stdin.read,
                validate=verb in ("create", "apply", "replace"),
                namespace_given=bool(namespace),
            )
        except files.FileInvalid as exc:
            ctx.err("Failed to execute command: " + "\n".join(exc.lines) + "\n")
            return 1
        except files.NoResources as exc:
            return fail(str(exc))
        if not items:
            if verb == "get":
                ctx.out("null\n" if output.format in ("yaml", "json") else "")
            else:
                ctx.out("No resources specified\n")
            return 0
    else:
        spec = kinds.lookup(positional[0])
        if spec is None:
            return fail(f"resource type '{positional[0]}' is not supported")
        names = positional[1:]
        if "" in names:
            return fail("resource name may not be empty")
        items = [res.Item(spec.kind, name) for name in names or [""]]
        options.single_kind = True
        options.name_specified = bool(names)

    datastore = connect(ctx, values["config"])
    if datastore is None:
        return 1
    try:
        try:
            problem = version_mismatch(datastore, values["allow-version-mismatch"] or ctx.allow_version_mismatch)
        except Unreachable as exc:
            ctx.out(f"Failed to create Calico API client: {exc}\n")
            return 1
        if problem:
            return fail(problem)
        results = res.execute(datastore, items, verb, options, sleep=ctx.sleep)
        if verb != "get":
            outcome = res.summarize(verb, results)
            ctx.out(outcome.stdout)
            ctx.err(outcome.stderr)
            return outcome.code
        return _print(ctx, datastore, output, results, print_namespace=options.all_namespaces or bool(namespace))
    finally:
        _close(datastore)


def _close(datastore: Any) -> None:
    close = getattr(datastore, "close", None)
    if close is not None:
        try:
            close()
        except Exception:  # closing must not hide the command's own outcome
            pass


def _print(ctx: Context, datastore: Any, output: _Output, results: Any, print_namespace: bool) -> int:
    from pycalico.core.ctl import printer

    if output.format == "yaml":
        ctx.out(printer.render_yaml(results.resources) if results.resources else "null\n")
    elif output.format == "json":
        ctx.out(printer.render_json(results.resources))
    else:
        try:
            for table in printer.render_tables(
                results.resources,
                output.headings,
                output.wide,
                print_namespace and output.headings is None,
                _config_lookup(datastore),
            ):
                ctx.out(table)
        except printer.PrintError as exc:
            ctx.err(f"{exc}\n")
            return 1
    if results.res_errs:
        ctx.err("\n".join(results.res_errs) + "\n")
        return 1
    return 0


def _config_lookup(datastore: Any):
    """Calico's template function ``config "asnumber"``: the default BGPConfiguration's
    AS number, 64512 when unset, "unknown" when it cannot be read."""
    cache: dict[str, str] = {}

    def config(name: str) -> str:
        if name != "asnumber":
            raise KeyError(name)
        if "asnumber" not in cache:
            from pycalico.core.ctl.kinds import as_number
            from pycalico.core.datastore import NotFound

            try:
                asn = datastore.get("BGPConfiguration", "default").spec.as_number
                cache[name] = "64512" if asn is None else as_number(asn)
            except NotFound:
                cache[name] = "64512"
            except Exception:
                cache[name] = "unknown"
        return cache[name]

    return config
