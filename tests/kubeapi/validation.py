"""ObjectMeta validation with apimachinery's rules and wording (names, labels,
annotation keys): a plugin that builds a name or label a real server would refuse
(an IPAM block name with a '/', an upper-case node name) fails here too."""

from __future__ import annotations

import json
import re

_MISSING = object()


class Raw(str):
    """A value printed verbatim in an error (Go's %#v of a uint64 0 is "0x0")."""


class FieldError:
    """k8s.io/apimachinery/pkg/util/validation/field.Error."""

    _TYPES = {
        "Required": ("FieldValueRequired", "Required value"),
        "Forbidden": ("FieldValueForbidden", "Forbidden"),
        "Invalid": ("FieldValueInvalid", "Invalid value"),
        "TypeInvalid": ("FieldValueTypeInvalid", "Invalid value"),
        "NotSupported": ("FieldValueNotSupported", "Unsupported value"),
        "Duplicate": ("FieldValueDuplicate", "Duplicate value"),
        "TooLong": ("FieldValueTooLong", "Too long"),
    }

    def __init__(self, type_: str, field: str, detail: str = "", value=_MISSING):
        self.type, self.field, self.detail, self.value = type_, field, detail, value

    def body(self) -> str:
        label = self._TYPES[self.type][1]
        if self.value is not _MISSING and self.type not in ("Required", "Forbidden", "TooLong"):
            label = f"{label}: {_format(self.value)}"
        return f"{label}: {self.detail}" if self.detail else label

    def cause(self) -> dict:
        return {"reason": self._TYPES[self.type][0], "message": self.body(), "field": self.field}

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}"

    def __repr__(self) -> str:
        return f"FieldError({self})"


def _format(value) -> str:
    if isinstance(value, Raw):
        return str(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    return json.dumps(value, separators=(",", ":"))


def required(field: str, detail: str = "") -> FieldError:
    return FieldError("Required", field, detail)


def invalid(field: str, value, detail: str) -> FieldError:
    return FieldError("Invalid", field, detail, value)


def forbidden(field: str, detail: str) -> FieldError:
    return FieldError("Forbidden", field, detail)


def not_supported(field: str, value, supported: list[str]) -> FieldError:
    detail = "supported values: " + ", ".join(json.dumps(s) for s in supported)
    return FieldError("NotSupported", field, detail, value)


# --- names (k8s.io/apimachinery/pkg/util/validation) ---------------------------

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL = re.compile(rf"^{_LABEL}$")
_DNS1123_SUBDOMAIN = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and "
    "end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
_QUALIFIED_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for "
    "validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)


def dns1123_subdomain(value: str) -> list[str]:
    errs = []
    if len(value) > 253:
        errs.append("must be no more than 253 characters")
    if not _DNS1123_SUBDOMAIN.match(value):
        errs.append(_SUBDOMAIN_MSG)
    return errs


def dns1123_label(value: str) -> list[str]:
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _DNS1123_LABEL.match(value):
        errs.append(_LABEL_MSG)
    return errs


def qualified_name(value: str) -> list[str]:
    """A label or annotation key: an optional DNS-subdomain prefix, '/', a name."""
    prefix, _, name = value.rpartition("/")
    if "/" in value and not prefix:
        return ["prefix part must be non-empty"]
    errs = []
    if prefix:
        errs += ["prefix part " + m for m in dns1123_subdomain(prefix)]
    if not name:
        errs.append("name part must be non-empty")
    else:
        if len(name) > 63:
            errs.append("name part must be no more than 63 characters")
        if not _QUALIFIED_NAME.match(name):
            errs.append(_QUALIFIED_MSG)
    return errs


def label_value(value: str) -> list[str]:
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _LABEL_VALUE.match(value):
        errs.append(_LABEL_VALUE_MSG)
    return errs


NAME_RULES = {"subdomain": dns1123_subdomain, "label": dns1123_label}


def object_meta(meta: dict, name_rule: str) -> list[FieldError]:
    """ValidateObjectMeta's checks of name, generateName, labels and annotations."""
    errs = []
    name = meta.get("name") or ""
    if not name and not meta.get("generateName"):
        errs.append(required("metadata.name", "name or generateName is required"))
    elif name:
        for msg in NAME_RULES[name_rule](name):
            errs.append(invalid("metadata.name", name, msg))
    labels = meta.get("labels") or {}
    if not isinstance(labels, dict):
        return errs + [invalid("metadata.labels", labels, "must be a map of string to string")]
    for key, value in labels.items():
        for msg in qualified_name(key):
            errs.append(invalid("metadata.labels", key, msg))
        if not isinstance(value, str):
            errs.append(invalid(f"metadata.labels[{key}]", value, "must be a string"))
            continue
        for msg in label_value(value):
            errs.append(invalid("metadata.labels", value, msg))
    annotations = meta.get("annotations") or {}
    if not isinstance(annotations, dict):
        return errs + [invalid("metadata.annotations", annotations, "must be a map of string to string")]
    for key, value in annotations.items():
        for msg in qualified_name(key.lower()):
            errs.append(invalid("metadata.annotations", key, msg))
        if not isinstance(value, str):
            errs.append(invalid(f"metadata.annotations[{key}]", value, "must be a string"))
    if sum(len(k) + len(v) for k, v in annotations.items() if isinstance(v, str)) > 256 * 1024:
        errs.append(FieldError("TooLong", "metadata.annotations", "may not be more than 262144 bytes"))
    return errs
