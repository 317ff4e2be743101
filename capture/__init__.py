"""Packet sources, the frame decoder and the flow table."""
