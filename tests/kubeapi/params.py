"""Query parameters of list, watch and write requests: parsing with the
apiserver's rules (strconv.ParseBool, non-negative resourceVersions), the
ListOptions validation messages, and continue tokens in the etcd3 store's
format."""

from __future__ import annotations

import base64
import binascii
import json

from . import errors as e
from . import validation as v

RVM = "resourceVersionMatch"
LIST_TOO_OLD = "The resourceVersion for the provided list is too old."
CONTINUE_TOO_OLD = (
    "The provided continue parameter is too old to display a consistent list result. You can start a new "
    "list without the continue parameter, or use the continue token in this response to retrieve the "
    "remainder of the results. Continuing with the provided token results in an inconsistent list - objects "
    "that were created, modified, or deleted between the time the first chunk was returned and now may show "
    "up in the list."
)


def parse_bool(q: dict, name: str) -> bool | None:
    # strconv.ParseBool
    raw = q.get(name)
    if raw is None or raw == "":
        return None
    if raw in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if raw in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise e.bad_request(f'{name}: invalid value "{raw}": must be a boolean')


def parse_int(q: dict, name: str) -> int | None:
    raw = q.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise e.bad_request(f'{name}: invalid value "{raw}": must be an integer') from None


def parse_rv(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise e.bad_request(f'invalid resource version "{raw}": must be a non-negative integer')
    return value


def dry_run(q: dict) -> bool:
    value = q.get("dryRun")
    if value in (None, ""):
        return False
    if value != "All":
        raise e.bad_request(f'dryRun: Unsupported value: "{value}": supported values: "All"')
    return True


def list_option_errors(rv: str, match: str, token: str) -> list[v.FieldError]:
    """apimachinery validation.ValidateListOptions."""
    errs = []
    if match:
        if not rv:
            errs.append(v.forbidden(RVM, "resourceVersionMatch is forbidden unless resourceVersion is provided"))
        if token:
            errs.append(v.forbidden(RVM, "resourceVersionMatch is forbidden when continue is provided"))
        if match not in ("Exact", "NotOlderThan"):
            errs.append(v.not_supported(RVM, match, ["Exact", "NotOlderThan", ""]))
        if match == "Exact" and rv == "0":
            errs.append(v.forbidden(RVM, 'resourceVersionMatch "exact" is forbidden for resourceVersion "0"'))
    return errs


def watch_option_errors(match: str, send_initial: bool | None) -> list[v.FieldError]:
    """apimachinery validateWatchOptions."""
    errs = []
    if send_initial is not None and match != "NotOlderThan":
        errs.append(v.forbidden(RVM, "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"))
    if match:
        if send_initial is None:
            errs.append(v.forbidden(RVM, "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"))
        if match != "NotOlderThan":
            errs.append(v.not_supported(RVM, match, ["NotOlderThan"]))
    return errs


def encode_continue(start: str, revision: int) -> str:
    # storage.EncodeContinue: base64url(JSON) of the list revision and next key.
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": revision, "start": start}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_continue(token: str) -> tuple[str, int]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise e.bad_request(f"continue key is not valid: {exc}") from None
    data = data if isinstance(data, dict) else {}
    rv, start = data.get("rv"), data.get("start")
    if data.get("v") != "meta.k8s.io/v1" or not isinstance(rv, int) or rv == 0 or not isinstance(start, str):
        raise e.bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
    return start, rv
