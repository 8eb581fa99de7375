"""API errors as the kube-apiserver reports them: a ``Status`` object with the
HTTP code, reason and message wording of k8s.io/apimachinery/pkg/api/errors, so a
client that branches on ``reason`` or ``code`` (or greps ``message``) sees what a
real server would send."""

from __future__ import annotations

import json


class ApiError(Exception):
    """A request failure carried up to the HTTP layer and written as a Status."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None, list_meta: dict | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.list_meta = list_meta or {}

    def status(self) -> dict:
        out = {"kind": "Status", "apiVersion": "v1", "metadata": dict(self.list_meta), "status": "Failure"}
        out["message"] = self.message
        if self.reason:  # StatusReasonUnknown is "" and omitted, as Go's omitempty does
            out["reason"] = self.reason
        if self.details is not None:
            out["details"] = self.details
        out["code"] = self.code
        return out


def group_resource(resource: str, group: str) -> str:
    """schema.GroupResource.String(): "pods", "ippools.crd.projectcalico.org"."""
    return f"{resource}.{group}" if group else resource


def _details(name: str, group: str, kind: str, **extra) -> dict:
    out = {"name": name} if name else {}
    if group:
        out["group"] = group
    out["kind"] = kind
    out.update(extra)
    return out


def not_found(resource: str, group: str, name: str) -> ApiError:
    gr = group_resource(resource, group)
    msg = f'{gr} "{name}" not found' if name else f"{gr} not found"
    return ApiError(404, "NotFound", msg, _details(name, group, resource))


def no_route() -> ApiError:
    # What the apiserver's NotFound handler sends for a path nothing serves.
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def already_exists(resource: str, group: str, name: str, being_deleted: bool = False) -> ApiError:
    msg = f'{group_resource(resource, group)} "{name}" already exists'
    if being_deleted:
        msg = f"object is being deleted: {msg}"
    return ApiError(409, "AlreadyExists", msg, _details(name, group, resource))


# The optimistic-lock wording of generic/registry/store.go (OptimisticLockErrorMsg).
OPTIMISTIC_LOCK = "the object has been modified; please apply your changes to the latest version and try again"


def conflict(resource: str, group: str, name: str, why: str = OPTIMISTIC_LOCK) -> ApiError:
    """``resource`` is the plural for storage conflicts; rest.BeforeDelete passes the
    Kind instead (its preconditions use GroupResource{Resource: gvk.Kind})."""
    msg = f'Operation cannot be fulfilled on {group_resource(resource, group)} "{name}": {why}'
    return ApiError(409, "Conflict", msg, _details(name, group, resource))


def forbidden(resource: str, group: str, name: str, why: str) -> ApiError:
    msg = f'{group_resource(resource, group)} "{name}" is forbidden: {why}'
    return ApiError(403, "Forbidden", msg, _details(name, group, resource))


def invalid(kind: str, group: str, name: str, errors: list) -> ApiError:
    """422 from a list of validation.FieldError, worded like errors.NewInvalid."""
    gk = f"{kind}.{group}" if group else kind
    texts = [str(e) for e in errors]
    agg = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    causes = [e.cause() for e in errors]
    return ApiError(422, "Invalid", f'{gk} "{name}" is invalid: {agg}', _details(name, group, kind, causes=causes))


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def expired(message: str, continue_token: str | None = None) -> ApiError:
    # 410 with reason Expired (errors.NewResourceExpired); a list whose continue
    # token was compacted also carries a token to carry on inconsistently.
    meta = {"continue": continue_token} if continue_token else None
    return ApiError(410, "Expired", message, None, meta)


def too_large_resource_version(requested: int, current: int) -> ApiError:
    # storage.NewTooLargeResourceVersionError -> a 504 Timeout with a typed cause.
    details = {
        "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
        "retryAfterSeconds": 1,
    }
    return ApiError(504, "Timeout", f"Timeout: Too large resource version: {requested}, current: {current}", details)


def unsupported_media_type(accepted: list[str]) -> ApiError:
    msg = "the body of the request was in an unknown format - accepted media types include: " + ", ".join(accepted)
    return ApiError(415, "UnsupportedMediaType", msg, {})


def method_not_allowed() -> ApiError:
    return ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource", {})


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def unavailable() -> ApiError:
    return ApiError(503, "ServiceUnavailable", "the server is currently unable to handle the request (simulated outage)")


def unknown(message: str) -> ApiError:
    """A plain Go error reaching the handler: 500 with StatusReasonUnknown ("")."""
    return ApiError(500, "", message)


def success(name: str, group: str, resource: str, uid: str) -> dict:
    """The Status a DELETE answers with when the store does not return the object."""
    details = _details(name, group, resource, uid=uid)
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}


def encode(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"
