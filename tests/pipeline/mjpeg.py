"""A real MJPEG stream on 127.0.0.1 (what IP cameras send), for the video tests.

Connection k gets the JPEGs of ``connections[k]`` at 25 fps and is then dropped; later connections
get 503 (the camera is gone). The tests build the lists: the next frames of one clip per connection,
or the same frames at another resolution after a drop.
"""
from __future__ import annotations

import http.server
import threading
import time

import cv2
import numpy as np


def jpeg(frame: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", frame)[1].tobytes()


class MjpegServer:
    def __init__(self, connections: list[list[bytes]]):
        self.connections = connections
        self.requests = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                server.requests += 1
                if server.requests > len(server.connections):
                    self.send_error(503)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    for data in server.connections[server.requests - 1]:  # bounded: then the connection drops
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                         % len(data) + data + b"\r\n")
                        time.sleep(0.04)
                except OSError:
                    pass
                self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/stream.mjpg"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "MjpegServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
