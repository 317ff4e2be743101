"""The QUIC Initial reader (capture/quic.py): the RFC 9001, RFC 9369 and draft-29 client Initial
test vectors; real client datagrams from aioquic (v1, v2, a hello over three Initials, a Retry);
Initials built here with aioquic's packet protection (drafts, T050/T051, Q050, CRYPTO frames out
of order, coalesced packets, changed DCIDs) and gQUIC Q043/Q046 packets in clear; hostile input
(only QuicError may come out); and, where ../shared has them, real captures against tshark."""
import re
import shutil
import struct

import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.crypto import INITIAL_CIPHER_SUITE, CryptoContext
from aioquic.quic.packet import QuicProtocolVersion, encode_quic_retry
from aioquic.tls import cipher_suite_hash, hkdf_expand_label, hkdf_extract
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import captures
import oracle
from capture.quic import MAX_CRYPTO, QuicClientHellos, QuicError, looks_like_quic
from capture.tls import ClientHello
from common import ROOT, system

NAMES = ROOT.parent / "shared" / "captures" / "names"


def unhex(text):
    return bytes.fromhex("".join(text.split()))


# RFC 9001 A.2 (QUIC v1), RFC 9369 A.2 (QUIC v2) and draft-ietf-quic-tls-29 A.2: a client Initial
# protected with keys from DCID 8394c8f03e515708, packet number 2, exactly as published.
RFC9001_A2 = unhex("""
c000000001088394c8f03e5157080000449e7b9aec34d1b1c98dd7689fb8ec11d242b123dc9bd8bab936b47d92ec356c
0bab7df5976d27cd449f63300099f3991c260ec4c60d17b31f8429157bb35a1282a643a8d2262cad67500cadb8e7378c
8eb7539ec4d4905fed1bee1fc8aafba17c750e2c7ace01e6005f80fcb7df621230c83711b39343fa028cea7f7fb5ff89
eac2308249a02252155e2347b63d58c5457afd84d05dfffdb20392844ae812154682e9cf012f9021a6f0be17ddd0c208
4dce25ff9b06cde535d0f920a2db1bf362c23e596d11a4f5a6cf3948838a3aec4e15daf8500a6ef69ec4e3feb6b1d98e
610ac8b7ec3faf6ad760b7bad1db4ba3485e8a94dc250ae3fdb41ed15fb6a8e5eba0fc3dd60bc8e30c5c4287e53805db
059ae0648db2f64264ed5e39be2e20d82df566da8dd5998ccabdae053060ae6c7b4378e846d29f37ed7b4ea9ec5d82e7
961b7f25a9323851f681d582363aa5f89937f5a67258bf63ad6f1a0b1d96dbd4faddfcefc5266ba6611722395c906556
be52afe3f565636ad1b17d508b73d8743eeb524be22b3dcbc2c7468d54119c7468449a13d8e3b95811a198f3491de3e7
fe942b330407abf82a4ed7c1b311663ac69890f4157015853d91e923037c227a33cdd5ec281ca3f79c44546b9d90ca00
f064c99e3dd97911d39fe9c5d0b23a229a234cb36186c4819e8b9c5927726632291d6a418211cc2962e20fe47feb3edf
330f2c603a9d48c0fcb5699dbfe5896425c5bac4aee82e57a85aaf4e2513e4f05796b07ba2ee47d80506f8d2c25e50fd
14de71e6c418559302f939b0e1abd576f279c4b2e0feb85c1f28ff18f58891ffef132eef2fa09346aee33c28eb130ff2
8f5b766953334113211996d20011a198e3fc433f9f2541010ae17c1bf202580f6047472fb36857fe843b19f5984009dd
c324044e847a4f4a0ab34f719595de37252d6235365e9b84392b061085349d73203a4a13e96f5432ec0fd4a1ee65accd
d5e3904df54c1da510b0ff20dcc0c77fcb2c0e0eb605cb0504db87632cf3d8b4dae6e705769d1de354270123cb11450e
fc60ac47683d7b8d0f811365565fd98c4c8eb936bcab8d069fc33bd801b03adea2e1fbc5aa463d08ca19896d2bf59a07
1b851e6c239052172f296bfb5e72404790a2181014f3b94a4e97d117b438130368cc39dbb2d198065ae3986547926cd2
162f40a29f0c3c8745c0f50fba3852e566d44575c29d39a03f0cda721984b6f440591f355e12d439ff150aab7613499d
bd49adabc8676eef023b15b65bfc5ca06948109f23f350db82123535eb8a7433bdabcb909271a6ecbcb58b936a88cd4e
8f2e6ff5800175f113253d8fa9ca8885c2f552e657dc603f252e1a8e308f76f0be79e2fb8f5d5fbbe2e30ecadd220723
c8c0aea8078cdfcb3868263ff8f0940054da48781893a7e49ad5aff4af300cd804a6b6279ab3ff3afb64491c85194aab
760d58a606654f9f4400e8b38591356fbf6425aca26dc85244259ff2b19c41b9f96f3ca9ec1dde434da7d2d392b905dd
f3d1f9af93d1af5950bd493f5aa731b4056df31bd267b6b90a079831aaf579be0a39013137aac6d404f518cfd4684064
7e78bfe706ca4cf5e9c5453e9f7cfd2b8b4c8d169a44e55c88d4a9a7f9474241e221af44860018ab0856972e194cd934
""")
RFC9369_A2 = unhex("""
d76b3343cf088394c8f03e5157080000449ea0c95e82ffe67b6abcdb4298b485dd04de806071bf03dceebfa162e75d6c
96058bdbfb127cdfcbf903388e99ad049f9a3dd4425ae4d0992cfff18ecf0fdb5a842d09747052f17ac2053d21f57c5d
250f2c4f0e0202b70785b7946e992e58a59ac52dea6774d4f03b55545243cf1a12834e3f249a78d395e0d18f4d766004
f1a2674802a747eaa901c3f10cda5500cb9122faa9f1df66c392079a1b40f0de1c6054196a11cbea40afb6ef5253cd68
18f6625efce3b6def6ba7e4b37a40f7732e093daa7d52190935b8da58976ff3312ae50b187c1433c0f028edcc4c2838b
6a9bfc226ca4b4530e7a4ccee1bfa2a3d396ae5a3fb512384b2fdd851f784a65e03f2c4fbe11a53c7777c023462239dd
6f7521a3f6c7d5dd3ec9b3f233773d4b46d23cc375eb198c63301c21801f6520bcfb7966fc49b393f0061d974a2706df
8c4a9449f11d7f3d2dcbb90c6b877045636e7c0c0fe4eb0f697545460c806910d2c355f1d253bc9d2452aaa549e27a1f
ac7cf4ed77f322e8fa894b6a83810a34b361901751a6f5eb65a0326e07de7c1216ccce2d0193f958bb3850a833f7ae43
2b65bc5a53975c155aa4bcb4f7b2c4e54df16efaf6ddea94e2c50b4cd1dfe06017e0e9d02900cffe1935e0491d77ffb4
fdf85290fdd893d577b1131a610ef6a5c32b2ee0293617a37cbb08b847741c3b8017c25ca9052ca1079d8b78aebd4787
6d330a30f6a8c6d61dd1ab5589329de714d19d61370f8149748c72f132f0fc99f34d766c6938597040d8f9e2bb522ff9
9c63a344d6a2ae8aa8e51b7b90a4a806105fcbca31506c446151adfeceb51b91abfe43960977c87471cf9ad4074d30e1
0d6a7f03c63bd5d4317f68ff325ba3bd80bf4dc8b52a0ba031758022eb025cdd770b44d6d6cf0670f4e990b22347a7db
848265e3e5eb72dfe8299ad7481a408322cac55786e52f633b2fb6b614eaed18d703dd84045a274ae8bfa73379661388
d6991fe39b0d93debb41700b41f90a15c4d526250235ddcd6776fc77bc97e7a417ebcb31600d01e57f32162a8560cacc
7e27a096d37a1a86952ec71bd89a3e9a30a2a26162984d7740f81193e8238e61f6b5b984d4d3dfa033c1bb7e4f0037fe
bf406d91c0dccf32acf423cfa1e7071010d3f270121b493ce85054ef58bada42310138fe081adb04e2bd901f2f13458b
3d6758158197107c14ebb193230cd1157380aa79cae1374a7c1e5bbcb80ee23e06ebfde206bfb0fcbc0edc4ebec30966
1bdd908d532eb0c6adc38b7ca7331dce8dfce39ab71e7c32d318d136b6100671a1ae6a6600e3899f31f0eed19e3417d1
34b90c9058f8632c798d4490da4987307cba922d61c39805d072b589bd52fdf1e86215c2d54e6670e07383a27bbffb5a
ddf47d66aa85a0c6f9f32e59d85a44dd5d3b22dc2be80919b490437ae4f36a0ae55edf1d0b5cb4e9a3ecabee93dfc6e3
8d209d0fa6536d27a5d6fbb17641cde27525d61093f1b28072d111b2b4ae5f89d5974ee12e5cf7d5da4d6a31123041f3
3e61407e76cffcdcfd7e19ba58cf4b536f4c4938ae79324dc402894b44faf8afbab35282ab659d13c93f70412e85cb19
9a37ddec600545473cfb5a05e08d0b209973b2172b4d21fb69745a262ccde96ba18b2faa745b6fe189cf772a9f84cbfc
""")
DRAFT29_A2 = unhex("""
c5ff00001d088394c8f03e5157080000449e4a95245bfb66bc5f93032b7ddd89fe0ff15d9c4f7050fccdb71c1cd80512
d4431643a53aafa1b0b518b44968b18b8d3e7a4d04c30b3ed9410325b2abb2dafb1c12f8b70479eb8df98abcaf95dd8f
3d1c78660fbc719f88b23c8aef6771f3d50e10fdfb4c9d92386d44481b6c52d59e5538d3d3942de9f13a7f8b702dc317
24180da9df22714d01003fc5e3d165c950e630b8540fbd81c9df0ee63f94997026c4f2e1887a2def79050ac2d86ba318
e0b3adc4c5aa18bcf63c7cf8e85f569249813a2236a7e72269447cd1c755e451f5e77470eb3de64c8849d29282069802
9cfa18e5d66176fe6e5ba4ed18026f90900a5b4980e2f58e39151d5cd685b10929636d4f02e7fad2a5a458249f5c0298
a6d53acbe41a7fc83fa7cc01973f7a74d1237a51974e097636b6203997f921d07bc1940a6f2d0de9f5a11432946159ed
6cc21df65c4ddd1115f86427259a196c7148b25b6478b0dc7766e1c4d1b1f5159f90eabc61636226244642ee148b464c
9e619ee50a5e3ddc836227cad938987c4ea3c1fa7c75bbf88d89e9ada642b2b88fe8107b7ea375b1b64889a4e9e5c38a
1c896ce275a5658d250e2d76e1ed3a34ce7e3a3f383d0c996d0bed106c2899ca6fc263ef0455e74bb6ac1640ea7bfedc
59f03fee0e1725ea150ff4d69a7660c5542119c71de270ae7c3ecfd1af2c4ce551986949cc34a66b3e216bfe18b347e6
c05fd050f85912db303a8f054ec23e38f44d1c725ab641ae929fecc8e3cefa5619df4231f5b4c009fa0c0bbc60bc75f7
6d06ef154fc8577077d9d6a1d2bd9bf081dc783ece60111bea7da9e5a9748069d078b2bef48de04cabe3755b197d52b3
2046949ecaa310274b4aac0d008b1948c1082cdfe2083e386d4fd84c0ed0666d3ee26c4515c4fee73433ac703b690a9f
7bf278a77486ace44c489a0c7ac8dfe4d1a58fb3a730b993ff0f0d61b4d89557831eb4c752ffd39c10f6b9f46d8db278
da624fd800e4af85548a294c1518893a8778c4f6d6d73c93df200960104e062b388ea97dcf4016bced7f62b4f062cb6c
04c20693d9a0e3b74ba8fe74cc01237884f40d765ae56a51688d985cf0ceaef43045ed8c3f0c33bced08537f6882613a
cd3b08d665fce9dd8aa73171e2d3771a61dba2790e491d413d93d987e2745af29418e428be34941485c93447520ffe23
1da2304d6a0fd5d07d0837220236966159bef3cf904d722324dd852513df39ae030d8173908da6364786d3c1bfcb19ea
77a63b25f1e7fc661def480c5d00d44456269ebd84efd8e3a8b2c257eec76060682848cbf5194bc99e49ee75e4d0d254
bad4bfd74970c30e44b65511d4ad0e6ec7398e08e01307eeeea14e46ccd87cf36b285221254d8fc6a6765c524ded0085
dca5bd688ddf722e2c0faf9d0fb2ce7a0c3f2cee19ca0ffba461ca8dc5d2c8178b0762cf67135558494d2a96f1a139f0
edb42d2af89a9c9122b07acbc29e5e722df8615c343702491098478a389c9872a10b0c9875125e257c7bfdf27eef4060
bd3d00f4c14fd3e3496c38d3c5d1a5668c39350effbc2d16ca17be4ce29f02ed969504dda2a8c6b9ff919e693ee79e09
089316e7d1d89ec099db3b2b268725d888536a4b8bf9aee8fb43e82a4d919d4843b1ca70a2d8d3f725ead1391377dcc0
""")
# RFC 9001 A.2's ClientHello (the CRYPTO frame's data): server name example.com, ALPN "alpn"
RFC_HELLO = unhex("""
010000ed0303ebf8fa56f12939b9584a3896472ec40bb863cfd3e86804fe3a47f06a2b69484c00000413011302010000
c000000010000e00000b6578616d706c652e636f6dff01000100000a00080006001d0017001800100007000504616c70
6e000500050100000000003300260024001d00209370b2c9caa47fbabaf4559fedba753de171fa71f50f1ce15d43e994
ec74d748002b0003020304000d0010000e0403050306030203080408050806002d00020101001c000240010039003204
08ffffffffffffffff05048000ffff07048000ffff0801100104800075300901100f088394c8f03e51570806048000ff
ff
""")
RFC_DCID = unhex("8394c8f03e515708")

