"""Reverse DNS (setting reverse_dns): lookups on a thread of their own, bounded and paced, with a
resolver the test supplies (no network, no dependence on the host's resolver)."""
from common import wait_for
from names.label import Labeller, names_rollup
from names.rdns import PENDING, ReverseNames
from records import FlowDelta, Rollup
from settings import Settings


def test_answers_come_back_printable_lower_case_and_each_address_is_asked_once():
    asked = []

    def resolve(address):
        asked.append(address)
        return {"192.0.2.1": "Host-1.Example.", "192.0.2.2": "=cmd|\x1b[31m.example"}.get(address)

    rdns = ReverseNames(resolve, rate=1000.0)
    try:
        rdns.offer(["192.0.2.1", "192.0.2.2", "192.0.2.3"])
        got = {}
        wait_for(lambda: got.update(rdns.take()) or len(asked) == 3 and len(got) == 2, 10, "three lookups")
        assert got == {"192.0.2.1": "host-1.example", "192.0.2.2": "=cmd|\\x1b[31m.example"}
        rdns.offer(["192.0.2.1", "192.0.2.3"])            # asked lately, answered or not: not again
        rdns.close()
        assert asked == ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
    finally:
        rdns.close()


def test_the_queue_is_bounded_and_a_slow_resolver_never_blocks_the_offer():
    release = []

    def slow(address):
        wait_for(lambda: release, 10, "the test to release the resolver")
        return None

    rdns = ReverseNames(slow, rate=1000.0)
    try:
        rdns.offer([f"10.0.{i // 256}.{i % 256}" for i in range(PENDING + 500)])   # returns at once
        assert rdns._todo.qsize() <= PENDING
    finally:
        release.append(True)
        rdns.close()


def test_the_labeller_offers_only_addresses_without_a_name_and_learns_reverse_names():
    labeller = Labeller.from_settings(Settings())
    flow = FlowDelta(6, "10.0.0.1", 40000, "192.0.2.9", 443, 100.0, 101.0, 1, 1, 1, 1, 0, "eth0", False)
    rollups = [Rollup(60, [flow], {}, {}, {}, names={"10.0.0.1": ("laptop.local", "mdns", 100.0)})]
    labeller.label(rollups)
    assert labeller.unnamed_addresses(rollups, 120.0) == ["192.0.2.9"]
    labeller.name_map.learn("192.0.2.9", "edge.example.net", "rdns", 120.0)
    assert labeller.unnamed_addresses(rollups, 130.0) == []
    assert names_rollup(125.0, {"192.0.2.9": ("edge.example.net", "rdns", 120.0)}).bucket == 120
