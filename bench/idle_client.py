"""Opens N idle TLS connections (ALPN http/1.1, no request) to 127.0.0.1:PORT and holds them for
SECONDS. Used by bench/idle.sh to measure the proxy's memory per idle connection."""
import asyncio, ssl, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(["http/1.1"])
conns = []
async def main():
    sem = asyncio.Semaphore(200)
    async def one():
        async with sem:
            r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
            conns.append(w)
    await asyncio.gather(*[one() for _ in range(n)], return_exceptions=True)
    print("open", len(conns), flush=True)
    await asyncio.sleep(float(sys.argv[3]))
asyncio.run(main())
