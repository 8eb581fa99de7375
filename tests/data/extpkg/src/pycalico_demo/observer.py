"""An observer: appends one line per reconcile pass to $DEMO_OBSERVER_LOG."""

import os

from pycalico.hooks import hookimpl


@hookimpl
def pycalico_pass_done(report):
    path = os.environ.get("DEMO_OBSERVER_LOG")
    if path:
        with open(path, "a") as log:
            log.write(f"{report.number} {report.reason} {report.changed} {int(report.ok)}\n")
