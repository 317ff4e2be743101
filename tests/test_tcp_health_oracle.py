"""tshark confirms the hand-made scenarios' numbers (tests/tcp_scenarios.py), and the analyzer
agrees with tshark flow by flow on them and on lossy traffic recorded through the user-space
link (tests/tcp_link.py)."""
import pytest

from bench import tcp_compare
from tests.common import needs_root, needs_tool
from tests.tcp_scenarios import SCENARIOS, SYN_FLOOD, pcap

pytestmark = pytest.mark.system

CLIENT, SERVER = "10.0.0.1", "10.0.0.2"


@needs_tool("tshark")
def test_tshark_gives_the_scenarios_numbers(tmp_path):
    flows = {name: segments for name, (segments, _) in SCENARIOS.items()} | SYN_FLOOD
    path = tmp_path / "scenarios.pcap"
    pcap(path, flows)
    theirs = tcp_compare.tshark_flows(path)
    ours = tcp_compare.direct_flows(path)
    for port, name in enumerate(sorted(flows), start=20000):
        key = tcp_compare._key(CLIENT, port, SERVER, 80)
        expected = SCENARIOS[name][1] if name in SCENARIOS else dict(rtt_ms=None, retransmits=0, out_of_order=0,
                                                                     zero_windows=0, resets=0)
        for got in (theirs[key], ours[key]):
            rtt = got["rtt_ms"]
            assert (rtt is None) == (expected["rtt_ms"] is None), name
            if rtt is not None:
                assert rtt == pytest.approx(expected["rtt_ms"], abs=0.001), name   # ns pcap, float times
            assert {k: v for k, v in got.items() if k != "rtt_ms"} == \
                {k: v for k, v in expected.items() if k != "rtt_ms"}, name


@needs_root
@needs_tool("tshark")
@needs_tool("tcpdump")
@pytest.mark.slow
def test_lossy_link_against_tshark(tmp_path):
    """Reordering, loss and duplication through the emulated link: every flow's numbers as tshark's."""
    path = tcp_compare.make_captures(tmp_path, connections=4, size=200_000,
                                     which=("reorder", "loss5_duplicate"))
    for p in path:
        fig, differ = tcp_compare.compare(tcp_compare.direct_flows(p), tcp_compare.tshark_flows(p))
        assert fig["tshark_retransmits"] > 0
        assert differ == []
