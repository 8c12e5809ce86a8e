"""Who may call what: the admin bearer token for the Admin service, and per-namespace API keys
for the Router service when any are configured.

Tokens are compared with hmac.compare_digest against every configured key (no early exit that
would leak which key matched), and never appear in a message or a log line.

A configured key or token that no caller can present stops the server at start, naming the
setting: one with leading or trailing whitespace (a newline from a secrets file, a space left in
a Docker `--env-file` line), since a Bearer value is read without it, or with a character gRPC
metadata cannot carry. Such a value is refused rather than stripped: the server then accepts
exactly the secret that was configured, and the operator learns that the value read was not
the one meant (a file or variable that delivers whitespace may deliver more than that).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import TypeVar

from routebook.errors import ConfigError, PermissionDenied, Unauthenticated

V = TypeVar("V")

ADMIN_PREFIX = "/routebook.v1.Admin/"
ROUTER_PREFIX = "/routebook.v1.Router/"

#: What the current call's caller may see of a decision: "full", "summary" or "none".
EVIDENCE_LEVEL: ContextVar[str] = ContextVar("evidence_level", default="none")
#: The namespaces the current Router call's key may use; None: any (no keys, or the admin).
#: RecordOutcome by decision_id checks it against the decision's namespace.
CALLER_NAMESPACES: ContextVar[frozenset[str] | None] = ContextVar("caller_namespaces", default=None)
#: The tenant the current Router call's key is bound to (api_key_tenants); None: unbound, the
#: request's own tenant field stands.
CALLER_TENANT: ContextVar[str | None] = ContextVar("caller_tenant", default=None)


def bearer_token(metadata: Sequence[tuple[str, str | bytes]]) -> str | None:
    for key, value in metadata:
        if key.lower() == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class Authenticator:
    def __init__(
        self,
        admin_token: str,
        router_keys: Mapping[str, Sequence[str]],
        default_namespace: str,
        evidence_levels: Mapping[str, str] | None = None,
        default_evidence: str = "full",
        key_tenants: Mapping[str, str] | None = None,
    ) -> None:
        if admin_token:
            _sendable(admin_token, "admin_token")
        self._admin = admin_token.encode()
        self._levels = [(k.encode(), v) for k, v in (evidence_levels or {}).items()]
        self._default_evidence = default_evidence
        self._default_namespace = default_namespace
        namespaces_of: dict[bytes, set[str]] = {}
        for namespace, keys in router_keys.items():
            # An empty list or key would switch the checks off (no key known: none required)
            # or open a namespace to a blank token: refuse both when the server starts.
            if not keys:
                raise ConfigError(
                    f"router_api_keys[{namespace!r}] is empty: give the namespace at least one "
                    "key, or leave it out (with no keys at all, the Router API is open)"
                )
            if any(not key.strip() for key in keys):
                raise ConfigError(f"router_api_keys[{namespace!r}] holds an empty key")
            for position, key in enumerate(keys, 1):
                _sendable(key, f"key {position} of router_api_keys[{namespace!r}]")
                namespaces_of.setdefault(key.encode(), set()).add(namespace)
        self._router_keys = list(namespaces_of.items())
        for key, level in (evidence_levels or {}).items():
            _sendable(key, f"the evidence_levels key for level {level!r}")
        for key, tenant in (key_tenants or {}).items():
            _sendable(key, f"the api_key_tenants key of tenant {tenant!r}")
        unknown = [k for k in (key_tenants or {}) if k.encode() not in namespaces_of]
        if unknown:
            raise ConfigError(
                f"api_key_tenants binds {len(unknown)} key(s) that are not in router_api_keys: "
                "a tenant can only be bound to a key the server checks"
            )
        self._tenants = [(k.encode(), t) for k, t in (key_tenants or {}).items()]

    def check(
        self,
        method: str,
        metadata: Sequence[tuple[str, str | bytes]],
        namespace: str | None,
        *,
        namespace_checked_later: bool = False,
    ) -> None:
        """Raise when the call is not allowed; otherwise set EVIDENCE_LEVEL for it.

        `namespace_checked_later`: the call acts in a namespace the request does not name (an
        outcome by decision_id lands in the decision's), so only the key is checked here and
        the service checks CALLER_NAMESPACES once it knows the namespace."""
        token = bearer_token(metadata)
        CALLER_NAMESPACES.set(None)
        CALLER_TENANT.set(None)
        if method.startswith(ADMIN_PREFIX):
            self._check_admin(token)
            EVIDENCE_LEVEL.set("full")
        elif method.startswith(ROUTER_PREFIX) and self._router_keys:
            if (
                token is not None
                and self._admin
                and hmac.compare_digest(token.encode(), self._admin)
            ):
                EVIDENCE_LEVEL.set("full")  # the admin token may call the Router too
                return
            allowed = self._check_router(
                token, None if namespace_checked_later else namespace or self._default_namespace
            )
            CALLER_NAMESPACES.set(frozenset(allowed))
            assert token is not None
            CALLER_TENANT.set(_match(token.encode(), self._tenants))
            EVIDENCE_LEVEL.set(_match(token.encode(), self._levels) or "summary")
        else:
            EVIDENCE_LEVEL.set(self._default_evidence)

    def _check_admin(self, token: str | None) -> None:
        if not self._admin:
            raise Unauthenticated("the Admin API is disabled: the server has no admin_token set")
        if token is None:
            raise Unauthenticated("the Admin API needs metadata 'authorization: Bearer <token>'")
        if not hmac.compare_digest(token.encode(), self._admin):
            raise Unauthenticated("the admin token is not valid")

    def _check_router(self, token: str | None, namespace: str | None) -> set[str]:
        """The namespaces the key may use; raises unless `namespace` (if given) is one."""
        if token is None:
            raise Unauthenticated(
                "this server requires an API key: send metadata 'authorization: Bearer <key>'"
            )
        allowed = _match(token.encode(), self._router_keys)
        if allowed is None:
            raise Unauthenticated("the API key is not valid")
        if namespace is not None and namespace not in allowed:
            raise PermissionDenied(f"this API key is not allowed for namespace {namespace!r}")
        return allowed


def _sendable(secret: str, setting: str) -> None:
    """Refuse a configured secret no caller can present (see the module docstring); the
    message names the setting, never the value."""
    if secret != secret.strip():
        raise ConfigError(
            f"{setting} has leading or trailing whitespace (a newline from a file, or a space "
            "in an env file?): callers' Bearer values are read without it, so none could "
            "match; remove it from the setting"
        )
    if any(not " " <= character <= "~" for character in secret):
        raise ConfigError(
            f"{setting} holds a character gRPC metadata cannot carry (only printable ASCII "
            "can be sent), so no caller could present it; use printable ASCII only"
        )


def _match(key: bytes, known: Sequence[tuple[bytes, V]]) -> V | None:
    """The value of `key` among `known`, compared in constant time against every entry (no
    early exit that would tell which one matched)."""
    found = None
    for candidate, value in known:
        if hmac.compare_digest(key, candidate):
            found = value
    return found
