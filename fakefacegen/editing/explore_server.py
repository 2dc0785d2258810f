"""The explorer's HTTP server: transport and security, around the routes explore.py defines.

Any web page the user visits can send requests to 127.0.0.1, so every request must name this server in its Host
header (a DNS-rebound name does not) and carry the token drawn at launch: in the printed URL (?token=) for the
page, in an X-Explore-Token header for the API. A write must also be Content-Type: application/json and, when it
has an Origin, come from this server's origin. A client gets --read-timeout seconds to send each request, and at
most MAX_THREADS connections are served at once, so slow clients cannot hold the server. The request path never
names a file: routes match exact paths, so nothing else on disk can be read.
"""
import hmac
import io
import ipaddress
import json
import math
import secrets
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from fakefacegen.cli import UserError

HOST = "127.0.0.1"  # the default: this machine only, since the page can write files in the run's folder
MAX_BODY = 64 * 1024
MAX_DRAIN = 1024 * 1024  # a larger body is refused unread
MAX_THREADS = 16  # connections served at once; the next ones wait in the listen queue
PAGES = ("/", "/index.html")
TOKEN_HEADER = "X-Explore-Token"


class BadRequest(Exception):
    """A request the page should not have sent: answered with `status` and a one-line message."""

    def __init__(self, message, status=HTTPStatus.BAD_REQUEST):
        super().__init__(message)
        self.status = status


def number(value, what, low, high):
    """A finite JSON number within [low, high], else BadRequest."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(f"{what} must be a number")
    try:
        value = float(value)  # a JSON integer may be too big for a float
    except OverflowError:
        value = math.inf
    if not math.isfinite(value) or not low <= value <= high:
        raise BadRequest(f"{what} must be from {low:g} to {high:g}, not {value:g}")
    return value


def whole_number(value, what, low, high):
    """A JSON whole number within [low, high] (3.0 counts, 2.5 does not), else BadRequest."""
    value = number(value, what, low, high)
    if not value.is_integer():
        raise BadRequest(f"{what} must be a whole number from {low} to {high}, not {value:g}")
    return int(value)


def query_fields(url, most):
    """The URL's query as {name: [values]}; more than `most` fields is a 400 (parse_qs raises ValueError)."""
    try:
        return parse_qs(url.query, max_num_fields=most)
    except ValueError:
        raise BadRequest(f"at most {most} query fields") from None


class DeadlineReader(io.RawIOBase):
    """The connection's bytes under one deadline per request rather than a timeout per recv, which a client
    sending a header line every few seconds would restart forever."""

    def __init__(self, sock, seconds):
        super().__init__()
        self.sock, self.seconds, self.deadline = sock, seconds, math.inf

    def start(self):
        self.deadline = time.monotonic() + self.seconds

    def readable(self):
        return True

    def readinto(self, buffer):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the request took over {self.seconds:g} s")
        self.sock.settimeout(left)
        try:
            return self.sock.recv_into(buffer)
        finally:
            self.sock.settimeout(self.seconds)  # the answer's writes get the full time again


