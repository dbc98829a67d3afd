"""A DNS server on 127.0.0.1 for the tests, answering from a JSON file it reads at
every query, so a test changes the answers by rewriting the file.

    python3 dns_server.py RECORDS.json QUERIES.log

RECORDS.json: {"ttl": 1, "names": {"blue.test": ["127.0.0.2", "127.0.0.3"]}}.
A name in "names" gets its IPv4 addresses (A) and IPv6 ones (AAAA); a name not in it
gets NXDOMAIN. Each query is appended to QUERIES.log as "NAME TYPE". The server
listens on UDP and TCP on one port it picks, prints "port N" on stdout, and runs
until killed or until its stdin closes (the test that started it is gone).
"""

import ipaddress
import json
import sys
import threading

from dnslib import AAAA, QTYPE, RCODE, RR, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer


class FileResolver(BaseResolver):
    def __init__(self, records, queries):
        self.records = records
        self.queries = queries
        self.lock = threading.Lock()

    def resolve(self, request, handler):
        name = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        with self.lock:
            with open(self.queries, "a") as log:
                log.write(f"{name} {qtype}\n")
            with open(self.records) as f:
                config = json.load(f)
        reply = request.reply()
        names = {k.lower(): v for k, v in config.get("names", {}).items()}
        if name not in names:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        ttl = int(config.get("ttl", 1))
        for address in names[name]:
            ip = ipaddress.ip_address(address)
            if ip.version == 4 and qtype == "A":
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(address), ttl=ttl))
            elif ip.version == 6 and qtype == "AAAA":
                reply.add_answer(RR(request.q.qname, QTYPE.AAAA, rdata=AAAA(address), ttl=ttl))
        return reply


class Quiet(DNSLogger):
    def __init__(self):
        super().__init__(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)


def main():
    records, queries = sys.argv[1], sys.argv[2]
    resolver = FileResolver(records, queries)
    # A UDP port the system picks, and TCP on the same number: another process may
    # hold that TCP port, so try again with another.
    for _ in range(100):
        udp = DNSServer(resolver, address="127.0.0.1", port=0, logger=Quiet())
        port = udp.server.server_address[1]
        try:
            tcp = DNSServer(resolver, address="127.0.0.1", port=port, tcp=True, logger=Quiet())
            break
        except OSError:
            udp.server.server_close()
    else:
        sys.exit("no port free for both UDP and TCP")
    udp.start_thread()
    tcp.start_thread()
    print(f"port {port}", flush=True)
    # Until the test closes our stdin (or dies): no server outlives its test.
    sys.stdin.read()


if __name__ == "__main__":
    main()
