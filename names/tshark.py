"""Wireshark's dissectors, through pyshark, name the application protocol (`app`) of flows that
NetTally's own parsers left unnamed. The adapter for tshark: the only module that runs it.

It runs beside the counting path, in a process of its own (collector/dpi.py starts it): `label`
blocks that process for one tshark run per link type in the batch, and nothing else.

How a batch is read:
- The samples' frames go into ONE temporary pcap file per link type, each flow's frames together
  and in order; frame number n of the file belongs to the flow that wrote it. Every record says
  its frame was 65,535 bytes longer on the wire than what it holds: samples are cut (capture's
  SAMPLE_BYTES) and their wire length is not carried, and a record that says "cut here" makes
  tshark mark a length field running past the end as a short frame, not a malformed one (a cut
  SIP INVITE stays sip). Frames that were not cut dissect exactly as before (tested on Ethernet
  with padding, VLAN, raw IP and SLL).
- pyshark reads the file with tshark's JSON output, limited to the frame layer (`-j frame`: the
  other layers come as empty stubs), and each frame gives `frame.protocols`, e.g.
  "eth:ethertype:ip:udp:dns".
- A frame's app is the protocol right above the outermost IP header's transport (tcp, udp,
  sctp), past framing layers (nbss, tpkt, cotp, ONC rpc) when something follows them, named as
  Wireshark names the dissector, lower case, with a few of NetTally's names (`_ALIASES`: smb2 ->
  smb, gquic -> quic, bt-dht -> bittorrent...). It is the application protocol the flow speaks,
  not what that carries: quic, not the tls of its Initials; http, not websocket or
  data-text-lines; smb, not the dcerpc inside; sip, not sdp. Never tcp/udp, never `data`,
  never a `_ws.*` layer (malformed, expert, short).
- A flow's app is the one most of its frames show, if more frames show it than show only `data`
  (payload no dissector took). Frames without payload, and frames tshark found malformed, do not
  vote. So a weak heuristic firing on one frame of random bytes (RTCP's did on 2 of 160 random
  UDP datagrams here) names nothing, while a single data frame a dissector recognised does.
- Decode-as is not used: a protocol on a port tshark does not know and that no heuristic
  recognises stays unnamed (SSH on 2222 and SMTP on 2525 are `data` to tshark 4.0; SIP, DNS,
  RTP/RTCP, STUN, BitTorrent and others are found by heuristics on any port).

Bounds: at most `max_flows_per_call` samples per call (the rest are counted in `dropped`, never
read); one deadline of `timeout` seconds for the whole call, after which tshark is killed and
what was read so far is returned; temporary files removed on every exit (a
TemporaryDirectory). Bad frames, an unknown link type, tshark crashing or printing nonsense give
fewer labels, never an exception.

Measured (tshark 4.0.17, pyshark 0.6, Python 3.11, a shared 2-core VM with a load of ~2.4 from
other work, so figures vary by ~1.5x between runs): label() of one batch of 200 flows x 4 frames
(DNS, SSH, HTTP, NTP and random UDP, ~100-byte frames), pcap writing included, medians of 15,
both routes run alternately on the same samples and giving the same labels:
- pyshark, JSON limited to the frame layer, as here: 0.21-0.39 s a batch = 2,100-3,800
  packets/s, 520-930 flows/s (median of 30 runs at a quieter moment: 0.21 s).
- `tshark -T fields -e frame.number -e frame.protocols -e _ws.malformed` through subprocess:
  0.19-0.33 s = 2,400-4,200 packets/s, 600-1,060 flows/s. 1.15-1.2x faster, not the 3x that
  would have justified leaving pyshark, so pyshark it is.
- pyshark's other outputs (FileCapture alone, same batch): JSON with every layer 0.35 s (~2,300
  packets/s; with pyshark's per-file `tshark -v` 0.38-0.48 s, ~1,700-2,100, near the 1,400 of
  issue 9); EK 0.31 s (its first run in a process also loads a field map, ~1 s); PDML 0.95-1.1 s
  (~750), 0.37 s with `-j frame`. JSON with `-j frame` is the fastest.
- Most of a 200-flow batch is tshark's start (~0.17 s: its dissector tables), so the cost per
  flow falls with the batch: at 2,000 flows x 4 frames pyshark 0.45-1.2 s (6,800-17,700
  packets/s), fields 0.33-0.51 s (15,600-24,600 packets/s), 1.4-2.3x.
The counting path does ~100x that per core, so only flows our parsers leave unnamed come here,
in batches, in another process; the caller bounds what it offers and counts the rest.
"""
import asyncio
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time
from collections import Counter

import pyshark
from packaging import version as versions

from runtime.text import one_line

