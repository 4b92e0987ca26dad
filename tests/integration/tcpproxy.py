"""A TCP proxy between pgsweeper and a real PostgreSQL that can hold back or
cut the server's answers on demand.

The proxy forwards bytes both ways. When the client sends bytes containing
`trigger` (e.g. a fragment of pgsweeper's action statement), the proxy
forwards them to the server, so the server really executes the statement,
and then, depending on `mode`:

- "delay": holds the server's answer for `seconds`, then lets it through;
- "stall": holds the server's answer until release() is called;
- "cut":   waits `seconds` (the server runs the statement meanwhile), then
           closes both sides of that connection: the answer is lost;
- "blackhole": from then on nothing passes either way (not even libpq's
           Terminate message when the client gives up) and the server's side
           stays open, as in a network partition: the backend lives on, idle.

The first `skip` matches are let through; only the next one triggers
(once=True), so a reconnect works normally. Every occurrence counts, also
several in one read (pgsweeper pipelines two action statements).
`triggered` is a threading.Event set at the moment of the match."""

import socket
import threading
import time


class TcpProxy:
    def __init__(self, target_port, trigger=None, mode="delay", seconds=0.5, once=True,
                 target_host="127.0.0.1", skip=0):
        self.target = (target_host, target_port)
        self.trigger = trigger
        self.mode = mode
        self.seconds = seconds
        self.once = once
        self.skip = skip
        self.triggered = threading.Event()
        self.triggered_at = None
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._socks = []
        self._closed = False
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def conninfo(self, user="pgsweeper", dbname="postgres"):
        return f"host=127.0.0.1 port={self.port} dbname={dbname} user={user} sslmode=disable"

    def release(self):
        self._released.set()

    def close(self):
        self._closed = True
        self._released.set()
        for s in [self.listener] + self._socks:
            try:
                s.close()
            except OSError:
                pass

    # -- internals -----------------------------------------------------------

    def _accept(self):
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=10)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._socks += [client, server]
            hold = {"until": None, "cut": False}
            threading.Thread(target=self._upstream, args=(client, server, hold), daemon=True).start()
            threading.Thread(target=self._downstream, args=(server, client, hold), daemon=True).start()

    def _fire(self, hold, client, server):
        with self._lock:
            if self.triggered.is_set() and self.once:
                return False
            if self.skip > 0:
                self.skip -= 1
                return False
            self.triggered_at = time.monotonic()
            self.triggered.set()
        if self.mode == "delay":
            hold["until"] = time.monotonic() + self.seconds
        elif self.mode == "stall":
            hold["until"] = float("inf")
        elif self.mode == "blackhole":
            hold["until"] = float("inf")
            hold["cut"] = True
        elif self.mode == "cut":
            hold["until"] = float("inf")
            hold["cut"] = True

            def cut():
                time.sleep(self.seconds)
                for s in (client, server):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    s.close()
            threading.Thread(target=cut, daemon=True).start()
        return True

    def _upstream(self, client, server, hold):
        window = b""
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    break
                window = (window + data)[-(len(self.trigger or b"") + 65536):]
                if hold["until"] and self.mode == "blackhole":
                    continue
                if self.trigger and self.trigger in window and not hold["until"]:
                    # each occurrence counts, also several in one read (statements pipelined)
                    for _ in range(window.count(self.trigger)):
                        if self._fire(hold, client, server):
                            break
                    window = window[window.rfind(self.trigger) + len(self.trigger):]
                server.sendall(data)
        except OSError:
            pass
        finally:
            if not hold["cut"]:
                try:
                    server.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

    def _downstream(self, server, client, hold):
        try:
            while True:
                data = server.recv(65536)
                if not data:
                    break
                while hold["until"] and time.monotonic() < hold["until"] and not self._released.is_set():
                    time.sleep(0.005)
                if hold["cut"]:
                    return
                hold["until"] = None if hold["until"] and time.monotonic() >= hold["until"] else hold["until"]
                client.sendall(data)
        except OSError:
            pass
        finally:
            if not hold["cut"]:
                try:
                    client.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
