"""Import of capture files: file frames -> flow table -> a rollup sink (the storage writer).

On a machine with two cores, a plain pcap file is read by two processes at once: a reader
process runs the capture-file parser (capfile.CaptureFile, the one place that knows the formats)
and sends back, per batch, only each frame's time, wire length and where its bytes lie in the
file; this process reads those bytes itself with one read per batch. The frames' bytes never
travel through the pipe: pickling them costs more than parsing the file (bench/README.md).
pcapng and gzip'd files (whose frame bytes are not a plain range of the file), small files and
one-core machines are read in this process, as before.
"""
import os
import stat
from array import array
from dataclasses import dataclass, field
from itertools import accumulate, repeat
from operator import itemgetter, sub

from runtime import children, signals
from capture.capfile import PCAP_MAGIC, CaptureError, CaptureFile
from capture.flows import FlowTable

PARALLEL_MIN_BYTES = 8 << 20      # below this, starting a reader process costs more than it saves
_PCAP_HEADER, _RECORD_HEADER = 24, 16
_PIPE_BYTES = 1 << 20


@dataclass
class ImportResult:
    path: str
    frames: int = 0
    clamped: int = 0
    damage: str | None = None
    interfaces: list = field(default_factory=list)
    interrupted: bool = False
    bad_times: int = 0          # pcapng timestamps outside 1970..9999, clamped into that range


def import_file(path, sink, table: FlowTable, parallel=None, stop=None) -> ImportResult:
    """Counts every frame of one file into `table`, handing closed-bucket rollups to `sink` as
    they come and the rest when the file ends. Raises CaptureError if the file is unreadable.
    `parallel`: None decides by file and machine; False reads in this process; True uses a
    reader process for any plain pcap file. `stop()`, asked between batches (never inside one,
    so every counter stays consistent), ends the import early with what was counted.
    Memory is bounded by the table's max_flows whatever the file's size: the table keeps no new
    flows (nobody takes them here) and hands each rollup to `sink` as it is made (closed buckets
    and evictions in pieces of capture.flows.ROLLUP_FLOWS flows, one list each), so neither it
    nor the sink's copies (labels, the pipe to the writer) ever hold a whole bucket of deltas."""
    table.stream_to(lambda rollup: sink([rollup]))
    source = _open_source(path, parallel)
    interrupted = False
    try:
        for name, linktype, frames in source.batches():
            table.ingest(name, linktype, frames)
            if stop is not None and stop():
                interrupted = True
                break
    finally:
        source.close()
    table.close()
    return ImportResult(path, source.frames, source.clamped, source.damage, source.interfaces, interrupted,
                        source.bad_times)


def _open_source(path, parallel):
    if parallel is False or (parallel is None and _cores() < 2):
        return _InProcess(path)
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):    # a pipe or FIFO can be read once, and only in order
            return _InProcess(path)
        with open(path, "rb") as f:
            plain_pcap = f.read(4) in PCAP_MAGIC
        if plain_pcap and (parallel or info.st_size >= PARALLEL_MIN_BYTES):
            return _ReaderProcess(path)
    except OSError:                   # unreadable, or no process to be had: CaptureFile says the rest
        pass
    return _InProcess(path)


