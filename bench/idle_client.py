"""Opens N TLS connections (ALPN http/1.1) to 127.0.0.1:PORT, sends one request on each and reads
the answer (a 401: no token), then holds them open and silent for SECONDS: idle keep-alive
connections as a browser or SDK leaves them. Used by bench/idle.sh."""
import asyncio, ssl, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(["http/1.1"])
conns, kept = [], 0
REQUEST = b"GET /api/v2/tickets.json HTTP/1.1\r\nHost: localhost\r\n\r\n"
async def main():
    global kept
    sem = asyncio.Semaphore(200)
    async def one():
        global kept
        async with sem:
            r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
            w.write(REQUEST)
            head = await r.readuntil(b"\r\n\r\n")
            length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:"))
            await r.readexactly(length)
            conns.append(w)
            kept += b"connection: close" not in head.lower()
    await asyncio.gather(*[one() for _ in range(n)], return_exceptions=True)
    print("open", len(conns), "kept alive", kept, flush=True)
    await asyncio.sleep(float(sys.argv[3]))
asyncio.run(main())
