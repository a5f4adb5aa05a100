"""Dependencies shared by the routes: the running service and the API-key check."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from app.errors import ErrorCode, ServiceError
from app.service import Service

bearer = HTTPBearer(auto_error=False, scheme_name="APIKey",
                    description="The key set in SENTIMENT_API_KEY, sent as `Authorization: Bearer <key>`.")


async def get_service(request: Request) -> Service:
    # async on purpose: FastAPI runs a plain `def` dependency on its thread pool, a thread hop per request.
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def api_key_dependency(key: SecretStr) -> Callable:
    expected = key.get_secret_value().encode()

    async def require_api_key(credentials: Credentials) -> None:
        if credentials is None:
            raise ServiceError(ErrorCode.UNAUTHORIZED, "this endpoint needs the API key: send the header "
                               "`Authorization: Bearer <key>`", {"WWW-Authenticate": 'Bearer realm="sentiment"'})
        # Constant time: how long the comparison takes says nothing about how much of the key was right.
        if not hmac.compare_digest(credentials.credentials.encode(), expected):
            raise ServiceError(ErrorCode.UNAUTHORIZED, "the API key is wrong: send the key configured in "
                               "SENTIMENT_API_KEY", {"WWW-Authenticate": 'Bearer realm="sentiment", '
                                                                         'error="invalid_token"'})

    return require_api_key


def auth_dependencies(key: SecretStr | None) -> list:
    """Router dependencies: the key check when a key is configured, nothing otherwise."""
    return [Depends(api_key_dependency(key))] if key is not None else []
