"""Google-signed identity tokens (callers behind Cloud Run): verified with google-auth, mapped to an owner."""
from __future__ import annotations

import hashlib
import threading
import time

__all__ = ["GOOGLE_CERTS_URL", "IdTokens", "CertificatesUnavailable", "looks_like_jwt"]

GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
_ISSUERS = ("accounts.google.com", "https://accounts.google.com")
OWNER_PREFIX = "google-"


class CertificatesUnavailable(Exception):
    """Google's signing certificates could not be fetched: no token can be checked now (503)."""


def looks_like_jwt(token: str) -> bool:
    """Three base64url segments: what tells an identity token from an API key (`dcas_...`)."""
    return token.count(".") == 2 and token.startswith("eyJ")


class IdTokens:
    """Verifies `Authorization: Bearer <JWT>` tokens signed by Google for `audience` (the service's
    URL on Cloud Run) with google.oauth2.id_token.verify_token, against the keys at `certs_url`.

    The owner is `google-<sub>`: the account's stable id (an email can change hands, and mapping
    addresses onto folder names could make two accounts one owner). A verified token is remembered
    until it expires, so the certificates are fetched once per token, not per request.
    """

    def __init__(self, audience: str, certs_url: str = GOOGLE_CERTS_URL, max_entries: int = 10_000,
                 clock=time.time) -> None:
        if not audience:
            raise ValueError("identity tokens need an audience (the service's URL)")
        import google.auth.transport.requests
        self.audience, self.certs_url = audience, certs_url
        self._request = google.auth.transport.requests.Request()
        self._clock, self._max = clock, max_entries
        self._owners: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def owner_of(self, token: str) -> str:
        """The token's owner; ValueError saying why a token is refused."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = self._clock()
        with self._lock:
            found = self._owners.get(digest)
        if found is not None and found[1] > now:
            return found[0]
        claims = self._verify(token)
        if claims.get("iss") not in _ISSUERS:
            raise ValueError(f"the identity token was not issued by Google (iss={claims.get('iss')!r})")
        sub = str(claims.get("sub") or "")
        if not sub.isdigit() or len(sub) > 56:
            raise ValueError("the identity token names no Google account (sub)")
        owner = OWNER_PREFIX + sub
        with self._lock:
            if len(self._owners) >= self._max:
                self._owners.clear()
            self._owners[digest] = (owner, float(claims.get("exp", now)))
        return owner

    def _verify(self, token: str) -> dict:
        from google.auth import exceptions
        from google.oauth2 import id_token
        try:
            return dict(id_token.verify_token(token, self._request, audience=self.audience,
                                              certs_url=self.certs_url))
        except exceptions.TransportError as e:
            raise CertificatesUnavailable(f"cannot fetch the identity token certificates: {e}") from None
        except (ValueError, exceptions.GoogleAuthError) as e:
            raise ValueError(f"invalid identity token: {' '.join(str(e).split())[:200]}") from None
