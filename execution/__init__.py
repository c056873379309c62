"""qsplit execution (optional extra, torch): run a plan for real and measure it.

packing.py   b-bit codes to bytes and back (a 3-bit weight takes 3 bits)
frames.py    the wire format: fixed 64-byte header, CRC32, bounded reads
codec.py     head tensors and cut tensors to frames at a plan's widths
models.py    digits CNN and ResNet-18 as units, checked against their profiles
server.py    the edge server (asyncio): plans, ships the head, runs the tail
device.py    the device: unpacks and runs the head, sends the cut tensor
pacing.py    sender-side token bucket where no shaped link can be made
link.py      two network namespaces, a veth pair, tbf on each side, a trace player
report.py    predicted (system.cost) against measured figures
"""