V1, V2 = 0x00000001, 0x6B3343CF
DRAFT27, DRAFT28, DRAFT29 = 0xFF00001B, 0xFF00001C, 0xFF00001D
Q043, Q046, Q050, T050, T051 = (int.from_bytes(v, "big") for v in (b"Q043", b"Q046", b"Q050", b"T050", b"T051"))
# initial salts: RFC 9001 5.2, RFC 9369 3.3.1, the drafts, and Wireshark's packet-quic.c for gQUIC
SALTS = {
    V1: "38762cf7f55934b34d179ae6a4c80cadccbb7f0a",
    V2: "0dede3def700a6db819381be6e269dcbf9bd2ed9",
    DRAFT27: "c3eef712c72ebb5a11a7d2432bb46365bef9f502",
    DRAFT28: "c3eef712c72ebb5a11a7d2432bb46365bef9f502",
    DRAFT29: "afbfec289993d24c9e9786f19c6111e04390a899",
    Q050: "504574efd066fe2f9d945cfcdbd3a7f0d3b56b45",
    T050: "7ff579e5acd072915580304c43a2367c60488310",
    T051: "7a4edef4e7ccee5fa4506c19124fc8ccda6e033d",
}
INITIAL_TYPE = {V2: 1}          # long-header packet type bits of an Initial (0 for the others)
HANDSHAKE_TYPE = {V2: 3}        # ... of a Handshake packet (2 for the others)
DCID = unhex("0011223344556677")
EXAMPLE = ClientHello("example.com", ("alpn",), 0x0303)


