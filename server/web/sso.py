"""The university logins' protocols: OpenID Connect (authorization code + PKCE, by authlib; the ID
token checked with joserfc, authlib's JOSE library) and CAS 2.0/3.0 (a small client on httpx and
defusedxml). They answer who the provider says logged in; mapping that to a person, and the
state kept between the redirect and the callback, are services/login.py's.

Every failure raises `SsoError` with a reason code (logged, shown to the person as a generic
message): a login must never half-succeed.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode
from xml.etree.ElementTree import Element

import httpx
from authlib.deprecate import AuthlibDeprecationWarning
from defusedxml import ElementTree
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from server.config import LoginProvider

with warnings.catch_warnings():
    # authlib 1.9 warns at import that it would rather run on `httpx2`; httpx is what we have
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import OAuth2Client

log = logging.getLogger(__name__)

CAS_NS = "{http://www.yale.edu/tp/cas}"
_DISCOVERY_TTL_S = 3600.0
_discovery: dict[str, tuple[float, dict[str, Any], KeySet]] = {}


class SsoError(Exception):
    """A provider's answer that does not prove a login; `reason` is a short code for the log."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class Identity:
    """Who the provider says logged in: the key the person is mapped by, a name, other claims."""

    provider: str
    subject: str
    name: str
    claims: dict[str, Any]


def _client(p: LoginProvider, redirect_uri: str) -> OAuth2Client:
    return OAuth2Client(p.client_id, p.client_secret, scope=p.scopes, redirect_uri=redirect_uri,
                        code_challenge_method="S256", timeout=p.timeout_s,
                        token_endpoint_auth_method="client_secret_basic")


def _metadata(p: LoginProvider) -> tuple[dict[str, Any], KeySet]:
    """The provider's discovery document and keys, cached for an hour."""
    hit = _discovery.get(p.issuer)
    if hit and time.monotonic() - hit[0] < _DISCOVERY_TTL_S:
        return hit[1], hit[2]
    try:
        meta = httpx.get(p.issuer.rstrip("/") + "/.well-known/openid-configuration", timeout=p.timeout_s).json()
        if meta.get("issuer") != p.issuer:
            raise SsoError("issuer_mismatch", f"{meta.get('issuer')!r} != {p.issuer!r}")
        keys = KeySet.import_key_set(httpx.get(meta["jwks_uri"], timeout=p.timeout_s).json())
    except (httpx.HTTPError, ValueError, KeyError) as e:
        raise SsoError("discovery_failed", str(e)) from None
    _discovery[p.issuer] = (time.monotonic(), meta, keys)
    return meta, keys


def oidc_authorize_url(p: LoginProvider, redirect_uri: str, state: str, nonce: str, code_verifier: str) -> str:
    meta, _ = _metadata(p)
    with _client(p, redirect_uri) as c:
        url, _ = c.create_authorization_url(meta["authorization_endpoint"], state=state, nonce=nonce,
                                            code_verifier=code_verifier)
    return str(url)


def oidc_finish(p: LoginProvider, redirect_uri: str, code: str, nonce: str, code_verifier: str) -> Identity:
    """Exchange the code (with the PKCE verifier), check the ID token (signature, issuer, audience,
    expiry, nonce), read the user info, and name the subject by the configured claim."""
    meta, keys = _metadata(p)
    try:
        with _client(p, redirect_uri) as c:
            token = c.fetch_token(meta["token_endpoint"], grant_type="authorization_code", code=code,
                                  code_verifier=code_verifier)
            info: dict[str, Any] = {}
            if meta.get("userinfo_endpoint"):
                info = c.get(meta["userinfo_endpoint"]).json()
    except Exception as e:  # authlib raises its own errors, httpx its own; none may leak a half login
        raise SsoError("token_failed", str(e)) from None
    raw = token.get("id_token")
    if not isinstance(raw, str):
        raise SsoError("no_id_token")
    algs = meta.get("id_token_signing_alg_values_supported") or ["RS256"]
    try:
        try:
            decoded = jwt.decode(raw, keys, algorithms=algs)
        except JoseError:  # perhaps a key the provider rotated in since we cached its set: once more, fresh
            _discovery.pop(p.issuer, None)
            decoded = jwt.decode(raw, _metadata(p)[1], algorithms=algs)
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": p.issuer},
            aud={"essential": True, "value": p.client_id},
            sub={"essential": True},
            exp={"essential": True},
            nonce={"essential": True, "value": nonce},
        ).validate(decoded.claims)
    except (JoseError, ValueError) as e:
        raise SsoError("bad_id_token", str(e)) from None
    claims = dict(decoded.claims)
    if info:
        if info.get("sub") != claims.get("sub"):
            raise SsoError("userinfo_subject_mismatch")
        claims = {**info, **claims}
    return _identity(p, claims, p.subject_claim, p.name_claim)


