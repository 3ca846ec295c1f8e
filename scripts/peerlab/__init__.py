"""The two-NAT peer lab of scripts/natlab (see lab.py for the topology)."""