def varint(n, size=None):
    """RFC 9000 16 variable-length integer, in its shortest form unless size is given."""
    size = size or (1 if n < 0x40 else 2 if n < 0x4000 else 4 if n < 0x40000000 else 8)
    return (n | (size.bit_length() - 1) << (8 * size - 2)).to_bytes(size, "big")


def crypto(offset, data, kind=0x06):
    """A CRYPTO frame (IETF 0x06; gQUIC's Q050/T05x number it 0x08)."""
    return bytes([kind]) + varint(offset) + varint(len(data)) + data


def seal(version, frames, *, dcid=DCID, pn=0, key_dcid=None, scid=b"\x0a\x0b\x0c\x0d", token=b"",
         pad_to=1162, pn_len=4):
    """A client Initial protected by aioquic's packet protection (an implementation independent
    of capture/quic.py) with the version's salt, keys from key_dcid (default: dcid)."""
    algorithm = cipher_suite_hash(INITIAL_CIPHER_SUITE)
    initial = hkdf_extract(algorithm, unhex(SALTS[version]), key_dcid or dcid)
    context = CryptoContext()
    context.setup(cipher_suite=INITIAL_CIPHER_SUITE, version=version,
                  secret=hkdf_expand_label(algorithm, initial, b"client in", b"", algorithm.digest_size))
    payload = frames + bytes(max(0, pad_to - len(frames)))
    first = 0xC0 | INITIAL_TYPE.get(version, 0) << 4 | (pn_len - 1)
    header = (bytes([first]) + version.to_bytes(4, "big") + bytes([len(dcid)]) + dcid + bytes([len(scid)])
              + scid + varint(len(token)) + token + varint(pn_len + len(payload) + 16, 2)
              + pn.to_bytes(pn_len, "big"))
    return context.encrypt_packet(header, payload, pn)


