"""Names from DNS, mDNS and LLMNR messages (RFC 1035, 6762, 4795: one wire format) and from
NetBIOS name service announcements (RFC 1002), read off a flow's first packets.

Pure: bytes in, names out. Everything in a message was written by whoever sent it, so every
walk is bounded before it starts and any malformation raises `DnsError` (never anything else):
  - a name is at most 255 bytes on the wire (RFC 1035 2.3.4), hence at most 127 labels;
  - compression pointers must go strictly backwards: the first jump lands before the start of
    the name being read, each further jump before the previous jump's target. Every compressor
    points at an earlier occurrence of the suffix (RFC 1035 4.1.4), so real messages always
    pass, while a loop, a pointer to itself or a forward pointer cannot (`compression_loop`).
    Strictly decreasing targets alone make every walk finite;
  - at most 20 jumps per name (zeek's default `dns_max_compression_chain_depth`): a chain of
    pointers to pointers is legal but adds no name, so its length only costs time. zeek's
    max-compression-depth trace (a chain 6 deep) parses in full, as zeek's default and tshark
    read it; a deeper chain raises `compression_depth`;
  - at most 64 questions and 64 resource records (answer, authority and additional sections,
    in order) are walked per message; the rest are ignored without error (past 64 questions the
    records are not reached: the message gives its first question only). With the limits on
    each name, a message's work is bounded whatever its length and counts say;
  - counts that no message could hold (65,535 bytes at most; a question takes >= 5, a record
    >= 11) raise `bad_count`; data that ends inside a name or record raises `truncated`.
  - a malformation after a whole first question (a damaged or cut record, a count past the
    data) still raises, but the error carries that question (`DnsError.question`): the query
    name is what the flow asked for, as tshark and nDPI read it from such a message too.

A dot inside a label is not escaped (wire_text keeps '.'): `a.b` as one label reads like two.

Cost (timeit, CPython 3.11, best of 3 runs on a shared 2-core machine): parse of a typical
95-byte response (a question, two A records, names written out) 5.6 us, 4.1 us compressed to
65 bytes; a 143-byte response with a CNAME chain of two and two A records 7.1 us; a query
1.8 us. Names already read in the message are reused, not walked again, when an owner name is
a bare pointer to one (most are). With records.wire_text's plain-ASCII fast path; without it
each name costs ~2 us more.
"""
import struct
from typing import NamedTuple

from records import ip_text, wire_text

MAX_NAME_WIRE = 255        # RFC 1035 2.3.4, length bytes and the final zero included
MAX_JUMPS = 20             # zeek's dns_max_compression_chain_depth default
MAX_QUESTIONS = 64         # questions walked per message
MAX_RECORDS = 64           # resource records walked per message
HEADER = 12

TYPE_A, TYPE_CNAME, TYPE_AAAA, TYPE_NB = 1, 5, 28, 32
CLASS_IN = 1

_HEADER = struct.Struct("!2xHHHHH").unpack_from     # flags, qdcount, ancount, nscount, arcount
_U16 = struct.Struct("!H").unpack_from
_RR = struct.Struct("!HH4xH").unpack_from           # type, class, (ttl), rdlength
_QUESTION = struct.Struct("!HH").unpack_from


class DnsError(ValueError):
    """A message that is not well-formed DNS; `reason` is the short counter name. `question` is
    the message with its first question only (no addresses) when that question was whole."""

    def __init__(self, reason: str, question=None):
        super().__init__(reason)
        self.reason = reason
        self.question = question


class DnsMessage(NamedTuple):
    response: bool
    qname: str | None      # first question's name, lower case, wire_text'ed, no trailing dot
    qtype: int | None
    addresses: list        # [(address text, name)] from A/AAAA in the answer and additional sections


