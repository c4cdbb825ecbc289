"""URLs every outbound feature must refuse without touching the network.

Shared by the guard's own suite (tests/ssrf) and the per-feature suite (tests/hardening), so a
new spelling added here is tried against every entry point.
"""

from __future__ import annotations

REFUSED_URLS = [
    # loopback, in every spelling
    "https://127.0.0.1/",
    "https://127.1/",
    "https://2130706433/",  # decimal
    "https://0x7f000001/",  # hex, one number
    "https://0x7f.0.0.1/",  # hex label
    "https://0177.0.0.1/",  # octal label
    "https://0177.1/",  # octal, short
    "https://127.000.000.001/",  # zero padded octal
    "https://127.0.0.1./",  # trailing dot
    "https://\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11/",  # fullwidth digits
    "https://localhost/",
    "https://LOCALHOST./",
    "https://api.localhost/",
    "https://[::1]/",
    "https://[0:0:0:0:0:0:0:1]/",
    # unspecified
    "https://0.0.0.0/",
    "https://0/",
    "https://[::]/",
    # RFC 1918
    "https://10.0.0.1/",
    "https://172.16.5.4/",
    "https://192.168.1.1/",
    "https://0xc0a80101/",  # 192.168.1.1 in hex
    "https://3232235777/",  # 192.168.1.1 in decimal
    # CGNAT and link-local
    "https://100.64.0.1/",
    "https://169.254.1.1/",
    # cloud metadata
    "https://169.254.169.254/latest/meta-data/",
    "https://metadata.google.internal/computeMetadata/v1/",
    "https://100.100.100.200/latest/meta-data/",  # Alibaba
    "https://168.63.129.16/",  # Azure WireServer
    "https://192.0.0.192/",  # Oracle
    "https://[fd00:ec2::254]/",  # AWS IPv6 metadata
    "https://instance-data/",
    # multicast, reserved, broadcast, documentation
    "https://224.0.0.1/",
    "https://239.255.255.250/",
    "https://240.0.0.1/",
    "https://255.255.255.255/",
    "https://198.18.0.1/",
    "https://192.0.2.10/",
    # IPv6 private ranges
    "https://[fc00::1]/",
    "https://[fd12:3456::1]/",
    "https://[fe80::1]/",
    "https://[fec0::1]/",
    "https://[ff02::1]/",
    # IPv4 hidden in IPv6
    "https://[::ffff:127.0.0.1]/",  # mapped
    "https://[::ffff:7f00:1]/",  # mapped, hex
    "https://[::ffff:169.254.169.254]/",
    "https://[::127.0.0.1]/",  # compatible
    "https://[64:ff9b::7f00:1]/",  # NAT64 -> 127.0.0.1
    "https://[64:ff9b::a9fe:a9fe]/",  # NAT64 -> 169.254.169.254
    "https://[2002:7f00:1::]/",  # 6to4 -> 127.0.0.1
    "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",  # Teredo
    # userinfo tricks and parser confusion
    "https://user:pass@example.com/",
    "https://example.com@127.0.0.1/",
    "https://127.0.0.1#@example.com/",
    "https://example.com\\@127.0.0.1/",
    "https://127.0.0.1%2f@example.com/",
    "https://%31%32%37.0.0.1/",
    "https://[fe80::1%25eth0]/",
    # non-http schemes and plain http to a host not on the allow-list
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_INFO",
    "ftp://example.com/",
    "dict://127.0.0.1:11211/",
    "javascript:alert(1)",
    "//example.com/",
    "http://example.com/",
    "http://93.184.216.34/",
    # malformed
    "https://1.2.3.4.5/",
    "https://256.0.0.1/",
    "https://08.0.0.1/",
    "https://example.com:99999/",
    "https:///path",
    "https://[::1/",
    "",
]
