"""The link's measured rate: a plain bulk transfer over TCP, no HTTP, no files, no compression.

    python3 link_probe.py serve HOST          (inside the emulator's namespace) prints its port, then
                                              serves: `d` + size sends size bytes; `u` + size reads size
                                              bytes and answers one byte when all have arrived
    python3 link_probe.py measure HOST PORT MB   prints {"down": MB/s, "up": MB/s} as JSON

Down is server to client (what an export moves), up is client to server (what an import moves). The
buffer is sent and received with sendall/recv_into, so Python's own cost is a few system calls per MiB.
"""
import json
import socket
import struct
import sys
import time

CHUNK = 1 << 22


def recv_exact(conn, n, buf):
    view = memoryview(buf)
    left = n
    while left:
        got = conn.recv_into(view[: min(left, len(buf))])
        if not got:
            raise ConnectionError(f"peer closed with {left} bytes to go")
        left -= got


def serve(host):
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, 0))
    server.listen(4)
    print(server.getsockname()[1], flush=True)
    buf = bytearray(CHUNK)
    while True:
        conn, _ = server.accept()
        with conn:
            head = bytearray(9)
            recv_exact(conn, 9, head)
            mode, size = head[:1], struct.unpack("!Q", head[1:])[0]
            if mode == b"d":
                left = size
                while left:
                    n = min(left, CHUNK)
                    conn.sendall(memoryview(buf)[:n])
                    left -= n
            elif mode == b"u":
                recv_exact(conn, size, buf)
                conn.sendall(b"k")
            elif mode == b"q":
                return


def one(host, port, mode, size):
    buf = bytearray(CHUNK)
    with socket.create_connection((host, port)) as conn:
        started = time.monotonic()
        conn.sendall(mode + struct.pack("!Q", size))
        if mode == b"d":
            recv_exact(conn, size, buf)
        else:
            left = size
            while left:
                n = min(left, CHUNK)
                conn.sendall(memoryview(buf)[:n])
                left -= n
            recv_exact(conn, 1, buf)
        return size / (time.monotonic() - started) / 1e6


def measure(host, port, mb):
    size = int(mb * 1e6)
    # The first transfer of each direction warms TCP's window; the best of the next two counts.
    result = {}
    for name, mode in (("down", b"d"), ("up", b"u")):
        one(host, port, mode, min(size, 16_000_000))
        result[name] = max(one(host, port, mode, size) for _ in range(2))
    with socket.create_connection((host, port)) as conn:
        conn.sendall(b"q" + struct.pack("!Q", 0))
    print(json.dumps(result))


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2])
    else:
        measure(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
