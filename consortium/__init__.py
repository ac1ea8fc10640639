"""The consortium every part shares: who the members are and where their files, ports and processes live.

Below everything but the Fabric client: `network`, `records`, `gateway` and `workers` read it; it reads none of them.
"""