def other_packet(version, kind, body=bytes(range(64))):
    """A long-header packet of another type (0-RTT, Handshake), opaque bytes inside."""
    return (bytes([0xC0 | kind << 4 | 3]) + version.to_bytes(4, "big") + bytes([len(DCID)]) + DCID + b"\x00"
            + varint(len(body), 2) + body)


def feed_all(datagrams, hellos=None):
    hellos = hellos or QuicClientHellos()
    return [hellos.feed(d) for d in datagrams]


def reason(datagrams):
    hellos = QuicClientHellos()
    with pytest.raises(QuicError) as caught:
        for datagram in datagrams:
            hellos.feed(datagram)
    return caught.value.reason


# ---- published test vectors ------------------------------------------------------------------

@pytest.mark.parametrize("packet, version, expected", [
    (RFC9001_A2, V1, EXAMPLE),
    (RFC9369_A2, V2, EXAMPLE),
    (DRAFT29_A2, DRAFT29, ClientHello("server", (), 0x0303)),
])
def test_published_client_initials(packet, version, expected):
    hellos = QuicClientHellos()
    assert hellos.feed(packet) == expected
    assert hellos.version == version
    assert looks_like_quic(packet)


def test_the_test_encoder_reproduces_rfc9001_exactly():
    payload = b"\x06\x00\x40\xf1" + RFC_HELLO        # CRYPTO, offset 0, length 241 in two bytes
    assert seal(V1, payload, dcid=RFC_DCID, pn=2, scid=b"") == RFC9001_A2
    assert seal(V2, payload, dcid=RFC_DCID, pn=2, scid=b"") == RFC9369_A2


# ---- real client datagrams from aioquic ------------------------------------------------------

def aioquic_client(version=QuicProtocolVersion.VERSION_1, alpn=("h3",), server_name="quic.test.example"):
    configuration = QuicConfiguration(is_client=True, server_name=server_name, alpn_protocols=list(alpn))
    configuration.original_version = version
    connection = QuicConnection(configuration=configuration)
    connection.connect(("127.0.0.1", 4433), now=0.0)
    return connection, [data for data, _addr in connection.datagrams_to_send(now=0.0)]


@pytest.mark.parametrize("version", [QuicProtocolVersion.VERSION_1, QuicProtocolVersion.VERSION_2])
def test_aioquic_first_datagram(version):
    _, datagrams = aioquic_client(version)
    assert len(datagrams) == 1 and len(datagrams[0]) == 1200
    hellos = QuicClientHellos()
    assert looks_like_quic(datagrams[0])
    assert hellos.feed(datagrams[0]) == ClientHello("quic.test.example", ("h3",), 0x0303)
    assert hellos.version == version


