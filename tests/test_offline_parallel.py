"""The two-process import of a plain pcap (capture/offline.py) counts exactly what the
one-process import counts: same rollups, same result, on whole, cut and damaged files."""
import pytest

from bench import gen_capture
from capture.flows import FlowTable
from capture.offline import import_file


def _import(path, parallel):
    rollups = []
    result = import_file(str(path), rollups.extend, FlowTable(), parallel=parallel)
    flows = sorted((repr(f) for r in rollups for f in r.flows))     # drain order is a set's order
    rest = [(r.bucket, r.hosts, r.interfaces, r.undecodable) for r in rollups]
    return (result.frames, result.clamped, result.damage, result.interfaces), flows, rest


@pytest.mark.parametrize("cut", [None, 1_000_003, 24 + 16 + 7, 30])
def test_reader_process_counts_what_one_process_counts(tmp_path, cut):
    path = tmp_path / "mixed.pcap"
    stats = gen_capture.generate(str(path), packets=20_000, flows=500, seconds=150.0, seed=7)
    if cut:                                   # a file ending inside a record or its header
        data = path.read_bytes()[:cut]
        path.write_bytes(data)
    one = _import(path, parallel=False)
    two = _import(path, parallel=True)
    assert two == one
    if cut is None:
        assert one[0] == (stats["frames"], 0, None, [("mixed.pcap", 1)])
    else:
        assert one[0][2] is not None          # the damage is reported, by both


def test_corrupt_record_header_stops_both_alike(tmp_path):
    path = tmp_path / "corrupt.pcap"
    gen_capture.generate(str(path), packets=3_000, flows=50, seconds=90.0)
    data = bytearray(path.read_bytes())
    data[24 + 8:24 + 12] = (10 ** 9).to_bytes(4, "little")   # first record claims 1 GB captured
    path.write_bytes(bytes(data))
    assert _import(path, parallel=True) == _import(path, parallel=False)
