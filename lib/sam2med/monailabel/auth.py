"""MONAI Label's token check, made to work with the pinned PyJWT, and the dependency sam2med's routes use.

MONAI Label 0.8.5 decodes tokens with `jwt.decode(token, key, options=...)` and no `algorithms`: PyJWT 2
refuses that call for every token ("It is required that you pass in a value for the 'algorithms'
argument"), so with auth on nobody could log in. `install_token_check` replaces the module's `from_token`
(looked up by `get_current_user` at each request) with one that accepts only the asymmetric algorithms an
OpenID realm signs with: a token signed with the realm's public key as an HMAC secret, or unsigned, is refused.
"""

from __future__ import annotations

import logging
from typing import Any

import jwt
from fastapi import Depends, HTTPException
from monailabel.config import settings
from monailabel.endpoints.user import auth as ml_auth

logger = logging.getLogger(__name__)

TOKEN_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"]


def _claim(payload: dict[str, Any], path: str) -> Any:
    """A claim by MONAI Label's `a#b` path notation (`realm_access#roles`)."""
    value: Any = payload
    for key in path.split("#"):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def from_token(token: str) -> ml_auth.User:
    """The user a realm-signed token names (with its roles); `jwt.InvalidTokenError` for any bad token."""
    if not settings.MONAI_LABEL_AUTH_ENABLE:
        return ml_auth.DEFAULT_USER
    try:
        key = ml_auth.get_public_key(settings.MONAI_LABEL_AUTH_REALM_URI)
    except Exception as err:  # the realm is down or answers garbage: not the client's fault, and not a 500
        logger.error("cannot fetch the auth realm's public key: %s", err)
        raise HTTPException(status_code=503, detail="the server cannot reach its auth realm to check the token") from None
    payload = jwt.decode(token, key, algorithms=TOKEN_ALGORITHMS,
                         options={"verify_signature": True, "verify_aud": False, "verify_exp": True})
    roles = _claim(payload, settings.MONAI_LABEL_AUTH_TOKEN_ROLES)
    return ml_auth.User(username=str(payload.get(settings.MONAI_LABEL_AUTH_TOKEN_USERNAME) or ""),
                        email=payload.get(settings.MONAI_LABEL_AUTH_TOKEN_EMAIL),
                        name=payload.get(settings.MONAI_LABEL_AUTH_TOKEN_NAME),
                        roles=[str(r) for r in roles] if isinstance(roles, list) else [])


def install_token_check() -> None:
    """Use `from_token` for every route's RBAC check (MONAI Label's and sam2med's)."""
    if ml_auth.from_token is not from_token:
        ml_auth.from_token = from_token
        if settings.MONAI_LABEL_AUTH_ENABLE:
            logger.info("auth on: tokens checked against %s (%s)", settings.MONAI_LABEL_AUTH_REALM_URI, ", ".join(TOKEN_ALGORITHMS))


def user_role() -> Any:
    """The dependency of a route any logged-in user may call (everyone when auth is off)."""
    return Depends(ml_auth.RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))