LONG_ALPN = ("h3",) + tuple(f"{'x' * 40}-{i}" for i in range(60))


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0)])
def test_aioquic_hello_over_three_initials_in_any_order(order):
    _, datagrams = aioquic_client(alpn=LONG_ALPN)
    assert len(datagrams) == 3
    got = feed_all([datagrams[i] for i in order])
    assert got[:2] == [None, None]
    assert got[2] == ClientHello("quic.test.example", LONG_ALPN[:16], 0x0303)


def test_aioquic_client_after_a_retry_rederives_keys():
    connection, first = aioquic_client(alpn=LONG_ALPN[:30])
    assert len(first) == 2
    retry = encode_quic_retry(version=V1, source_cid=unhex("aabbccddeeff0011"), destination_cid=connection.host_cid,
                              original_destination_cid=connection.original_destination_connection_id,
                              retry_token=b"retry-token")
    connection.receive_datagram(retry, ("127.0.0.1", 4433), now=0.01)
    after = [data for data, _addr in connection.datagrams_to_send(now=0.01)]
    assert [d[6:14] for d in after] == [unhex("aabbccddeeff0011")] * 2
    # the first half came under the first DCID's keys, the rest only under the Retry's
    assert feed_all([first[0], after[1]]) == [None, ClientHello("quic.test.example", LONG_ALPN[:16], 0x0303)]


# ---- built Initials: versions, frames, coalescing, connection ids -----------------------------

@pytest.mark.parametrize("version", [V1, V2, DRAFT27, DRAFT28, DRAFT29])
def test_ietf_versions(version):
    hellos = QuicClientHellos()
    assert hellos.feed(seal(version, crypto(0, RFC_HELLO))) == EXAMPLE
    assert hellos.version == version


@pytest.mark.parametrize("version", [T050, T051])
def test_google_tls_versions(version):
    packet = seal(version, crypto(0, RFC_HELLO, kind=0x08))
    assert looks_like_quic(packet)
    assert feed_all([packet]) == [EXAMPLE]


def test_crypto_frames_out_of_order_among_padding_ping_and_ack():
    h = RFC_HELLO
    frames = (b"\x00" * 7 + crypto(200, h[200:]) + b"\x01" + crypto(0, h[:50]) + b"\x01\x01"
              + b"\x03" + varint(9) + varint(3) + varint(1) + varint(0) + varint(2) + varint(3)
              + varint(1) + varint(0) + varint(5) + b"\x00" * 30 + crypto(50, h[50:200]))
    assert feed_all([seal(V1, frames)]) == [EXAMPLE]


def test_crypto_split_over_initials_and_retransmitted():
    h = RFC_HELLO
    packets = [seal(V1, crypto(100, h[100:]), pn=1), seal(V1, crypto(100, h[100:]), pn=2),
               seal(V1, crypto(0, h[:60]), pn=3), seal(V1, crypto(40, h[40:120]), pn=4)]
    assert feed_all(packets) == [None, None, None, EXAMPLE]


def test_later_initials_to_the_servers_cid_keep_the_first_keys():
    """RFC 9001 5.2: after the server's first Initial the client writes to the server's CID, but
    its Initial keys still come from the DCID of its first Initial."""
    first = seal(V1, crypto(0, RFC_HELLO[:100]), pn=0)
    second = seal(V1, crypto(100, RFC_HELLO[100:]), pn=1, dcid=unhex("5e4e4e4e"), key_dcid=DCID)
    assert feed_all([first, second]) == [None, EXAMPLE]


def test_coalesced_packets_in_one_datagram():
    h = RFC_HELLO
    first, rest = seal(V1, crypto(0, h[:90]), pad_to=0), seal(V1, crypto(90, h[90:]), pn=1, pad_to=0)
    handshake, zero_rtt = other_packet(V1, 2), other_packet(V1, 1)
    assert feed_all([first + zero_rtt + rest]) == [EXAMPLE]
    assert feed_all([handshake + first + handshake + rest + bytes(300)]) == [EXAMPLE]
    # v2 numbers the types differently: its Handshake is 3, its Initial 1
    v2 = seal(V2, crypto(0, h[:90]), pad_to=0), seal(V2, crypto(90, h[90:]), pn=1, pad_to=0)
    assert feed_all([other_packet(V2, 3) + v2[0] + other_packet(V2, 2) + v2[1]]) == [EXAMPLE]


def test_unreadable_bytes_after_an_opened_initial_are_ignored():
    h = RFC_HELLO
    junk = b"\xc7" + bytes(range(60))          # long-header bit set, nonsense version
    assert feed_all([seal(V1, crypto(0, h[:90]), pad_to=0) + junk, seal(V1, crypto(90, h[90:]), pn=1)]) == [
        None, EXAMPLE]


def test_datagrams_without_an_initial_need_more():
    assert feed_all([other_packet(V1, 2), other_packet(V1, 1) + bytes(40)]) == [None, None]


