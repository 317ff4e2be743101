"""The flow table's reading of first payloads (capture/peek.py): apps, server names and host names
from a flow's first frames, and the frames of flows left unnamed, for Wireshark to try
(names/tshark.py). FlowTable (capture/flows.py) has these as methods; they touch its payload
state only: _sample_slots, _samples, _names, _problems, _linktype."""
from capture.peek import Peek
from records import Sample, ip_text

MAX_NAMES = 65536             # host names learnt per bucket (a flood of DNS answers cannot grow it)
SAMPLE_FLOWS = 256            # flows whose first frames are kept at once (capture/peek.py SAMPLE_FRAMES),
                              # for Wireshark to name if we cannot
_WANT = object()              # a TCP/UDP flow whose first payload has not come yet (no Peek made)


class Naming:
    def _peek(self, c, data, start, end, ts):
        """One payload of a flow still being read (capture/peek.py); the labels go to the flow."""
        if start >= end:
            return
        flow = c[4]
        peek = c[5]
        if peek is _WANT:
            k = flow.key
            peek = flow.orig[5] = flow.resp[5] = Peek(k[0], k[2], k[4])
            if self._sample_slots:
                self._sample_slots -= 1
                peek.frames = []
        more = peek.see(c is flow.orig, data[start:end], ts, self._learn, data)
        flow.app, flow.server_name = peek.app, peek.server_name
        if peek.problem and not flow.problem:
            flow.problem = peek.problem
            self._problems[peek.problem] = self._problems.get(peek.problem, 0) + 1
        if not more:
            self._end_peek(flow, peek)

    def _end_peek(self, flow, peek):
        """The flow is read no more; unnamed, its first frames go out for Wireshark to try."""
        flow.orig[5] = flow.resp[5] = None
        if peek.frames is None:
            return
        self._sample_slots += 1
        if not flow.app and peek.frames:
            if len(self._samples) < SAMPLE_FLOWS:
                proto, a, ap, b, bp = flow.key
                self._samples.append(Sample((proto, ip_text(a), ap, ip_text(b), bp), flow.first_seen,
                                            self._linktype, peek.frames))
            else:
                self._problems["sample_over_bucket_limit"] = self._problems.get("sample_over_bucket_limit", 0) + 1

    def _learn(self, address, name, source, ts):
        """A host name seen on the wire; the latest per address in this bucket is kept."""
        names = self._names
        if len(names) >= MAX_NAMES and address not in names:
            self._problems["names_over_bucket_limit"] = self._problems.get("names_over_bucket_limit", 0) + 1
            return
        names[address] = (name, source, ts)
