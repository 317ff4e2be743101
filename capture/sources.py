"""Which capture backend opens an interface: the ring (capture/ring.py, Linux) or libpcap
(capture/pcap.py, every platform), as --capture-backend says."""
import sys

from capture.ring import CaptureSetupError, RingSource, resolve


def open_source(name, bpf="", ring_mb=64, backend="auto"):
    """The source for interface `name`: the ring (Linux) or libpcap (capture/pcap.py); `auto`
    takes the ring on Linux and libpcap elsewhere."""
    iface = resolve(name)
    linux = sys.platform.startswith("linux")
    if backend == "ring" and not linux:
        raise CaptureSetupError("the ring capture backend is Linux's (AF_PACKET): use --capture-backend pcap or auto")
    if backend == "ring" or (backend == "auto" and linux):
        return RingSource(iface, bpf, ring_mb)
    from capture.pcap import PcapSource     # here: scapy's libpcap bindings load only when used
    return PcapSource(iface, bpf, ring_mb)
