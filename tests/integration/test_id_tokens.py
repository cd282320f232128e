"""Google-signed identity tokens, verified by google-auth against certificates a local server publishes (a key made here)."""
from __future__ import annotations

import contextlib
import datetime
import http.server
import json
import threading
import time
import types

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient
from google.auth import crypt, jwt

from adapters.memory import InMemoryBlobStore, InMemoryJobQueue, InMemoryKeyStore, InMemoryStatusStore
from services import keys
from services.http import HttpSettings, create_app
from services.http.main import id_tokens_from_env
from services.identity import IdTokens

AUDIENCE = "https://dcas-manager-abc123.a.run.app"
KID = "test-key-1"


def rsa_key_and_cert():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dcas test signer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return pem, cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def signer():
    private, cert = rsa_key_and_cert()
    return types.SimpleNamespace(private=private, cert=cert)


@contextlib.contextmanager
def certs_server(certs: dict[str, str]):
    """Google's certificate endpoint, in the format it serves ({kid: x509 PEM}), counting fetches."""
    fetches = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            fetches.append(self.path)
            body = json.dumps(certs).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/oauth2/v1/certs", fetches
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def token(private: bytes, **claims) -> str:
    now = int(time.time())
    payload = {"iss": "https://accounts.google.com", "aud": AUDIENCE, "sub": "110248495921238986420",
               "email": "ann@example.com", "email_verified": True, "iat": now, "exp": now + 600, **claims}
    return jwt.encode(crypt.RSASigner.from_string(private, KID), payload).decode()


def app_with(certs_url: str):
    adapters = types.SimpleNamespace(queue=InMemoryJobQueue(), status=InMemoryStatusStore(),
                                     blobs=InMemoryBlobStore(), keys=InMemoryKeyStore())
    settings = HttpSettings("bkt", id_tokens=IdTokens(AUDIENCE, certs_url))
    return adapters, TestClient(create_app(adapters, settings))


@pytest.fixture(scope="module")
def served(signer):
    """One certificate server and one app for the tests that only read."""
    with certs_server({KID: signer.cert}) as (url, fetches):
        adapters, client = app_with(url)
        yield types.SimpleNamespace(url=url, fetches=fetches, adapters=adapters, client=client)


def test_a_google_signed_token_for_our_audience_authenticates_its_account(signer):
    with certs_server({KID: signer.cert}) as (url, fetches):
        adapters, client = app_with(url)
        bearer = {"Authorization": f"Bearer {token(signer.private)}"}
        response = client.post("/v1/jobs", params={"operation": "compress", "filename": "t.txt"}, content=b"hi",
                               headers=bearer)
        assert response.status_code == 202, response.text
        assert adapters.queue.messages[0].owner == "google-110248495921238986420"
        assert client.get(f"/v1/jobs/{response.json()['job_id']}", headers=bearer).status_code == 200
        assert len(fetches) == 1  # a verified token is remembered until it expires
        api_key = keys.create_key(adapters.keys, "ann")  # API keys work beside tokens
        assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {api_key}"}).status_code == 200


@pytest.mark.parametrize("claims, why", [
    ({"aud": "https://someone-else.a.run.app"}, "audience"),
    ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, "expired"),
    ({"iss": "https://evil.example.com"}, "issued by Google"),
    ({"sub": ""}, "names no Google account"),
])
def test_tokens_for_another_audience_expired_or_not_from_google_get_401(signer, served, claims, why):
    response = served.client.get("/v1/jobs", headers={"Authorization": f"Bearer {token(signer.private, **claims)}"})
    assert response.status_code == 401 and why.lower() in response.json()["error"].lower(), response.text


def test_a_token_signed_by_another_key_under_the_same_id_gets_401(served):
    forger, _ = rsa_key_and_cert()
    response = served.client.get("/v1/jobs", headers={"Authorization": f"Bearer {token(forger)}"})
    assert response.status_code == 401 and "signature" in response.json()["error"].lower()


def test_certificates_that_cannot_be_fetched_answer_503_not_401(signer):
    with certs_server({}) as (url, _):
        pass  # stopped: nothing listens there any more
    _, client = app_with(url)
    response = client.get("/v1/jobs", headers={"Authorization": f"Bearer {token(signer.private)}"})
    assert response.status_code == 503 and "certificates" in response.json()["error"]


def test_identity_tokens_are_off_unless_an_audience_is_configured():
    assert id_tokens_from_env({}) is None
    configured = id_tokens_from_env({"DCAS_ID_TOKEN_AUDIENCE": AUDIENCE, "DCAS_ID_TOKEN_CERTS_URL": "http://c/certs"})
    assert (configured.audience, configured.certs_url) == (AUDIENCE, "http://c/certs")
