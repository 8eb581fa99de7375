"""A policy 'dataplane' that writes which local endpoints it would guard to a file."""

from pathlib import Path

import attrs

from pycalico.hooks import hookimpl


@attrs.frozen
class Options:
    output: str
    verdict: str = "allow"


@hookimpl
def pycalico_config_schema(slot, name):
    if (slot, name) == ("policy", "demo-policy"):
        return Options


@hookimpl
def pycalico_reconcile_policy(state, config):
    opts = config.policy.options
    wanted = "".join(f"{ep.metadata.name} {opts.verdict}\n" for ep in state.local("WorkloadEndpoint"))
    out = Path(opts.output)
    if out.exists() and out.read_text() == wanted:
        return []
    out.write_text(wanted)
    return [f"wrote {wanted.count(chr(10))} endpoint(s) to {out}"]