def test_the_hello_is_kept_once_found():
    hellos = QuicClientHellos()
    got = hellos.feed(RFC9001_A2)
    assert hellos.feed(b"anything at all") is got
    assert hellos.version == V1


# ---- Google QUIC ---------------------------------------------------------------------------

def chlo(*tags):
    """A gQUIC handshake message: "CHLO", tag count, then (tag, end offset) pairs and the values
    (little-endian, Chromium's crypto_framer.cc)."""
    index, values, end = b"", b"", 0
    for tag, value in tags:
        end += len(value)
        index += tag + struct.pack("<I", end)
        values += value
    return b"CHLO" + struct.pack("<HH", len(tags), 0) + index + values


CHLO = chlo((b"PAD\x00", b"-" * 300), (b"SNI\x00", b"www.example.com"), (b"VER\x00", b"Q043"),
            (b"UAID", b"Chrome/90.0 Linux x86_64"))
GQUIC_HELLO = ClientHello("www.example.com", (), 0)


def stream_frame(data, offset=None, stream=1):
    """gQUIC STREAM frame 1FDOOOSS: data length present, 2-byte offset when given, 1-byte id."""
    kind = 0xA0 | (0x04 if offset is not None else 0)
    return (bytes([kind, stream]) + (offset.to_bytes(2, "big") if offset is not None else b"")
            + struct.pack("!H", len(data)) + data)


def q043(frames, flags=0x09, version=b"Q043"):
    """A Q043 public-header packet: flags (version, 8-byte CID, 1-byte packet number), CID,
    version, packet number, 12-byte message hash, frames."""
    return bytes([flags]) + bytes(range(8)) + (version if flags & 1 else b"") + b"\x01" + bytes(12) + frames


def q046(frames):
    """A Q046 long-header packet: 0xc3, version, CID lengths as nibbles (8, 0), DCID, 4-byte
    packet number, 12-byte message hash, frames."""
    return b"\xc3Q046\x50" + bytes(range(8)) + b"\x00\x00\x00\x01" + bytes(12) + frames


def test_q043_chlo_in_clear():
    packet = q043(stream_frame(CHLO) + bytes(400))
    hellos = QuicClientHellos()
    assert looks_like_quic(packet)
    assert hellos.feed(packet) == GQUIC_HELLO
    assert hellos.version == Q043


def test_q043_chlo_over_two_packets_the_second_without_version():
    ack = b"\x40\x01\x00\x00\x01\x00"               # ACK: largest 1, delay, first block 1, no stamps
    hellos = QuicClientHellos()
    assert hellos.feed(q043(b"\x07" + stream_frame(CHLO[:100]) + stream_frame(b"x", stream=3))) is None
    assert hellos.feed(q043(ack + stream_frame(CHLO[100:], offset=100), flags=0x08)) == GQUIC_HELLO


def test_q046_chlo_in_clear():
    packet = q046(stream_frame(CHLO) + bytes(400))
    hellos = QuicClientHellos()
    assert looks_like_quic(packet)
    assert hellos.feed(packet) == GQUIC_HELLO
    assert hellos.version == Q046


def old_gquic(frames, version):
    """A Q024-Q038 public-header packet: flags 0x0d (version, 8-byte CID, 1-byte packet number),
    CID, version, packet number, 12-byte hash, before Q034 a private flags byte, frames."""
    private = b"\x00" if version < b"Q034" else b""
    return b"\x0d" + bytes(range(8)) + version + b"\x01" + bytes(12) + private + frames


def little_stream_frame(data, offset=None, stream=1):
    """A STREAM frame as Q024-Q038 wrote it: the same type byte, fields little-endian."""
    kind = 0xA0 | (0x04 if offset is not None else 0)
    return (bytes([kind, stream]) + (offset.to_bytes(2, "little") if offset is not None else b"")
            + struct.pack("<H", len(data)) + data)


@pytest.mark.parametrize("version", [b"Q024", b"Q025", b"Q030", b"Q033", b"Q035", b"Q037"])
def test_gquic_before_q039_little_endian_chlo_in_clear(version):
    # the layout of Chrome's Q024-Q035 CHLOs in nDPI's quic.pcap and youtube_quic.pcap: the data
    # length 1026 is written 02 04, which big-endian would read as 516
    message = chlo((b"PAD\x00", b"-" * 987), (b"SNI\x00", b"www.example.com"))
    assert len(message) == 1026
    packet = old_gquic(little_stream_frame(message), version)
    hellos = QuicClientHellos()
    assert looks_like_quic(packet)
    assert hellos.feed(packet) == GQUIC_HELLO
    assert hellos.version == int.from_bytes(version, "big")


def test_gquic_before_q039_over_two_packets():
    hellos = QuicClientHellos()
    assert hellos.feed(old_gquic(little_stream_frame(CHLO[:300]), b"Q035")) is None
    second = b"\x0c" + bytes(range(8)) + b"\x02" + bytes(12) + little_stream_frame(CHLO[300:], offset=300)
    assert hellos.feed(second) == GQUIC_HELLO


