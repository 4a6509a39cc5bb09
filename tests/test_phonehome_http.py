"""Phone home's transport (hypervisor_core/phonehttp.py): HTTPS trusts exactly the CA the unit config pins, the base
URL is checked before anything is sent, every exchange is bounded in time and size, and it works on the core's
Python, which has no idna codec."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hypervisor_core import phonehttp

from .bounded import alarm
from .conftest import REPO
from .firstboot_kit import PUB
from .test_phonehome import AGENT_REPORT, SERIAL, Box, Service, seal

Key = ec.EllipticCurvePrivateKey


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn: str) -> tuple[Key, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return key, cert


def make_server_cert(ca: tuple[Key, x509.Certificate], names: list[str], folder: Path) -> ssl.SSLContext:
    """A TLS server context with a certificate for `names` issued by `ca`."""
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    alt: list[x509.GeneralName] = []
    for n in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            alt.append(x509.DNSName(n))
    cert = (
        x509.CertificateBuilder().subject_name(_name(names[0])).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("pki")
    ours, theirs = make_ca("oemkit test CA"), make_ca("someone else's CA")
    return {
        "ca": pem(ours[1]),
        "good": make_server_cert(ours, ["localhost", "127.0.0.1"], folder / "good"),
        "foreign": make_server_cert(theirs, ["localhost", "127.0.0.1"], folder / "foreign"),
        "misnamed": make_server_cert(ours, ["provision.example.com"], folder / "misnamed"),
    }


@pytest.fixture
def tls_service(pki: dict[str, object], request: pytest.FixtureRequest) -> Iterator[Service]:
    s = Service(tls=pki[getattr(request, "param", "good")])
    yield s
    s.close()


def https(service: Service, host: str = "127.0.0.1") -> str:
    return f"https://{host}:{service.server.server_address[1]}"


# ------------------------------------------------------------------------------------------------------- HTTPS
def test_https_with_the_pinned_ca_enrols_and_delivers(tmp_path: Path, tls_service: Service, pki: dict) -> None:
    box = Box(tmp_path)
    box.add()
    assert box.run(https(tls_service), ca_pem=pki["ca"]).line() == "phone home: enrolled, delivered 1, spooled 0"


@pytest.mark.parametrize(
    ("tls_service", "says"),
    [("foreign", "TLS: unable to get local issuer certificate"), ("misnamed", "TLS: IP address mismatch")],
    indirect=["tls_service"],
)
def test_https_refuses_a_server_the_pinned_ca_did_not_vouch_for(
    tmp_path: Path, tls_service: Service, pki: dict, says: str
) -> None:
    box = Box(tmp_path)
    box.add()
    outcome = box.run(https(tls_service), ca_pem=pki["ca"])
    assert outcome.why is not None and outcome.why.startswith(f"enrolment: {says}")
    assert (outcome.delivered, outcome.spooled) == (0, 1)
    assert tls_service.requests == [] and box.slept == []  # nothing sent, and no retry can mend a certificate
    assert box.layout.enrol_token.exists()


def test_a_pinned_ca_that_does_not_load_is_refused_without_sending(tmp_path: Path, tls_service: Service) -> None:
    box = Box(tmp_path)
    box.add()
    bogus = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    outcome = box.run(https(tls_service), ca_pem=bogus)
    assert outcome.why is not None and "the pinned CA does not load" in outcome.why and tls_service.requests == []


def test_the_cli_works_on_a_python_without_the_idna_codec(tmp_path: Path, tls_service: Service, pki: dict) -> None:
    """The core's Python has no encodings.idna, and socket and ssl encode a str host name with it."""
    Box(tmp_path)
    unit = tmp_path / "unit-under-test.json"
    unit.write_bytes(seal(https(tls_service, "localhost"), ca_pem=pki["ca"]))
    code = (
        "import sys\n"
        "sys.modules['encodings.idna'] = None  # as on the core: the codec cannot be found\n"
        "from hypervisor_core import phonehome\n"
        "sys.exit(phonehome.main(sys.argv[1:]))\n"
    )
    args = ["--root", str(tmp_path), "--config", str(unit), "--pubkey", str(PUB), "--deadline", "20"]
    run = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert (run.returncode, run.stdout) == (0, "phone home: enrolled, delivered 1, spooled 0\n"), run.stderr
    assert [d["serial"] for d in tls_service.stored] == [SERIAL]
    assert tls_service.stored[0]["reason"] == AGENT_REPORT["reason"]
    probe = "import sys; sys.modules['encodings.idna'] = None; import socket; socket.getaddrinfo('localhost', 80)"
    without = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert "unknown encoding: idna" in without.stderr  # what a str host name would have met


# --------------------------------------------------------------------------------------------------- the URL
@pytest.mark.parametrize(
    ("url", "ca", "expected"),
    [
        ("http://svc.example:8080/base/", None, ("http", "svc.example", 8080, "/base")),
        ("https://svc.example", "CA", ("https", "svc.example", 443, "")),
        ("http://[::1]/", None, ("http", "::1", 80, "")),
        ("HTTP://10.0.0.5", None, ("http", "10.0.0.5", 80, "")),
    ],
)
def test_a_base_url_is_parsed(url: str, ca: str | None, expected: tuple[str, str, int, str]) -> None:
    ep = phonehttp.endpoint(url, ca)
    assert (ep.scheme, ep.host, ep.port, ep.prefix) == expected
    assert "CA" not in repr(ep)


