"""The agent's pure-Python Ed25519 against RFC 8032's vectors and against `cryptography` (the factory's signer)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hypervisor_core import ed25519

# RFC 8032, section 7.1: TEST 1, TEST 2, TEST 3 (secret key, public key, message, signature)
VECTORS = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
]


@pytest.mark.parametrize(("sk", "pk", "msg", "sig"), VECTORS)
def test_rfc8032_vectors(sk: str, pk: str, msg: str, sig: str) -> None:
    seed, public, message, signature = (bytes.fromhex(x) for x in (sk, pk, msg, sig))
    assert ed25519.public_key(seed) == public
    assert ed25519.sign(seed, message) == signature
    assert ed25519.verify(public, message, signature)
    assert not ed25519.verify(public, message + b"x", signature)


def test_agrees_with_cryptography() -> None:
    for i in range(20):
        key = Ed25519PrivateKey.generate()
        public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        message = bytes(range(i * 7 % 256)) * (i + 1)
        signature = key.sign(message)
        assert ed25519.verify(public, message, signature)
        flipped = bytearray(signature)
        flipped[i % 64] ^= 0x01
        assert not ed25519.verify(public, message, bytes(flipped))


@pytest.mark.parametrize(
    ("public", "signature"),
    [
        (b"", b"\0" * 64),
        (b"\0" * 32, b""),
        (b"\xff" * 32, b"\0" * 64),
        (bytes.fromhex(VECTORS[0][1]), bytes.fromhex(VECTORS[0][3])[:32] + b"\xff" * 32),
    ],  # s >= L
)
def test_malformed_input_is_just_false(public: bytes, signature: bytes) -> None:
    assert ed25519.verify(public, b"", signature) is False
