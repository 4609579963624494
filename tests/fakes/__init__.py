"""Vendor fakes: real HTTP servers on loopback that answer with the vendors' documented shapes."""