def test_an_old_ack_ends_the_packet_before_q034():
    # before Q034 an ACK frame had another layout (entropy): not stepped over, nothing after it read
    packet = old_gquic(b"\x40" + bytes(8) + little_stream_frame(CHLO), b"Q030")
    assert QuicClientHellos().feed(packet) is None


def test_a_chlo_at_a_later_stream_offset_is_read():
    # nDPI's quic_q46.pcap starts with the client's second CHLO, at stream offset 1024: the first
    # was sent before the capture began
    hellos = QuicClientHellos()
    assert hellos.feed(q046(stream_frame(CHLO, offset=1024) + bytes(400))) == GQUIC_HELLO
    split = QuicClientHellos()
    assert split.feed(q043(stream_frame(CHLO[:100], offset=1024))) is None
    assert split.feed(q043(stream_frame(CHLO[100:], offset=1124), flags=0x08)) == GQUIC_HELLO
    # data that does not start a CHLO at a later offset waits for the start of the stream
    assert QuicClientHellos().feed(q043(stream_frame(CHLO[100:], offset=1124))) is None


def test_q050_chlo_in_protected_initial():
    hellos = QuicClientHellos()
    assert hellos.feed(seal(Q050, crypto(0, CHLO, kind=0x08))) == GQUIC_HELLO
    assert hellos.version == Q050


def test_chlo_without_sni_and_with_a_hostile_one():
    assert feed_all([q043(stream_frame(chlo((b"VER\x00", b"Q043"))))]) == [ClientHello(None, (), 0)]
    hostile = chlo((b"SNI\x00", b"evil\x00\x1b.example" + b"a" * 2000))
    got = feed_all([q043(stream_frame(hostile[:1000])), q043(stream_frame(hostile[1000:], offset=1000))])
    assert got[1].server_name == ("evil\\x00\\x1b.example" + "a" * 300)[:253]


@pytest.mark.parametrize("message, why", [
    (b"SHLO" + bytes(20), "not_chlo"),
    (b"CHLO" + struct.pack("<HH", 500, 0), "bad_chlo"),
    (b"CHLO" + struct.pack("<HH", 2, 0) + b"SNI\x00" + struct.pack("<I", 5) + b"VER\x00" + struct.pack("<I", 2)
     + b"hello", "bad_chlo"),
])
def test_malformed_chlo(message, why):
    assert reason([q043(stream_frame(message))]) == why


# ---- looks_like_quic -----------------------------------------------------------------------

def test_looks_like_quic():
    assert looks_like_quic(other_packet(V1, 2))
    assert looks_like_quic(b"\xc0\x1a\x2a\x3a\x4a" + bytes(20))          # a greasing version
    assert not looks_like_quic(b"\xc0\x12\x34\x56\x78" + bytes(20))      # unknown version
    assert not looks_like_quic(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00")  # DNS
    assert not looks_like_quic(b"\x40" + bytes(30))                      # short header
    assert not looks_like_quic(b"\xc0\x00\x00\x00")                      # too short
    assert not looks_like_quic(b"")


# ---- hostile input -------------------------------------------------------------------------

def corrupt(packet, at=-5):
    packet = bytearray(packet)
    packet[at] ^= 0x40
    return bytes(packet)


@pytest.mark.parametrize("datagrams, why", [
    ([b"\xc0\x00\x00"], "truncated_packet"),
    ([b"\xc0\x12\x34\x56\x78" + bytes(40)], "unknown_version"),
    ([b"\xc0\x1a\x2a\x3a\x4a" + bytes(40)], "unknown_version"),
    ([b"\x80\x00\x00\x00\x00\x04abcd\x04efgh\x00\x00\x00\x01"], "version_negotiation"),
    ([b"\x41" + bytes(60)], "not_initial"),
    ([b"\xc0\x00\x00\x00\x01\x15" + bytes(60)], "bad_connection_id"),
    ([b"\xc0\x00\x00\x00\x01\x08" + bytes(8) + b"\x00\x00\x44\x00" + bytes(60)], "truncated_packet"),
    ([b"\xc0\x00\x00\x00\x01\x08" + bytes(8) + b"\x00\x00\x10" + bytes(16)], "truncated_packet"),
    ([corrupt(RFC9001_A2)], "decrypt_failed"),
    ([corrupt(RFC9001_A2, 30)], "decrypt_failed"),
    ([seal(V1, b"\x06\x00\x44\x00abc", pad_to=0)], "bad_crypto_frame"),
    ([seal(V1, b"\x06\x00\x03abc\x08\x00")], "bad_frame"),
    ([seal(V1, crypto(MAX_CRYPTO - 2, b"abcd"))], "crypto_too_long"),
    ([seal(V1, b"".join(crypto(10 + 2 * i, b"z") for i in range(65)))], "too_many_crypto_fragments"),
    ([seal(V1, b"\x02" + varint(5) + varint(0) + varint(1000) + varint(0))], "bad_ack_frame"),
    ([seal(V1, crypto(0, b"\x02\x00\x00\x04abcd"))], "tls_not_client_hello"),
    ([seal(V1, crypto(0, b"\x01\xff\xff\xff"))], "tls_client_hello_too_long"),
    # the first extension (server_name) claiming 255 bytes
    ([seal(V1, crypto(0, RFC_HELLO[:51] + b"\x00\xff" + RFC_HELLO[53:]))], "tls_bad_extension_length"),
    ([seal(V1, crypto(0, RFC_HELLO[:40]), dcid=bytes([i]) * 8, pn=i) for i in range(5)], "too_many_connection_ids"),
    ([q043(b"\xff\x01\x00\x00\x00")], "bad_crypto_frame"),
    ([q043(b"", flags=0x01)], "truncated_packet"),
])
def test_malformed(datagrams, why):
    assert reason(datagrams) == why


def test_a_connection_close_ends_the_packet():
    assert feed_all([seal(V1, crypto(0, RFC_HELLO[:50]) + b"\x1c\x0a\x00\x00" + crypto(50, RFC_HELLO[50:]))]) == [None]


def _only_quic_error(hellos, datagram):
    try:
        got = hellos.feed(datagram)
    except QuicError as e:
        assert re.fullmatch(r"[a-z0-9_]+", e.reason)
        return None
    assert got is None or isinstance(got, ClientHello)
    return got


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=1500), min_size=1, max_size=3))
def test_random_datagrams(datagrams):
    hellos = QuicClientHellos()
    for datagram in datagrams:
        _only_quic_error(hellos, datagram)
    for prefix in (b"\xc3\x00\x00\x00\x01\x08", b"\xd3\x6b\x33\x43\xcf\x08", b"\x09" + bytes(8) + b"Q043",
                   b"\xc3Q046\x50"):
        _only_quic_error(QuicClientHellos(), prefix + datagrams[0])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=1, max_size=1300), st.sampled_from([V1, V2, DRAFT29, Q050, T051]))
