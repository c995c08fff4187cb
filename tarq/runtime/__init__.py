"""Process-level helpers: telemetry off (``telemetry``), peak memory of a block of work
(``resources``), fault drills (``drills``) and how data steps map their pieces (``parallel``).

They import nothing of tarq.
"""
