"""A TCP peer that speaks just enough of the PostgreSQL protocol to let
libpq connect, then answers a chosen number of statements and ignores the
rest: a server that hangs mid-poll."""

import socket
import struct
import threading


def _recv_exact(conn, n):
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("peer closed")
        buf += chunk
    return buf


def _msg(kind, payload=b""):
    return kind + struct.pack("!i", len(payload) + 4) + payload


def _rows(values):
    """RowDescription, one DataRow of text columns, CommandComplete."""
    desc = struct.pack("!h", len(values))
    row = struct.pack("!h", len(values))
    for i, v in enumerate(values):
        desc += f"c{i}".encode() + b"\0" + struct.pack("!ihihih", 0, 0, 25, -1, -1, 0)
        row += struct.pack("!i", len(v)) + v.encode()
    return _msg(b"T", desc) + _msg(b"D", row) + _msg(b"C", b"SELECT 1\0")


# pgsweeper's set-up statement: statement_timeout, plan_cache_mode, then who
# it is there (backend_start, cluster, role, pg_read_all_stats, pg_signal_backend).
SETUP_ROW = ["5s", "force_generic_plan", "1700000000000000", "1700000000000000:5432", "pgsweeper", "t", "t"]


class FakeServer:
    """answer: how many statements (Sync-terminated batches) to answer before
    going silent: pgsweeper sends its set-up statement, then prepares its
    snapshot, then polls; answer=2 hangs on the first poll. None answers
    none and hangs right after the handshake."""

    def __init__(self, answer=1):
        self.answer = answer or 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.statements = 0          # batches received
        self.connections = 0
        self.received = threading.Condition()
        self._conns = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def conninfo(self, user="pgsweeper", dbname="postgres"):
        return f"host=127.0.0.1 port={self.port} dbname={dbname} user={user} sslmode=disable"

    def _accept(self):
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            while True:
                length, code = struct.unpack("!ii", _recv_exact(conn, 8))
                if code in (80877103, 80877104):     # SSLRequest, GSSENCRequest
                    conn.sendall(b"N")
                    continue
                _recv_exact(conn, length - 8)        # startup parameters
                break
            out = _msg(b"R", struct.pack("!i", 0))   # AuthenticationOk
            for k, v in (("server_version", "15.0"), ("client_encoding", "UTF8"),
                         ("standard_conforming_strings", "on"), ("integer_datetimes", "on")):
                out += _msg(b"S", k.encode() + b"\0" + v.encode() + b"\0")
            out += _msg(b"K", struct.pack("!ii", 4242, 1)) + _msg(b"Z", b"I")
            conn.sendall(out)
            with self.received:
                self.connections += 1
                self.received.notify_all()
            answered = 0
            batch = b""
            while True:
                kind = _recv_exact(conn, 1)
                (length,) = struct.unpack("!i", _recv_exact(conn, 4))
                _recv_exact(conn, length - 4)
                if kind == b"X":
                    return
                if kind != b"S":                     # wait for the end of the batch
                    batch += kind
                    continue
                with self.received:
                    self.statements += 1
                    self.received.notify_all()
                if answered < self.answer:
                    answered += 1
                    # Parse alone (a PREPARE) or Parse/Bind/Describe/Execute of a
                    # statement without rows ("SET ...")
                    out = _msg(b"1") if b"P" in batch else b""
                    if b"E" in batch and answered == 1:      # the set-up statement
                        out += _msg(b"2") + _rows(SETUP_ROW)
                    elif b"E" in batch:
                        out += _msg(b"2") + _msg(b"n") + _msg(b"C", b"SET\0")
                    conn.sendall(out + _msg(b"Z", b"I"))
                batch = b""
                # else: silence
        except (ConnectionError, OSError):
            return

    def wait_statements(self, n, timeout=10):
        with self.received:
            return self.received.wait_for(lambda: self.statements >= n, timeout)

    def close(self):
        self._stop = True
        self.sock.close()
        for c in self._conns:
            try:
                c.close()
            except OSError:
                pass
