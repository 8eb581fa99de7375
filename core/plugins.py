"""The plugin manager: finds plugins, fills the slots calico.toml names, and calls hooks.

The rest of the code calls the methods of ``Plugins`` and never ``pm.hook`` strings,
so every hook has one caller that shows how it is used.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

import pluggy

from pycalico.core import config as cfg
from pycalico.core.calc import DesiredState
from pycalico.core.datastore import Datastore
from pycalico.core.report import PassReport
from pycalico.hooks import spec

HOOK_ONLY = "plugins"


def group(slot: str) -> str:
    """The entry-point group of a slot (or of hook-only plugins)."""
    return f"pycalico.{slot}"


class PluginError(Exception):
    """A plugin could not be loaded or broke the contract."""


Extra = Mapping[str, Mapping[str, object]]  # slot (or "plugins") -> name -> plugin


class Registry:
    """Which plugins exist: installed entry points plus plugins handed in directly
    (tests, embedding), which shadow entry points of the same name."""

    def __init__(self, extra: Extra | None = None, installed: bool = True):
        self._extra = extra or {}
        self._installed = installed  # False: only the handed-in plugins exist

    def _entry_points(self, slot: str, **match: str) -> list:
        return list(entry_points(group=group(slot), **match)) if self._installed else []

    def names(self, slot: str) -> list[str]:
        found = {ep.name for ep in self._entry_points(slot)}
        return sorted(found | set(self._extra.get(slot, {})))

    def load(self, slot: str, name: str) -> object:
        if name in self._extra.get(slot, {}):
            return self._extra[slot][name]
        for ep in self._entry_points(slot, name=name):
            try:
                obj = ep.load()
            except Exception as exc:
                raise PluginError(f"{slot} plugin {name!r} ({ep.value}) failed to import: {exc}") from exc
            return obj() if inspect.isclass(obj) else obj
        raise PluginError(f"no {slot} plugin named {name!r}")


class Plugins:
    """The registered plugins of one configuration, behind one method per hook."""

    def __init__(self, pm: pluggy.PluginManager, config: cfg.Config):
        self._pm = pm
        self.config = config

    @classmethod
    def load(
        cls,
        config: cfg.Config,
        source: str = "calico.toml",
        registry: Registry | None = None,
        configure: bool = True,
        slots: tuple[str, ...] = cfg.SLOTS,
    ) -> Plugins:
        """Register the plugins ``config`` names for ``slots`` (tools such as calicoctl
        need only the datastore), validate their tables and, unless ``configure`` is
        false (a dry check), configure them.

        Raises ConfigError for bad names or tables, PluginError for a broken plugin.
        """
        registry = registry or Registry()
        pm = pluggy.PluginManager("pycalico")
        pm.add_hookspecs(spec)
        for slot in slots:
            name = config.slot(slot).type
            if name in registry.names(slot):
                pm.register(registry.load(slot, name), name=f"{slot}:{name}")
        for name in registry.names(HOOK_ONLY):
            if name not in config.plugins.disabled:
                pm.register(registry.load(HOOK_ONLY, name), name=f"{HOOK_ONLY}:{name}")
        config = cfg.bind_plugins(
            config,
            installed=registry.names,
            schema=lambda slot, name: pm.hook.pycalico_config_schema(slot=slot, name=name),
            source=source,
            slots=slots,
        )
        try:
            pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(str(exc)) from exc
        if configure:
            pm.hook.pycalico_configure.call_historic(kwargs={"config": config})
        return cls(pm, config)

    def names(self) -> list[str]:
        """Registered plugins as ``slot:name``."""
        return sorted(name for name, _ in self._pm.list_name_plugin())

    def unconfigure(self) -> None:
        self._pm.hook.pycalico_unconfigure(config=self.config)

    def datastore(self) -> Datastore:
        store = self._pm.hook.pycalico_datastore(config=self.config)
        if store is None:
            raise PluginError(f"datastore plugin {self.config.datastore.type!r} returned no datastore")
        return store

    def ipam(self, datastore: Datastore) -> Any:
        return self._pm.hook.pycalico_ipam(config=self.config, datastore=datastore)

    def reconcile_node(self, state: DesiredState, datastore: Datastore, ipam: Any) -> tuple[str, ...]:
        return _lines(self._pm.hook.pycalico_reconcile_node(state=state, config=self.config, datastore=datastore, ipam=ipam))

    def reconcile(self, slot: str, state: DesiredState) -> tuple[str, ...]:
        """Run the reconcile hook of ``slot`` (``routing`` or ``policy``)."""
        hook = getattr(self._pm.hook, f"pycalico_reconcile_{slot}")
        return _lines(hook(state=state, config=self.config))

    def pass_done(self, report: PassReport) -> None:
        self._pm.hook.pycalico_pass_done(report=report)

    def node_status(self, state: DesiredState) -> list[tuple[str, str]]:
        return [pair for pairs in self._pm.hook.pycalico_node_status(state=state) if pairs for pair in pairs]


def _lines(results: list) -> tuple[str, ...]:
    """Every implementation's change lines, in one tuple."""
    return tuple(line for lines in results if lines for line in lines)