FRAMES_PER_FLOW = 4          # frames read per sample (capture/flows.py keeps no more)
_VERSION_TIMEOUT = 10.0      # seconds `tshark -v` may take at start
_UNKNOWN_REST = 65535        # bytes each frame may have had beyond what it holds (see above)
_MAX_RECORD = 262144         # the largest original length a pcap record may claim (records.MAX_WIRE_LEN)
_PCAP_HEADER = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")

_TRANSPORTS = frozenset(("tcp", "udp", "sctp"))
# Layers that frame another protocol: the app is what they carry, when tshark saw it.
_FRAMING = frozenset(("nbss", "tpkt", "cotp", "rpc", "gssapi", "spnego"))
# What tshark shows for payload no dissector took: a vote that the flow is unnamed.
_NOT_APPS = frozenset(("data", "data-text-lines", "media"))
# Wireshark's dissector names where NetTally's vocabulary (capture/signatures.py) has another.
_ALIASES = {
    "smb2": "smb", "smb3": "smb", "ssl": "tls", "gquic": "quic", "classicstun": "stun",
    "bt-dht": "bittorrent", "bt-utp": "bittorrent", "bootp": "dhcp", "pgsql": "postgresql",
    "resp": "redis",
}


class TsharkLabeller:
    """Runs in its own process (the collector starts it); label() blocks only that process."""

    def __init__(self, tshark_path: str | None = None, max_flows_per_call: int = 200, timeout: float = 20.0):
        self.max_flows_per_call = max_flows_per_call
        self.timeout = timeout
        # reason -> samples handed over but not labelled for a reason other than tshark's verdict:
        # tshark_over_batch (past max_flows_per_call), tshark_timeout, tshark_failed (tshark or
        # the temporary folder failed), tshark_bad_sample (a link type or frame not writable)
        self.dropped = {}
        self.tshark_path, self._version, self.why_not = _find_tshark(tshark_path)
        self.available = not self.why_not

    def label(self, samples: list) -> dict:
        """{key: app} for the samples (records.Sample) tshark could name (the first
        max_flows_per_call of them); {} when tshark is not available. Never raises."""
        if not self.available or not samples:
            return {}
        deadline = time.monotonic() + self.timeout
        if len(samples) > self.max_flows_per_call:
            self._drop("tshark_over_batch", len(samples) - self.max_flows_per_call)
            samples = samples[:self.max_flows_per_call]
        by_link = {}
        for sample in samples:
            if isinstance(sample.linktype, int) and 0 <= sample.linktype <= 0xFFFFFFFF:
                by_link.setdefault(sample.linktype, []).append(sample)
            else:
                self._drop("tshark_bad_sample", 1)
        votes = {}                                     # key -> [app or "" per frame that voted]
        loop = asyncio.new_event_loop()                # pyshark's own would set a global child watcher
        try:
            with tempfile.TemporaryDirectory(prefix="nettally-tshark-") as folder:
                for linktype, group in by_link.items():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self._drop("tshark_timeout", len(group))
                        continue
                    path = os.path.join(folder, f"{linktype}.pcap")
                    owners, bad = _write_pcap(path, linktype, group)
                    self._drop("tshark_bad_sample", bad)
                    if owners:
                        self._read(path, owners, votes, left, loop)
        except OSError:                                # a full or unwritable temporary folder
            self._drop("tshark_failed", len({s.key for s in samples} - votes.keys()))
        finally:
            loop.close()
        labels = {}
        for key, frames in votes.items():
            app = _flow_app(frames)
            if app:
                labels[key] = app
        return labels

    def _read(self, path, owners, votes, timeout, loop):
        """Runs tshark on one file; each frame's vote goes to the key that owns its number."""
        def take(packet):
            number = int(packet.frame_info.number)
            if 0 < number <= len(owners):
                vote = _frame_app(packet.frame_info.protocols, "_ws.malformed" in packet)
                if vote is not None:
                    votes.setdefault(owners[number - 1], []).append(vote)

        capture = _Capture(path, self.tshark_path, self._version, loop)
        try:
            capture.apply_on_packets(take, timeout=timeout)
        except (TimeoutError, asyncio.TimeoutError):
            self._drop("tshark_timeout", len(set(owners) - votes.keys()))
        except Exception:                  # pyshark's crash report, JSON it cannot parse, a lost child
            self._drop("tshark_failed", len(set(owners) - votes.keys()))

    def _drop(self, reason, n):
        if n > 0:
            self.dropped[reason] = self.dropped.get(reason, 0) + n


