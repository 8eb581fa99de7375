"""A read-only datastore: the resources of one YAML file, as of when it is read."""

import threading
from pathlib import Path

import attrs

from pycalico.core.datastore import OperationNotSupported, Snapshot
from pycalico.core.resources.codec import load_resources
from pycalico.hooks import hookimpl


@attrs.frozen
class Options:
    path: str


class FileStore:
    def __init__(self, path: str):
        self.path = path

    def snapshot(self) -> Snapshot:
        return Snapshot(revision=1, resources=tuple(load_resources(Path(self.path).read_text(), self.path)))

    def create(self, resource):
        raise OperationNotSupported(resource.kind, resource.metadata.name, detail=f"{self.path} is a read-only datastore")

    update = create

    def watch(self, revision: int, stop: threading.Event):
        stop.wait()
        return iter(())

    def close(self) -> None:
        pass


class StaticFile:
    @hookimpl
    def pycalico_config_schema(self, slot, name):
        if (slot, name) == ("datastore", "static-file"):
            return Options

    @hookimpl
    def pycalico_datastore(self, config):
        return FileStore(config.datastore.options.path)