class SecureHandler(BaseHTTPRequestHandler):
    """Reads each request under a deadline, checks Host, token and (for writes) content type and origin, then
    hands it to a route of the subclass: get(url), or post(url, JSON body) for a path in POST_PATHS. A route
    raises BadRequest for a 4xx; any other error is a 500 and the server keeps serving."""

    POST_PATHS = ()
    BODY_LIMITS = {}  # path -> the largest body it takes, where that is more than MAX_BODY

    server_version = "FakeFaceGenExplore/1"

    def setup(self):
        self.timeout = self.server.read_timeout  # for writes; reads get the request's deadline
        super().setup()
        self.rfile.close()  # replaced below; left open, it would keep the socket open after close()
        self.rfile = io.BufferedReader(DeadlineReader(self.connection, self.timeout))

    def handle_one_request(self):
        self.rfile.raw.start()  # the wait for the request counts too: an idle connection is closed
        super().handle_one_request()  # a TimeoutError while reading the headers closes the connection

    def do_GET(self):
        self.dispatch(lambda url, body: self.get(url))

    def do_POST(self):
        self.dispatch(self.json_request)

    def do_other(self):
        self.dispatch(self.refuse)

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_other  # OPTIONS refused: no CORS preflight succeeds

    def dispatch(self, route):
        try:
            body = self.read_body()  # first, even for a request refused: unread bytes can cost the answer
            url = self.target()
            self.check_access(url)
            route(url, body)
        except BadRequest as err:
            self.send(err.status, json.dumps({"error": str(err)}).encode(), "application/json")
        except Exception as err:  # a bug must not stop the server: report it and keep serving
            print(f"explore: {type(err).__name__}: {err}", file=sys.stderr)
            self.send(HTTPStatus.INTERNAL_SERVER_ERROR, b'{"error": "internal error"}', "application/json")

    def target(self):
        """The request's URL, which must be a path: an absolute URL could name another host than Host."""
        try:
            url = urlsplit(self.path)
        except ValueError:  # e.g. an unclosed [ taken for an IPv6 address
            url = None
        if url is None or url.scheme or url.netloc or not url.path.startswith("/"):
            raise BadRequest("the request target must be a path such as /api/info")
        return url

    def check_access(self, url):
        """This server's Host (a DNS-rebound name is another) and this launch's token, on every request."""
        hosts = self.headers.get_all("Host") or []
        if len(hosts) != 1 or hosts[0].lower() not in self.server.hosts:
            raise BadRequest(f"this server answers to Host {' or '.join(self.server.hosts)} only",
                             HTTPStatus.FORBIDDEN)
        if not self.server.token_matches(self.token_of(url)):
            raise BadRequest(f"wrong or missing token: in a browser, open the URL explore.py printed (it ends in "
                             f"?token=...); a script sends that token in an {TOKEN_HEADER} header, which every "
                             "/api/ request needs (?token= opens the page only)", HTTPStatus.FORBIDDEN)

    def token_of(self, url):
        """The page's fetches send the header; the page itself is opened from the printed URL."""
        if self.headers.get(TOKEN_HEADER) is None and url.path in PAGES:
            values = query_fields(url, 16).get("token", [])
            return values[0] if len(values) == 1 else ""
        return self.headers.get(TOKEN_HEADER, "")

    def check_write(self):
        """A write must come from the page: an HTML form or a no-cors fetch from another site can send neither
        this content type nor (browsers set it) this Origin."""
        origin = self.headers.get("Origin")
        if origin is not None and origin.lower() != f"http://{self.headers['Host'].lower()}":
            raise BadRequest("writes from another origin are refused", HTTPStatus.FORBIDDEN)
        if self.headers.get_content_type() != "application/json":
            raise BadRequest("a write must be Content-Type: application/json", HTTPStatus.UNSUPPORTED_MEDIA_TYPE)

    def refuse(self, url, body):
        raise BadRequest("use GET or POST", HTTPStatus.METHOD_NOT_ALLOWED)

    def json_request(self, url, read):
        """A write: checked, its JSON body parsed, then passed to the subclass's post(url, body)."""
        self.check_write()
        body, too_big = read
        if url.path not in self.POST_PATHS:
            raise BadRequest("not found", HTTPStatus.NOT_FOUND)
        if body is None:
            raise BadRequest("a JSON body with a Content-Length is needed", HTTPStatus.LENGTH_REQUIRED)
        if too_big:
            raise BadRequest(f"the body must be at most {self.body_limit()} bytes", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        try:
            body = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: [[[[...]]]] nested thousands deep
            raise BadRequest("the body is not valid JSON") from None
        self.post(url, body)

    def send_json(self, value):
        self.send(HTTPStatus.OK, json.dumps(value).encode(), "application/json")

    def read_body(self):
        """(body bytes, or None without a Content-Length; too_big). A body over body_limit() is read and dropped
        (up to MAX_DRAIN, or the path's limit where larger) so that the answer reaches the client; a larger one is
        left unread. A body cut short, or late past the request's deadline, is a 400 or 408 and ends the
        connection."""
        try:
            length = max(int(self.headers["Content-Length"]), 0)
        except (TypeError, ValueError):
            return None, False
        limit = self.body_limit()
        if length > max(MAX_DRAIN, limit):
            self.close_connection = True
            return b"", True
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            self.close_connection = True
            raise BadRequest(f"the body took over {self.timeout:g} s to arrive", HTTPStatus.REQUEST_TIMEOUT) \
                from None
        if len(body) < length:
            self.close_connection = True
            raise BadRequest("the body is shorter than its Content-Length")
        if length > limit:
            self.close_connection = True
            return b"", True
        return body, False

    def body_limit(self):
        """The largest body the request's path takes: MAX_BODY, or more where BODY_LIMITS says."""
        try:
            path = urlsplit(self.path).path
        except ValueError:
            path = ""
        return self.BODY_LIMITS.get(path, MAX_BODY)

    def send(self, status, body, content_type):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")  # a restart may serve another checkpoint on this port
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        if self.server.verbose:
            super().log_message(format, *args)


class ExploreServer(ThreadingHTTPServer):
    """One thread per connection, at most MAX_THREADS at once; the Host names and token it accepts. `handler`:
    a SecureHandler subclass with the routes; `app`: what the routes serve (handler.server.app)."""

    daemon_threads = True
    request_queue_size = 64  # connections waiting for a thread; the default 5 would refuse a page's burst

    def __init__(self, port, handler, app, verbose=False, read_timeout=10.0, host=HOST):
        self.address_family, loopback = listen_address(host)
        super().__init__((host, port), handler)
        self.app, self.verbose, self.read_timeout = app, verbose, read_timeout
        self.token = secrets.token_urlsafe(24)
        self.threads = threading.BoundedSemaphore(MAX_THREADS)
        port = self.server_address[1]
        name = f"[{host}]" if ":" in host else host  # an IPv6 address in a URL and a Host header
        also = (f"127.0.0.1:{port}", f"localhost:{port}") if loopback else ()  # other names of this machine
        self.hosts = tuple(dict.fromkeys([f"{name.lower()}:{port}", *also]))
        self.url = f"http://{name}:{port}/?token={self.token}"

    def token_matches(self, token):
        return hmac.compare_digest(token.encode(), self.token.encode())  # in constant time: no guessing by timing

    def process_request(self, request, client_address):
        self.threads.acquire()  # when all are busy, wait: a slow client frees its thread within read_timeout
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.threads.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.threads.release()


def listen_address(host):
    """(address family, whether every address of `host` is loopback); a wildcard is refused: a request must name
    the server in its Host header, and 0.0.0.0 is the name of no server."""
    if host in ("", "0.0.0.0", "::", "*"):
        raise UserError(f"--host {host!r} would listen on every interface, but the server answers only requests "
                        "addressed to the name it listens on: give this machine's address on one network, e.g. "
                        "--host 192.168.1.20")
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise UserError(f"--host {host}: no such address or name on this machine's network") from None
    loopback = all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)
    return infos[0][0], loopback