def _cores():
    """CPUs this process may run on (a taskset or cpuset can leave fewer than the machine has)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class _InProcess:
    """Frames parsed in this process (every format)."""

    def __init__(self, path):
        self._capture = CaptureFile(path)

    def batches(self):
        interfaces = self._capture.interfaces
        for index, frames in self._capture.batches():
            iface = interfaces[index]
            yield iface.name, iface.linktype, frames

    def close(self):
        self._capture.close()

    frames = property(lambda self: self._capture.frames)
    clamped = property(lambda self: self._capture.clamped)
    damage = property(lambda self: self._capture.damage)
    bad_times = property(lambda self: self._capture.bad_times)
    interfaces = property(lambda self: [(i.name, i.linktype) for i in self._capture.interfaces])


class _ReaderProcess:
    """Frames of a plain pcap file: parsed by a reader process, bytes read here by position."""

    def __init__(self, path):
        self.path = path
        self.frames = self.clamped = 0
        self.bad_times = 0            # a classic pcap's 32-bit seconds cannot leave 1970..2106
        self.damage = None
        self.interfaces = []
        self._file = open(path, "rb", buffering=0)     # whole batches: a buffer would only copy twice
        try:
            ctx = children.context()
            self._conn, child_end = ctx.Pipe(duplex=False)
            children.widen(child_end)     # a dozen batches: the reader runs ahead of the counting
            self._process = ctx.Process(target=_reader_main, args=(path, child_end, self._conn),
                                        name="capture-reader", daemon=True)
            self._process.start()
        except OSError:
            self._file.close()
            raise
        child_end.close()

    def batches(self):
        while True:
            try:
                message = self._conn.recv()
            except EOFError:
                self._process.join(5)
                self.damage = (f"the reader process ended unexpectedly (exit code {self._process.exitcode}) "
                               f"after {self.frames} frames")
                return
            kind = message[0]
            if kind == "batch":
                _, index, base, times, wire_lens, starts, ends = message
                chunk = _read_at(self._file, base, ends[-1])
                if len(chunk) < ends[-1]:
                    self.damage = f"the file shrank while being read (at byte {base + len(chunk)})"
                    return
                name, linktype = self.interfaces[index]
                self.frames += len(times)
                data = map(chunk.__getitem__, map(slice, starts, ends))
                # a list: the flow table's compiled steady path takes lists (capture/_steady.c)
                yield name, linktype, list(zip(times, wire_lens, data, repeat(False)))   # pcap has no direction
            elif kind == "interfaces":
                self.interfaces = message[1]
            elif kind == "end":
                _, self.frames, self.clamped, self.damage, self.interfaces = message
                return
            elif kind == "error":
                raise CaptureError(message[1])
            else:
                raise RuntimeError(f"capture reader failed: {message[1]}")

    def close(self):
        self._conn.close()            # a reader still sending gets a broken pipe and stops
        self._process.join(5)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join()
        self._file.close()


def _reader_main(path, conn, importer_end):
    """Reader process. A classic pcap's records follow each other from byte 24, each a 16-byte
    header and the captured bytes, so a frame's place in the file follows from the lengths:
    per batch it sends the first record's offset and each frame's time, wire length and the start
    and end of its bytes from that offset (a batch spans far less than the 4 GiB 'I' can say)."""
    signals.ignore_stop()             # the importing process decides when to stop
    importer_end.close()              # else a forked copy keeps the pipe open after the importer quits
    capture = None
    try:
        capture = CaptureFile(path)
        time_of, wire_len_of, data_of = itemgetter(0), itemgetter(1), itemgetter(2)
        add_header = _RECORD_HEADER.__add__
        offset, known = _PCAP_HEADER, 0
        for index, frames in capture.batches():
            if not frames:
                continue
            if len(capture.interfaces) != known:
                known = len(capture.interfaces)
                conn.send(("interfaces", [(i.name, i.linktype) for i in capture.interfaces]))
            sizes = array("I", map(len, map(data_of, frames)))
            ends = array("I", accumulate(map(add_header, sizes)))     # from `offset`, headers included
            starts = array("I", map(sub, ends, sizes))
            conn.send(("batch", index, offset, array("d", map(time_of, frames)),
                       array("I", map(wire_len_of, frames)), starts, ends))
            offset += ends[-1]
        conn.send(("end", capture.frames, capture.clamped, capture.damage,
                   [(i.name, i.linktype) for i in capture.interfaces]))
    except CaptureError as e:
        _send(conn, ("error", str(e)))
    except (BrokenPipeError, ConnectionResetError):
        pass                          # the importing process stopped reading
    except BaseException as e:        # a bug: reported by the importing process
        _send(conn, ("failed", repr(e)))
    finally:
        if capture is not None:
            capture.close()
        conn.close()


def _read_at(f, offset, size):
    """`size` bytes from `offset` of an unbuffered file, fewer only at its end."""
    f.seek(offset)
    chunk = f.read(size)
    while len(chunk) < size:        # a short read before the end is allowed, though rare on files
        more = f.read(size - len(chunk))
        if not more:
            break
        chunk += more
    return chunk


def _send(conn, message):
    try:
        conn.send(message)
    except OSError:
        pass