@pytest.mark.parametrize(
    ("url", "ca", "says"),
    [
        ("https://svc.example", None, "pins no CA"),
        ("http://svc.example", "CA", "plain http"),
        ("http://svc.example/a b", None, "spaces"),
        ("http://svc.example/\n", None, "control"),
        ("http://bücher.example/", None, "non-ASCII"),
        ("http://svc.example/?x=1", None, "query"),
        ("http://svc.example:99999/", None, "port"),
        ("http:///nohost", None, "no usable host"),
        ("file:///etc/passwd", None, "neither"),
        ("http://u:secret@svc.example/", None, "credentials"),
    ],
)
def test_an_unusable_base_url_is_refused(url: str, ca: str | None, says: str) -> None:
    with pytest.raises(phonehttp.EndpointError, match=says) as exc:
        phonehttp.endpoint(url, ca)
    assert "secret" not in str(exc.value)


# ---------------------------------------------------------------------------------------------------- bounds
@pytest.fixture
def raw_server() -> Iterator[tuple[int, list[str]]]:
    """A TCP server whose behaviour the test sets: 'drip' (a byte every 0.2 s), 'trickle' (every 0.5 s), 'silent',
    'huge'."""
    mode: list[str] = ["silent"]
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(0.1)
                with contextlib.suppress(TimeoutError):
                    conn.recv(65536)
                if mode[0] == "huge":
                    body = b'{"detail": "' + b"x" * (1 << 20) + b'"}'
                    head = b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n" % len(body)
                    conn.sendall(head + body)
                    continue
                for byte in b"HTTP/1.1 201 Created\r\n" * 100:
                    if stop.wait(0.5 if mode[0] == "trickle" else 0.2):
                        break
                    if mode[0] in ("drip", "trickle"):
                        try:
                            conn.send(bytes([byte]))
                        except OSError:
                            break

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], mode
    stop.set()
    thread.join(5)
    listener.close()


@pytest.mark.parametrize("mode", ["drip", "silent"])
def test_a_server_that_never_finishes_its_answer_cannot_hold_the_box(
    raw_server: tuple[int, list[str]], mode: str
) -> None:
    port, behaviour = raw_server
    behaviour[0] = mode
    ep = phonehttp.endpoint(f"http://127.0.0.1:{port}", None)
    started = time.monotonic()
    with pytest.raises(phonehttp.TransportError) as exc:
        phonehttp.post(ep, "/v1/units/X/reports", b"{}", {}, 1.0)
    assert time.monotonic() - started < 3
    assert str(exc.value) in ("no answer within 1 s", "timed out") and not exc.value.permanent


@pytest.mark.parametrize("lookup_s", [0.0, 1.0, 2.5])
def test_a_slow_name_lookup_then_a_trickling_server_cannot_hold_the_box_past_its_budget(
    raw_server: tuple[int, list[str]], monkeypatch: pytest.MonkeyPatch, lookup_s: float
) -> None:
    """The budget is one absolute deadline: a lookup or connect that used most of it leaves the reads only the rest,
    and one that used all of it ends the request. The server is real; a slow name lookup cannot be had on cue from
    a local resolver, so it is simulated (the lookup itself cannot be interrupted: the bound is max(budget, it))."""
    port, behaviour = raw_server
    behaviour[0] = "trickle"  # a byte every 0.5 s: each read alone is well within any per-read timeout
    real = socket.getaddrinfo

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(lookup_s)
        return real(*args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    ep = phonehttp.endpoint(f"http://localhost:{port}", None)
    started = time.monotonic()
    with alarm(15), pytest.raises(phonehttp.TransportError) as exc:
        phonehttp.post(ep, "/v1/units/X/reports", b"{}", {}, 2.0)
    took = time.monotonic() - started
    assert max(2.0, lookup_s) <= took + 0.05 and took < max(2.0, lookup_s) + 0.6, took
    assert str(exc.value) == "no answer within 2 s" and not exc.value.permanent


def test_an_answer_is_read_with_a_bound(raw_server: tuple[int, list[str]]) -> None:
    port, behaviour = raw_server
    behaviour[0] = "huge"
    answer = phonehttp.post(phonehttp.endpoint(f"http://127.0.0.1:{port}", None), "/x", b"{}", {}, 5.0)
    assert (answer.status, answer.doc, answer.detail) == (400, {}, "HTTP 400")


def test_the_request_is_the_contracts(tmp_path: Path) -> None:
    service = Service()
    try:
        service.script = [(201, {"stored": True}, {})]
        ep = phonehttp.endpoint(service.url + "/base/", None)
        body = json.dumps({"a": 1}).encode()
        answer = phonehttp.post(ep, "/v1/units/X/reports", body, {"X-Oemkit-Signature": "ed25519=abc"}, 5.0)
    finally:
        service.close()
    assert (answer.status, answer.doc) == (201, {"stored": True})
    ((path, headers, sent),) = service.requests
    assert (path, sent) == ("/base/v1/units/X/reports", body)
    assert headers["Content-Type"] == "application/json" and headers["X-Oemkit-Signature"] == "ed25519=abc"
    assert headers["User-Agent"].startswith("oemkit-core/")
