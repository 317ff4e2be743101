"""The vendor of a MAC address, from the IEEE registry as Wireshark's `manuf` file carries it.

Sources, first found wins (`Vendors.source` says which):
1. Wireshark's manuf (/usr/share/wireshark/manuf, installed with tshark): the system's copy,
   updated with the distribution.
2. scapy's copy of the same file (scapy.libs.manuf.DATA in scapy 2.8.0; scapy.data.MANUFDB is
   built from it but answers /24 blocks only, so the text itself is read).
3. names/oui_fallback.txt: a few hundred blocks of vendors common on home and office networks
   (its header says how it was made), so a machine without either still names the usual devices.

All three are in manuf's format: "prefix[/bits] <tab> short name <tab> long name [# comment]".
Blocks are MA-L (/24, most of the registry), MA-M (/28) and MA-S (/36); the longest prefix that
holds an address wins. The name given is the long (registered) name without its legal form
("Apple, Inc." -> "Apple", "Samsung Electronics Co.,Ltd" -> "Samsung Electronics"): the same
words from every source, where manuf's short column is cut to 8 or 12 characters depending on
the Wireshark version ("Raspberr", "RaspberryPiT").

A locally administered address (bit 0x02 of the first octet set) has no vendor: "" . Software
chose it (phones' per-network random Wi-Fi addresses, virtual machines, containers, bridges), so
the first three octets name nobody even when they happen to equal a registered block.

Measured (Python 3.11): loading takes 0.13 s from Wireshark's file, 0.22 s from scapy's (its
unpacking included) and holds ~5.5 MB for ~52,000 blocks; a lookup costs 0.5 µs.
"""
import os
import re

WIRESHARK_MANUF = "/usr/share/wireshark/manuf"
FALLBACK = os.path.join(os.path.dirname(__file__), "oui_fallback.txt")
_LEGAL_FORM = re.compile(
    r"(?:[\s,.]+(?:inc|incorporated|corp|corporation|corporate|co|company|ltd|limited|llc|l\.l\.c|"
    r"gmbh|ag|sa|s\.a|s\.a\.s|sas|bv|b\.v|nv|n\.v|oy|ab|as|a/s|plc|pty|srl|s\.r\.l|spa|s\.p\.a|kg|kk|"
    r"co\.?,?\s*ltd|co\.?,?\s*limited)\.?)+$",
    re.IGNORECASE)
_HEX = frozenset("0123456789abcdefABCDEF")
# registered holders that name no maker: a block whose owner asked to stay unnamed, and the
# registry's own parent blocks of the MA-M and MA-S assignments (an address in one of those but
# in no assigned sub-block has no known vendor)
_NO_VENDOR = frozenset(("Private", "IEEE Registration Authority"))


def vendor_name(short, long):
    """The name shown for a registry entry: the long name without its legal form, else the short."""
    name = _LEGAL_FORM.sub("", long).strip(" ,.") if long else ""
    return name or short


def parse_manuf(lines):
    """{prefix bits: {prefix value: name}} from manuf-format lines; lines that are not entries
    (comments, blanks, damage) are skipped."""
    blocks = {}
    names = {}                                  # (short, long) -> name: one string per vendor, one regex each
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) < 2:
            parts = line.split(None, 2)
            if len(parts) < 2:
                continue
        prefix, _, bits = parts[0].strip().partition("/")
        digits = prefix.replace(":", "").replace("-", "").replace(".", "")
        if not digits or len(digits) > 12 or not _HEX.issuperset(digits):
            continue
        try:
            width = int(bits) if bits else 24 if len(digits) == 6 else 4 * len(digits)
        except ValueError:
            continue
        if not 0 < width <= 48:
            continue
        value = int(digits, 16) << (48 - 4 * len(digits))
        long = parts[2].strip() if len(parts) > 2 else ""
        if long.startswith("#"):                # no long name, only a comment
            long = ""
        key = (parts[1].strip(), long)
        name = names.get(key)
        if name is None:
            name = names[key] = vendor_name(*key)
        if name in _NO_VENDOR:
            continue
        blocks.setdefault(width, {})[value >> (48 - width)] = name
    return blocks


class Vendors:
    """OUI table: `vendor(mac)`; `source` names the table loaded (for the docs and the log)."""

    def __init__(self, blocks, source):
        self.source = source
        self._tables = tuple((48 - width, blocks[width]) for width in sorted(blocks, reverse=True))
        self.sizes = {width: len(table) for width, table in blocks.items()}

    def __len__(self):
        return sum(self.sizes.values())

    @classmethod
    def load(cls, manuf_path: str = WIRESHARK_MANUF) -> "Vendors":
        """Wireshark's manuf at `manuf_path` when readable, else scapy's copy, else the fallback."""
        for loader in (lambda: from_file(manuf_path, f"wireshark:{manuf_path}"), from_scapy,
                       lambda: from_file(FALLBACK, "fallback:names/oui_fallback.txt")):
            vendors = loader()
            if vendors is not None and len(vendors):
                return vendors
        return cls({}, "none")

    def vendor(self, mac: str) -> str:
        """Vendor name of "aa:bb:cc:dd:ee:ff" (any case; ':' '-' or '.' between the digits, or
        none); "" when unknown, locally administered, or not a MAC address."""
        try:
            digits = mac.replace(":", "").replace("-", "").replace(".", "")
            if len(digits) != 12 or not _HEX.issuperset(digits):
                return ""
            value = int(digits, 16)
        except (AttributeError, TypeError, ValueError):
            return ""
        if value & 0x020000000000:              # locally administered: no registered vendor
            return ""
        for shift, table in self._tables:
            name = table.get(value >> shift)
            if name is not None:
                return name
        return ""


def from_file(path, source):
    """Vendors from a manuf-format file, or None when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return Vendors(parse_manuf(f), source)
    except OSError:
        return None


def from_scapy():
    """Vendors from scapy's bundled copy of manuf, or None when this scapy has none."""
    try:
        from scapy.libs.manuf import DATA       # the text of manuf, unpacked at import (~50 ms)
    except ImportError:
        return None
    return Vendors(parse_manuf(DATA.splitlines()), "scapy:scapy.libs.manuf")
