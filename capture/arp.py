"""Address -> MAC from ARP: the host's own announcement, unlike the source MAC of a routed IP frame. Pure."""


def sender(data):
    """(raw IPv4 address, raw MAC) of an Ethernet/IPv4 ARP frame's sender (at most one VLAN tag),
    or None: not such a frame, or a probe (sender 0.0.0.0: no address yet)."""
    off = 16 if data[12:14] == b"\x81\x00" else 12
    if data[off:off + 2] == b"\x08\x06" and data[off + 2:off + 8] == b"\x00\x01\x08\x00\x06\x04" \
            and len(data) >= off + 18:
        ip = data[off + 16:off + 20]
        if len(ip) == 4 and ip != b"\x00\x00\x00\x00":
            return ip, data[off + 10:off + 16]
    return None