def _identity(p: LoginProvider, claims: dict[str, Any], subject_key: str, name_key: str) -> Identity:
    subject = claims.get(subject_key)
    if not isinstance(subject, str | int) or not str(subject).strip() or len(str(subject)) > 200:
        raise SsoError("no_subject", f"claim {subject_key!r} missing or unusable")
    name = claims.get(name_key)
    return Identity(provider=p.id, subject=str(subject).strip(), name=str(name or "")[:100], claims=claims)


# -- CAS -----------------------------------------------------------------------------------------


def cas_login_url(p: LoginProvider, service: str) -> str:
    return f"{p.cas_url.rstrip('/')}/login?{urlencode({'service': service})}"


def cas_validate(p: LoginProvider, service: str, ticket: str) -> Identity:
    """Validate a service ticket at /serviceValidate (CAS 2.0) or /p3/serviceValidate (3.0, with
    attributes). The CAS server refuses a ticket used before or issued for another service."""
    if not ticket.startswith("ST-") or len(ticket) > 256:
        raise SsoError("bad_ticket")
    path = "/p3/serviceValidate" if p.cas_version == 3 else "/serviceValidate"
    try:
        r = httpx.get(p.cas_url.rstrip("/") + path, params={"service": service, "ticket": ticket},
                      timeout=p.timeout_s)
        r.raise_for_status()
    except httpx.HTTPError as e:
        raise SsoError("cas_unreachable", str(e)) from None
    user, attributes = parse_cas_response(r.content)
    claims: dict[str, Any] = {"user": user, **attributes}
    return _identity(p, claims, p.cas_subject_attribute or "user", p.name_claim)


def parse_cas_response(body: bytes) -> tuple[str, dict[str, Any]]:
    """The user and attributes of a CAS serviceResponse; `SsoError` for a failure or junk.
    defusedxml refuses entities and DTDs (no billion laughs, no external entities)."""
    try:
        root = ElementTree.fromstring(body)
    except Exception as e:  # defusedxml's refusals and ParseError alike
        raise SsoError("cas_bad_xml", str(e)[:200]) from None
    if root.tag != CAS_NS + "serviceResponse":
        raise SsoError("cas_bad_xml", root.tag)
    failure = root.find(CAS_NS + "authenticationFailure")
    if failure is not None:
        raise SsoError("cas_refused", f"{failure.get('code')}: {(failure.text or '').strip()[:200]}")
    ok = root.find(CAS_NS + "authenticationSuccess")
    user = ok.findtext(CAS_NS + "user") if ok is not None else None
    if ok is None or not user or not user.strip():
        raise SsoError("cas_bad_xml", "no authenticationSuccess/user")
    attributes: dict[str, Any] = {}
    node: Element | None = ok.find(CAS_NS + "attributes")
    for child in list(node) if node is not None else []:
        if child.tag.startswith(CAS_NS):
            attributes.setdefault(child.tag[len(CAS_NS):], (child.text or "").strip())
    return user.strip(), attributes