class _Capture(pyshark.FileCapture):
    """pyshark's FileCapture with three changes, each for a measured or seen problem:
    - the tshark binary is exactly the one checked at start (pyshark would swap the file name
      for "tshark" and fall back to PATH, so a wrong path would silently run another tshark);
    - the version is the one read at start (pyshark runs `tshark -v` again per file: 0.15 s,
      nearly half of a 200-flow batch);
    - after the end of the output it waits (at most 1 s) for tshark to exit before its cleanup
      kills it: killing a child that has just exited reaps it under asyncio's child watcher,
      which then logs "Unknown child process" and reports exit status 255 (seen here about
      once in 5 runs, and pyshark turns that into a TSharkCrashException); and a process whose
      cleanup raised is forgotten, not cleaned again by __del__ on a closed event loop."""

    def __init__(self, path, tshark_path, tshark_version, loop):
        self._tshark, self._tshark_version = tshark_path, tshark_version
        super().__init__(path, keep_packets=False, use_json=True, eventloop=loop, custom_parameters=["-j", "frame"])

    def _get_tshark_path(self):
        return self._tshark

    def _get_tshark_version(self):
        return self._tshark_version

    async def _cleanup_subprocess(self, process):
        if self._eof_reached and process.returncode is None:
            try:
                await asyncio.wait_for(process.wait(), 1.0)
            except (TimeoutError, asyncio.TimeoutError):
                pass
        try:
            await super()._cleanup_subprocess(process)
        finally:          # when it raises (tshark's exit status > 0), pyshark would retry at __del__
            self._running_processes.discard(process)


def _find_tshark(path):
    """(path, version, "") for a tshark that runs and says its version, else (path, None, why)."""
    if path is None:
        path = shutil.which("tshark")
        if path is None:
            return None, None, "tshark is not installed (Debian package tshark): flows our parsers cannot name stay unnamed"
    elif not (os.path.isfile(path) and os.access(path, os.X_OK)):
        return path, None, f"no executable tshark at {path}"
    try:
        done = subprocess.run([path, "-v"], capture_output=True, timeout=_VERSION_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        return path, None, one_line(f"{path} -v failed: {e}")
    first = done.stdout.decode("ascii", "replace").partition("\n")[0]
    found = re.search(r"TShark\D*(\d+\.\d+\.\d+)", first)
    if done.returncode != 0 or found is None:
        return path, None, one_line(f"{path} is not a working tshark (`-v` exit status {done.returncode}: {first[:80]!r})")
    tshark_version = versions.parse(found.group(1))
    if tshark_version < versions.parse("2.6.7"):     # JSON with -j and --no-duplicate-keys
        return path, None, f"tshark {tshark_version} at {path} is too old (2.6.7 or newer is needed)"
    return path, tshark_version, ""


def _write_pcap(path, linktype, samples):
    """Writes the samples' frames (at most FRAMES_PER_FLOW each) to a pcap file; returns (the key
    of each frame written, in order; how many samples were left out because a frame of theirs
    could not be written)."""
    owners, bad = [], 0
    with open(path, "wb") as f:
        f.write(_PCAP_HEADER.pack(0xA1B2C3D4, 2, 4, 0, 0, _MAX_RECORD, linktype & 0xFFFFFFFF))
        for sample in samples:
            try:
                records = []
                for ts, data in sample.frames[:FRAMES_PER_FLOW]:
                    data = bytes(data[:_MAX_RECORD])
                    whole, micros = divmod(round(min(max(float(ts), 0.0), 4294967295.0) * 1e6), 1_000_000)
                    records.append(_RECORD.pack(whole, micros, len(data), min(len(data) + _UNKNOWN_REST, _MAX_RECORD))
                                   + data)
            except (TypeError, ValueError, OverflowError, struct.error):
                bad += 1
                continue
            f.write(b"".join(records))
            owners.extend([sample.key] * len(records))
    return owners, bad


def _frame_app(protocols, malformed):
    """One frame's vote: the app its layers show, "" for payload no dissector took, None for no
    vote (no payload, no transport, or malformed)."""
    if malformed or not isinstance(protocols, str):
        return None
    layers = protocols.split(":")
    i = next((n for n, layer in enumerate(layers) if layer in ("ip", "ipv6")), len(layers)) + 1
    while i < len(layers) and layers[i].startswith("ipv6."):      # extension headers
        i += 1
    if i >= len(layers) or layers[i] not in _TRANSPORTS:
        return None
    above = [layer for layer in layers[i + 1:] if not layer.startswith("_ws.")]
    while len(above) > 1 and above[0] in _FRAMING:
        above.pop(0)
    if not above:
        return None
    app = above[0]
    if app in _NOT_APPS:
        return ""
    return _ALIASES.get(app, app)


def _flow_app(frames):
    """The app most of a flow's frames show (the first of equals), if more frames show it than
    show only data; else ""."""
    apps = Counter(vote for vote in frames if vote)
    if not apps:
        return ""
    app, n = max(apps.items(), key=lambda item: item[1])
    return app if n > frames.count("") else ""

