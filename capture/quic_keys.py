"""QUIC Initial keys: what each version's client Initials are protected with (RFC 9001 5.2,
RFC 9369 3.3.1; drafts, mvfst and Google QUIC with the salts Wireshark's packet-quic.c uses), and
the HKDF that derives them from the client's Destination Connection ID. Pure."""
import hashlib
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

V1, V2 = 0x00000001, 0x6B3343CF
Q046, Q050, T050, T051 = (int.from_bytes(tag, "big") for tag in (b"Q046", b"Q050", b"T050", b"T051"))
# gQUIC versions with the public header, in clear: Q024-Q038 write stream ids, offsets and lengths
# little-endian (and before Q034 put a private flags byte after the hash), Q039-Q043 big-endian
GQUIC_LITTLE = frozenset(int.from_bytes(b"Q0%02d" % n, "big") for n in range(24, 39))
GQUIC_PUBLIC = GQUIC_LITTLE | frozenset(int.from_bytes(b"Q0%02d" % n, "big") for n in range(39, 44))
Q034 = int.from_bytes(b"Q034", "big")

_SALT_D22 = bytes.fromhex("7fbcdb0e7c66bbe9193a96cd21519ebd7a02644a")
_SALT_D23 = bytes.fromhex("c3eef712c72ebb5a11a7d2432bb46365bef9f502")
_SALT_D29 = bytes.fromhex("afbfec289993d24c9e9786f19c6111e04390a899")
_SALT_V1 = bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a")
_SALT_V2 = bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9")
_SALT_Q050 = bytes.fromhex("504574efd066fe2f9d945cfcdbd3a7f0d3b56b45")
_SALT_T050 = bytes.fromhex("7ff579e5acd072915580304c43a2367c60488310")
_SALT_T051 = bytes.fromhex("7a4edef4e7ccee5fa4506c19124fc8ccda6e033d")

_LABELS_V1 = (b"quic key", b"quic iv", b"quic hp")
_LABELS_V2 = (b"quicv2 key", b"quicv2 iv", b"quicv2 hp")

# frames inside an Initial: IETF numbering (RFC 9000 12.4), or gQUIC's for Q050/T05x
IETF, GQUIC = "ietf", "gquic"


_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))


def _hmac(key):
    """HMAC-SHA256 (RFC 2104) keyed once, as a function of the message: hashlib states copied
    per message cost a third of hmac.digest's setup, and key derivation is most of what a new
    flow costs. Keys here are salts (20 bytes) and secrets (32), within SHA-256's 64-byte block."""
    key = key.ljust(64, b"\x00")
    inner, outer = hashlib.sha256(key.translate(_IPAD)), hashlib.sha256(key.translate(_OPAD))

    def mac(message):
        digest = inner.copy()
        digest.update(message)
        result = outer.copy()
        result.update(digest.digest())
        return result.digest()
    return mac


class _Version:
    """What differs between versions: the initial salt (keyed once here: HKDF-Extract is an
    HMAC keyed by it), key labels, long-header type bits, frame numbering, CHLO or TLS inside."""

    __slots__ = ("extract", "labels", "initial", "retry", "frames", "chlo")

    def __init__(self, salt, labels=_LABELS_V1, initial=0, retry=3, frames=IETF, chlo=False):
        self.extract, self.labels, self.initial, self.retry = _hmac(salt), labels, initial, retry
        self.frames, self.chlo = frames, chlo


VERSIONS = {
    V1: _Version(_SALT_V1),
    V2: _Version(_SALT_V2, _LABELS_V2, initial=1, retry=0),
    Q050: _Version(_SALT_Q050, frames=GQUIC, chlo=True),
    T050: _Version(_SALT_T050, frames=GQUIC),
    T051: _Version(_SALT_T051, frames=GQUIC),
    0xFACEB001: _Version(_SALT_D22),      # mvfst draft-22
    0xFACEB002: _Version(_SALT_D23),      # mvfst draft-27
    0xFACEB00E: _Version(_SALT_D23),      # mvfst experimental
}
for _draft in range(23, 35):
    VERSIONS[0xFF000000 + _draft] = _Version(_SALT_D23 if _draft <= 28 else _SALT_D29 if _draft <= 32 else _SALT_V1)


class Keys:
    """Client Initial keys (RFC 9001 5.2, RFC 9369 3.3.1) for one version and DCID."""

    __slots__ = ("aead", "iv", "hp")

    def __init__(self, spec, dcid):
        secret, = _expand(spec.extract(dcid), ((b"client in", 32),))
        key, iv, hp = _expand(secret, zip(spec.labels, (16, 12, 16)))
        self.aead = AESGCM(key)
        self.iv = int.from_bytes(iv, "big")
        # ECB keeps no state between blocks: one encryptor masks every packet of the flow
        self.hp = Cipher(algorithms.AES(hp), modes.ECB()).encryptor()

    def open(self, d, start, pn_at, end):
        """The decrypted payload of the Initial d[start:end], None when these keys do not open it."""
        mask = self.hp.update(bytes(d[pn_at + 4:pn_at + 20]))          # RFC 9001 5.4.2 sample
        first = d[start] ^ (mask[0] & 0x0F)
        pn_len = (first & 3) + 1
        pn = int.from_bytes(d[pn_at:pn_at + pn_len], "big") ^ int.from_bytes(mask[1:1 + pn_len], "big")
        header = bytearray(d[start:pn_at + pn_len])
        header[0] = first
        header[-pn_len:] = pn.to_bytes(pn_len, "big")
        # an Initial's packet numbers start at 0, so the truncated number is the full one for
        # the first 2^(8*pn_len) packets: far more than a hello takes
        nonce = (self.iv ^ pn).to_bytes(12, "big")
        try:
            return self.aead.decrypt(nonce, bytes(d[pn_at + pn_len:end]), bytes(header))
        except InvalidTag:
            return None


def _expand(secret, wanted):
    """HKDF-Expand-Label (RFC 8446 7.1) with an empty context, for each (label, length) with
    length <= 32: one HMAC each, all under one keyed HMAC."""
    mac = _hmac(secret)
    return [mac(struct.pack("!HB", length, 6 + len(label)) + b"tls13 " + label + b"\x00\x01")[:length]
            for label, length in wanted]
