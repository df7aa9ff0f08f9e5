"""A second, independent WebSocket client for the conformance suite:
Debian's python3-websockets (asyncio API, 10.x and later), plus urllib.

usage: ws_client.py WS_URL HTTP_URL LIMIT

Echoes text and binary messages of 0 B to 1 MiB on WS_URL (an /echo), closes
with every valid close code and checks the server echoes it, then POSTs a
body over LIMIT to HTTP_URL with urllib (which writes the whole body before
reading) and checks it reads a 413, not a reset. Prints ALL OK at the end;
any failure raises (non-zero exit).
"""
import asyncio
import os
import sys
import urllib.error
import urllib.request

import websockets

WS_URL, HTTP_URL, LIMIT = sys.argv[1], sys.argv[2], int(sys.argv[3])
SIZES = [0, 1, 125, 126, 127, 65535, 65536, 65537, 100000, 1 << 20]
CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999]


async def echo():
    async with websockets.connect(WS_URL, max_size=4 << 20) as ws:
        for n in SIZES:
            t = ("é" * (n // 2) + "a" * (n % 2))
            assert len(t.encode()) == n
            await ws.send(t)
            got = await asyncio.wait_for(ws.recv(), 30)
            assert got == t, "text of %d bytes: got %d chars back" % (n, len(got))
            b = os.urandom(n)
            await ws.send(b)
            got = await asyncio.wait_for(ws.recv(), 30)
            assert got == b, "binary of %d bytes: got %d bytes back" % (n, len(got))
            print("echo", n, "ok")
        await ws.close(1000, "done")
        assert ws.close_code == 1000, ws.close_code


async def close_codes():
    for code in CODES:
        ws = await websockets.connect(WS_URL)
        await ws.send("before close %d" % code)
        assert await asyncio.wait_for(ws.recv(), 10) == "before close %d" % code
        await asyncio.wait_for(ws.close(code, "reason %d" % code), 10)
        # The server's close frame echoes the code.
        assert ws.close_code == code, "close %d: server answered %s" % (code, ws.close_code)
        print("close", code, "ok")


def too_large():
    body = b"x" * (LIMIT + 1)
    req = urllib.request.Request(HTTP_URL, data=body, method="POST")
    try:
        urllib.request.urlopen(req, timeout=30)
    except urllib.error.HTTPError as e:
        assert e.code == 413, "POST over the limit: got %d" % e.code
        print("urllib 413 ok")
        return
    raise AssertionError("POST over the limit was served")


asyncio.run(echo())
asyncio.run(close_codes())
too_large()
print("ALL OK")