def test_random_payloads_in_valid_initials(payload, version):
    _only_quic_error(QuicClientHellos(), seal(version, payload, pad_to=0))
    _only_quic_error(QuicClientHellos(), seal(version, crypto(0, payload[:600], 0x06 if version in (V1, V2, DRAFT29)
                                                              else 0x08), pad_to=0))


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=1300))
def test_random_frames_in_clear_gquic(frames):
    _only_quic_error(QuicClientHellos(), q043(frames))
    _only_quic_error(QuicClientHellos(), q046(frames))
    _only_quic_error(QuicClientHellos(), q043(stream_frame(b"CHLO" + frames[:1000])))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1199), st.integers(1, 255)), min_size=1, max_size=4))
def test_damaged_rfc_vector(changes):
    packet = bytearray(RFC9001_A2)
    for at, flip in changes:
        packet[at] ^= flip
    _only_quic_error(QuicClientHellos(), bytes(packet))


# ---- real captures (../shared) against tshark ------------------------------------------------

def client_datagrams(path):
    """{(client address, port, server address, port): [UDP payloads the client sent]} for an
    Ethernet capture; the client is the side that sent the flow's first datagram."""
    flows = {}
    for frame in captures.frames_of(path):
        datagram = _udp(frame)
        if datagram is None:
            continue
        (src, sport, dst, dport), payload = datagram
        if (dst, dport, src, sport) not in flows:
            flows.setdefault((src, sport, dst, dport), []).append(payload)
    return flows


def _udp(frame):
    """(flow key, payload) of an Ethernet / IPv4 or IPv6 / UDP frame, else None."""
    ip = captures.ip_transport(frame)
    if ip is None or ip[0] != 17:
        return None
    _, src, dst, p, end = ip
    sport, dport = struct.unpack_from("!HH", frame, p)
    return (src, sport, dst, dport), frame[p + 8:end]


@system
@pytest.mark.skipif(not NAMES.is_dir(), reason=f"{NAMES} is absent (a fresh clone has no ../shared)")
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
@pytest.mark.parametrize("name, expected", [
    ("zeek_quic_chromium-115.0.5790.110-google-de-fragmented.pcap", {"www.google.de"}),
    ("zeek_quic_curl-8.1.2-dev-http3-www-google-de.pcap", {"www.google.de"}),
    ("zeek_quic_quic-multiple-initial-fragmented-crypto-only-initial.pcap", {"googleads.g.doubleclick.net"}),
    ("zeek_quic_quic_win11_firefox_google.pcap", {"www.google.com"}),
    # the v2 client (on 127.0.0.1) sends no server_name extension at all: tshark 4.0.17 decrypts
    # its Initial and agrees (an empty field); its ALPN is h3
    ("zeek_quic_quicv2-http3-443.pcap", {""}),
])
def test_real_captures_match_tshark(name, expected):
    path = NAMES / name
    ours = {}
    for key, datagrams in client_datagrams(path).items():
        hellos, got = QuicClientHellos(), None
        for datagram in datagrams:
            if looks_like_quic(datagram) or hellos.version is not None:
                got = hellos.feed(datagram)
            if got is not None:
                break
        if got is not None:
            ours[key[1]] = got.server_name or ""
            assert got.alpn[0] == "h3"
    assert ours == oracle.client_hello_names(path, "udp")
    assert set(ours.values()) == expected