def _name(message: bytes, offset: int) -> tuple:
    """(name bytes as labels joined by '.', offset just after the name where it starts, jumps)."""
    labels = []
    size = 1                     # the final zero byte
    after = -1                   # set at the first pointer: reading goes on elsewhere
    floor = offset               # the next jump must land before this
    jumps = 0
    while True:
        length = message[offset]          # IndexError past the end: truncated
        if length == 0:
            return b".".join(labels), (offset + 1 if after < 0 else after), jumps
        if length < 0x40:
            end = offset + 1 + length
            size += 1 + length
            if size > MAX_NAME_WIRE:
                raise DnsError("name_too_long")
            label = message[offset + 1:end]
            if len(label) != length:
                raise DnsError("truncated")
            labels.append(label)
            offset = end
        elif length >= 0xC0:
            target = (length & 0x3F) << 8 | message[offset + 1]
            if after < 0:
                after = offset + 2
            if target >= floor:
                raise DnsError("compression_loop")
            if target < HEADER:
                raise DnsError("bad_pointer")
            jumps += 1
            if jumps > MAX_JUMPS:
                raise DnsError("compression_depth")
            floor = offset = target
        else:
            # 0x40 / 0x80: extended label types (RFC 6891 deprecated them), never sent
            raise DnsError("bad_label_type")


def _known_name(message: bytes, offset: int, known: dict) -> bytes:
    """The name at offset, lower case. `known` holds the names read so far in this message by
    where they start (with their jumps): most owner names are a bare pointer to one of them (the
    question, a CNAME's target), and the same rules hold as if the pointer were followed."""
    if message[offset] >= 0xC0:
        target = (message[offset] & 0x3F) << 8 | message[offset + 1]
        hit = known.get(target)
        if hit is not None and target < offset and hit[1] < MAX_JUMPS:
            known[offset] = (hit[0], hit[1] + 1)
            return hit[0]
    raw, _, jumps = _name(message, offset)
    name = raw.lower()
    known[offset] = (name, jumps)
    return name


def _skip_name(message: bytes, offset: int) -> int:
    """Offset after a name whose text nobody needs: a pointer ends it, nothing is followed."""
    while True:
        length = message[offset]
        if length == 0:
            return offset + 1
        if length >= 0xC0:
            return offset + 2
        if length >= 0x40:
            raise DnsError("bad_label_type")
        offset += 1 + length


def parse(message: bytes) -> DnsMessage:
    """One DNS / mDNS / LLMNR message. Raises DnsError (`reason`, and `question` when the first
    question was whole) on any malformation."""
    try:
        head = _question(message)
    except (IndexError, struct.error):
        raise DnsError("truncated") from None
    try:
        return _parse(message, *head)
    except (IndexError, struct.error):
        error = DnsError("truncated")
    except DnsError as e:
        error = e
    if head[1] is not None:
        error.question = DnsMessage(bool(head[0] & 0x8000), wire_text(head[1]), head[2], [])
    raise error


def _question(message: bytes) -> tuple:
    """(flags, first question's name lower case or None, its type, offset after it)."""
    if len(message) < HEADER:
        raise DnsError("truncated")
    flags, qdcount = _HEADER(message)[:2]
    if not qdcount:
        return flags, None, None, HEADER
    raw, offset, _ = _name(message, HEADER)
    return flags, raw.lower(), _QUESTION(message, offset)[0], offset + 4


def _parse(message: bytes, flags: int, qname, qtype, offset: int) -> DnsMessage:
    _, qdcount, ancount, nscount, arcount = _HEADER(message)
    records = ancount + nscount + arcount
    if HEADER + 5 * qdcount + 11 * records > 65535:
        raise DnsError("bad_count")
    if qdcount:
        if qdcount > MAX_QUESTIONS:
            records = 0
        for _ in range(min(qdcount, MAX_QUESTIONS) - 1):
            offset = _skip_name(message, offset) + 4
        if offset > len(message):
            raise DnsError("truncated")
    known = {} if qname is None else {HEADER: (qname, 0)}
    found = []                  # (raw address, owner name lower case)
    aliases = {}                # CNAME owner -> target, lower case
    nsend = ancount + nscount
    end = len(message)
    for index in range(min(records, MAX_RECORDS)):
        start = offset
        offset = _skip_name(message, offset)
        rtype, rclass, rdlength = _RR(message, offset)
        rdata = offset + 10
        offset = rdata + rdlength
        if offset > end:
            raise DnsError("truncated")
        # mDNS sets the class's top bit (cache flush); authority records name no address we use
        if rclass & 0x7FFF != CLASS_IN or ancount <= index < nsend:
            continue
        if (rtype == TYPE_A and rdlength == 4) or (rtype == TYPE_AAAA and rdlength == 16):
            found.append((message[rdata:offset], _known_name(message, start, known)))
        elif rtype == TYPE_CNAME:
            aliases[_known_name(message, start, known)] = _known_name(message, rdata, known)
    return DnsMessage(bool(flags & 0x8000), None if qname is None else wire_text(qname), qtype,
                      _addresses(found, qname, aliases) if found else [])


