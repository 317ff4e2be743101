"""Import of capture files: file frames -> flow table -> a rollup sink (the storage writer)."""
from dataclasses import dataclass, field

from capture.capfile import CaptureFile
from capture.flows import FlowTable


@dataclass
class ImportResult:
    path: str
    frames: int = 0
    clamped: int = 0
    damage: str | None = None
    interfaces: list = field(default_factory=list)


def import_file(path, sink, table: FlowTable) -> ImportResult:
    """Counts every frame of one file into `table`, handing closed-bucket rollups to `sink` as
    they come and the rest when the file ends. Raises CaptureError if the file is unreadable."""
    capture = CaptureFile(path)
    try:
        interfaces = capture.interfaces
        for index, frames in capture.batches():
            iface = interfaces[index]
            table.ingest(iface.name, iface.linktype, frames)
            ready = table.take()
            if ready:
                sink(ready)
    finally:
        capture.close()
    sink(table.take() + [table.drain(0.0, close_all=True)])
    return ImportResult(path, capture.frames, capture.clamped, capture.damage,
                        [(i.name, i.linktype) for i in capture.interfaces])
