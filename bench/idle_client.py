"""Opens N TLS connections to 127.0.0.1:PORT, sends one request on each and reads the answer (a 401:
no token), then holds them open and silent for SECONDS: idle keep-alive connections as a browser or
SDK leaves them. PROTO is http/1.1 (default) or h2; HTTP/2 is spoken by hand (a preface, SETTINGS,
one HEADERS frame), which is all an idle browser connection does. Used by bench/idle.sh.

    idle_client.py PORT N SECONDS [PROTO]"""
import asyncio, ssl, struct, sys
port, n, hold = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
proto = sys.argv[4] if len(sys.argv) > 4 else "http/1.1"
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols([proto])
conns, kept = [], 0
REQUEST = b"GET /api/v2/tickets.json HTTP/1.1\r\nHost: localhost\r\n\r\n"

def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload

# HPACK, static table only: :method GET, :scheme https, :path /, :authority localhost (literal).
H2_GET = bytes([0x82, 0x87, 0x84, 0x41, 9]) + b"localhost"
H2_OPEN = (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(0x4, 0, 0)   # empty SETTINGS
           + frame(0x1, 0x5, 1, H2_GET))                          # HEADERS, END_STREAM|END_HEADERS

async def http1(r, w):
    w.write(REQUEST)
    head = await r.readuntil(b"\r\n\r\n")
    length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:"))
    await r.readexactly(length)
    return b"connection: close" not in head.lower()

async def h2(r, w):
    w.write(H2_OPEN)
    while True:  # until stream 1 ends; the server's SETTINGS are acknowledged on the way
        head = await r.readexactly(9)
        length, kind, flags = int.from_bytes(head[:3], "big"), head[3], head[4]
        stream = int.from_bytes(head[5:], "big") & 0x7FFFFFFF
        await r.readexactly(length)
        if kind == 0x4 and not flags & 0x1:
            w.write(frame(0x4, 0x1, 0))
        if kind == 0x7:  # GOAWAY
            return False
        if stream == 1 and flags & 0x1 and kind in (0x0, 0x1):
            return True

async def main():
    global kept
    sem = asyncio.Semaphore(200)
    async def one():
        global kept
        async with sem:
            r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
            alive = await (h2(r, w) if proto == "h2" else http1(r, w))
            conns.append(w)
            kept += alive
    await asyncio.gather(*[one() for _ in range(n)], return_exceptions=True)
    print("open", len(conns), "kept alive", kept, flush=True)
    await asyncio.sleep(hold)
asyncio.run(main())