def _addresses(found: list, qname: bytes | None, aliases: dict) -> list:
    """An address answers the question when its owner is the question's name or a CNAME the
    question's name leads to: it is credited to the name the client asked for. The chain is
    followed at most once around the alias table (a CNAME loop ends there)."""
    chain = set()
    if qname is not None:
        name = qname
        for _ in range(len(aliases) + 1):
            chain.add(name)
            name = aliases.get(name)
            if name is None or name in chain:
                break
    return [(ip_text(raw), wire_text(qname if owner in chain else owner)) for raw, owner in found]


def parse_tcp(stream: bytes) -> DnsMessage | None:
    """The first message of a DNS-over-TCP stream (2-byte length prefix, RFC 1035 4.2.2), from
    the bytes seen so far; None while they do not hold the whole message yet."""
    if len(stream) < 2:
        return None
    length = _U16(stream)[0]
    if length < HEADER:
        raise DnsError("truncated")
    if len(stream) < 2 + length:
        return None
    return parse(stream[2:2 + length])


# ---- NetBIOS name service (UDP 137) ----------------------------------------------------------------

# Opcodes that announce "this name is at this address": a query's positive answer (0),
# registration (5), refresh (8, and 9 as some stacks send it). A release (6) says the name goes away.
_NB_ANNOUNCE = frozenset((0, 5, 8, 9))
# Unique-name suffixes that name the machine: workstation (0x00) and file server (0x20). The
# others name a user (0x03 messenger), a domain or a role.
_NB_HOST_SUFFIXES = frozenset((0x00, 0x20))
_NB_FIRST_LEVEL = bytes(range(0x41, 0x51))     # 'A'..'P', one per half byte (RFC 1001 14.1)


def netbios_name(payload: bytes) -> tuple | None:
    """(name text, address text) from an NBNS registration, refresh or positive query response;
    None for anything else. The name is lower case (NetBIOS upper-cases names: lowering lets
    them meet the DNS form of the same host). Never raises."""
    try:
        return _netbios_name(payload)
    except (DnsError, IndexError, struct.error):
        return None


def _netbios_name(payload: bytes) -> tuple | None:
    if len(payload) < HEADER:
        return None
    flags, qdcount, ancount, nscount, arcount = _HEADER(payload)
    response = flags & 0x8000
    if (flags >> 11) & 0x0F not in _NB_ANNOUNCE or (response and flags & 0x0F):
        return None      # not an announcing opcode, or a negative response
    if response:
        if qdcount or ancount != 1:
            return None
        offset = HEADER
    else:
        # a registration: the name in one question, its address in one additional record
        if qdcount != 1 or arcount != 1:
            return None
        offset = _skip_name(payload, HEADER) + 4
    raw, offset, _ = _name(payload, offset)
    rtype, rclass, rdlength = _RR(payload, offset)
    rdata = offset + 10
    if rtype != TYPE_NB or rclass != CLASS_IN or rdlength < 6 or rdata + 6 > len(payload):
        return None
    nb_flags, address = _U16(payload, rdata)[0], payload[rdata + 2:rdata + 6]
    encoded = raw.split(b".", 1)[0]           # a scope (".corp") after the name is not kept
    if nb_flags & 0x8000 or len(encoded) != 32 or encoded.strip(_NB_FIRST_LEVEL):
        return None      # a group name (workgroup, domain), or not first-level encoded
    decoded = bytes((encoded[i] - 0x41) << 4 | (encoded[i + 1] - 0x41) for i in range(0, 32, 2))
    if decoded[15] not in _NB_HOST_SUFFIXES or address == b"\0\0\0\0":
        return None
    name = decoded[:15].rstrip(b" \0").lower()
    return (wire_text(name), ip_text(address)) if name else None
