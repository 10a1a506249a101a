"""The server's upload endpoint, limited to the data file types the page asks for.

``gr.File(file_types=...)`` only filters the browser's file picker; anyone can post any file to
gradio's ``/upload`` route. :class:`DataUploadsOnly` is an ASGI middleware (given to gradio's FastAPI
app through ``launch(app_kwargs=...)``, see :func:`app.launch_options`) that reads an upload's
multipart body (already bounded by gradio's ``max_file_size``), and refuses it with HTTP 415 when a
part's file name does not end in one of :data:`DATA_SUFFIXES`; other requests pass untouched.
"""

from __future__ import annotations

import re

#: What the page's file widgets accept (training and validation pairs).
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
_FILENAME = re.compile(rb'filename="([^"\r\n]*)"')


class DataUploadsOnly:
    """ASGI middleware: POSTs to a path ending in ``/upload`` must carry only files named
    ``*.jsonl``, ``*.json``, ``*.csv`` or ``*.parquet`` (case-insensitive), else HTTP 415 with a
    one-line message. ``max_bytes``: a body larger than this is refused with 413 before it is read
    further (gradio has the same limit; this keeps the buffer bounded)."""

    def __init__(self, app, max_bytes: int = 50 * 2**20 + 2**20, suffixes: tuple[str, ...] = DATA_SUFFIXES):
        self.app, self.max_bytes, self.suffixes = app, max_bytes, suffixes

    async def __call__(self, scope, receive, send):
        if scope.get("type") != "http" or scope.get("method") != "POST" or not scope.get("path", "").endswith("/upload"):
            await self.app(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                await _refuse(send, 413, "file too large for this server's upload limit")
                return
        body = b"".join(chunks)
        names = [m.decode("utf-8", "replace") for m in _FILENAME.findall(body)]
        bad = [n for n in names if not n.lower().endswith(self.suffixes)]
        if bad:
            await _refuse(send, 415, f"only {', '.join(self.suffixes)} files can be uploaded here")
            return
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _refuse(send, status: int, text: str) -> None:
    body = text.encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
