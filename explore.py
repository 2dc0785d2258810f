"""Explore a generator in your browser: a grid of faces, SeFa and attribute sliders, interpolation, labelling.

    python explore.py --ckpt checkpoints/<run>/latest.pt            # then open the URL it prints
    python explore.py --ckpt ... --port 0 --device cpu              # any free port
    python explore.py --ckpt g.safetensors                          # a generator from generate.py --export

The page (explore.html) talks to a small JSON/PNG API on 127.0.0.1 (--host to serve on another address of this
machine, with a warning: anyone who reaches it with the URL can write vectors); nothing is served from disk but
that page, and the only files read or written are outputs/<run>/latent/sefa.pt and vectors/<name>.pt
(--latent-dir to change), the ones latent.py uses. Directions come from sefa.pt when latent.py sefa made
one, else they are computed at start (--k of them).

API: GET /api/info; GET /api/face?seed=S (a plain sample, PNG); POST /api/render with JSON
{"seed": S, "seed_b": S2, "t": 0..1, "sefa": [alpha, ...], "vectors": {"name": strength}} (PNG);
POST /api/vector with {"name": N, "positive": [seeds], "negative": [seeds]} (builds and saves a vector).

Any web page the user visits can send requests to 127.0.0.1, so every request must name this server in its Host
header (a DNS-rebound name does not) and carry the token drawn at launch: in the printed URL (?token=) for the
page, in an X-Explore-Token header for the API. A write must also be Content-Type: application/json and, when it
has an Origin, come from this server's origin. A client gets --read-timeout seconds to send each request, and at
most MAX_THREADS connections are served at once, so slow clients cannot hold the server.
"""
import hmac
import io
import ipaddress
import json
import math
import re
import secrets
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import torch
from PIL import Image

from fakefacegen.checkpoint import load_generator
from fakefacegen.cli import SEED_MAX, ArgumentParser, UserError, resolve_device, run
from fakefacegen.editing.latent_directions import (NAME_PATTERN, attribute_vector, check_name, check_seed,
                               default_latent_dir, first_layer_weight, list_vectors, load_sefa, load_vector,
                               save_vector, sefa, vector_path)
from fakefacegen.runs import run_of_checkpoint
from fakefacegen.sampling import render, sample_noise, slerp

PAGE = Path(__file__).resolve().parent / "fakefacegen" / "editing" / "explore.html"
HOST = "127.0.0.1"  # the default: this machine only, since the page can write files in the run's folder
ALPHA_MAX = 6.0  # SeFa sliders, in standard deviations of z (the directions have unit norm)
STRENGTH_MAX = 3.0  # attribute sliders, in multiples of the saved vector
MAX_BODY = 64 * 1024
MAX_DRAIN = 1024 * 1024  # a larger body is refused unread
MAX_LABELLED = 1000  # seeds per side when building a vector
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


def seed_value(value, what="seed"):
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,10}", value):  # query strings carry text
        value = int(value)
    try:
        return check_seed(value, what)
    except UserError as err:
        raise BadRequest(str(err)) from None


def vector_name(value):
    try:
        return check_name(value)
    except UserError as err:
        raise BadRequest(str(err)) from None


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


class Explorer:
    """The generator, its SeFa directions and the run's saved vectors; thread-safe rendering."""

    def __init__(self, ckpt, device, latent_dir, k=8):
        self.G, self.config = load_generator(ckpt, device)
        self.device, self.latent_dir, self.ckpt = device, Path(latent_dir), Path(ckpt)
        saved = load_sefa(self.latent_dir, self.G.nz)
        self.directions, self.eigenvalues = saved or sefa(first_layer_weight(self.G), k)
        self.lock = threading.Lock()  # one forward pass at a time: the CPU is shared anyway
        self.vectors = {}  # name -> (mtime, tensor): reread when latent.py rewrites the file

    def info(self):
        return {"run": run_of_checkpoint(self.ckpt), "res": self.G.res, "nz": self.G.nz,
                "sefa": [round(v, 4) for v in self.eigenvalues.tolist()], "vectors": self.vector_names(),
                "limits": {"seed_max": SEED_MAX, "alpha_max": ALPHA_MAX, "strength_max": STRENGTH_MAX,
                           "name_pattern": NAME_PATTERN.pattern}}

    def vector_names(self):
        return list_vectors(self.latent_dir)

    def vector(self, name):
        path = vector_path(self.latent_dir, vector_name(name))
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            raise BadRequest(f"unknown vector {name!r}", HTTPStatus.NOT_FOUND) from None
        if name not in self.vectors or self.vectors[name][0] != mtime:
            try:
                self.vectors[name] = mtime, load_vector(self.latent_dir, name, self.G.nz)
            except UserError as err:
                raise BadRequest(str(err), HTTPStatus.UNPROCESSABLE_ENTITY) from None
        return self.vectors[name][1]

    def latent_of(self, request):
        """The latent code a render request describes, every field checked."""
        if not isinstance(request, dict):
            raise BadRequest("the body must be a JSON object")
        unknown = set(request) - {"seed", "seed_b", "t", "sefa", "vectors"}
        if unknown:
            raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))[:80]}")
        z = sample_noise([seed_value(request.get("seed"))], self.G.nz)[0]
        if request.get("seed_b") is not None:
            z_b = sample_noise([seed_value(request["seed_b"], "seed_b")], self.G.nz)[0]
            z = slerp(z, z_b, torch.tensor(number(request.get("t", 0), "t", 0, 1)))
        alphas = request.get("sefa", [])
        if not isinstance(alphas, list) or len(alphas) > len(self.directions):
            raise BadRequest(f"sefa must be a list of at most {len(self.directions)} numbers")
        for i, alpha in enumerate(alphas):
            z = z + number(alpha, f"sefa[{i}]", -ALPHA_MAX, ALPHA_MAX) * self.directions[i]
        strengths = request.get("vectors", {})
        if not isinstance(strengths, dict) or len(strengths) > 64:
            raise BadRequest("vectors must be an object {name: strength}")
        for name, strength in strengths.items():
            s = number(strength, f"strength of {str(name)[:40]}", -STRENGTH_MAX, STRENGTH_MAX)
            z = z + s * self.vector(name)
        return z

    def png(self, z):
        with self.lock:
            image = render(self.G, z[None], self.device)[0]
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        return buffer.getvalue()

    def build_vector(self, request):
        """Save the attribute vector of the faces labelled + and - in the page; returns its summary."""
        if not isinstance(request, dict) or set(request) - {"name", "positive", "negative"}:
            raise BadRequest("the body must be {\"name\": ..., \"positive\": [seeds], \"negative\": [seeds]}")
        name = vector_name(request.get("name"))
        sides = []
        for key in ("positive", "negative"):
            seeds = request.get(key)
            if not isinstance(seeds, list) or not 1 <= len(seeds) <= MAX_LABELLED:
                raise BadRequest(f"{key} must be a list of 1 to {MAX_LABELLED} seeds (label faces with + and -)")
            sides.append([seed_value(s, f"{key} seed") for s in seeds])
        positive, negative = sides
        if set(positive) & set(negative):
            raise BadRequest("a seed cannot be labelled both + and -")
        z = sample_noise(positive + negative, self.G.nz)
        vector = attribute_vector(z, [1] * len(positive) + [0] * len(negative))
        save_vector(self.latent_dir, name, vector, {"source": "explore.py labels", "ckpt": str(self.ckpt),
                                                   "n_with": len(positive), "n_without": len(negative)})
        return {"name": name, "norm": round(vector.norm().item(), 4), "vectors": self.vector_names()}


class Handler(BaseHTTPRequestHandler):
    """Routes by exact path; the request path never names a file, so nothing else on disk can be read."""

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
        self.dispatch(self.get)

    def do_POST(self):
        self.dispatch(self.post)

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
            raise BadRequest("wrong or missing token: open the URL explore.py printed (it ends in ?token=...)",
                             HTTPStatus.FORBIDDEN)

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

    def get(self, url, body):
        app = self.server.app
        if url.path in PAGES:
            self.send(HTTPStatus.OK, PAGE.read_bytes(), "text/html; charset=utf-8")
        elif url.path == "/api/info":
            self.send(HTTPStatus.OK, json.dumps(app.info()).encode(), "application/json")
        elif url.path == "/api/face":
            query = query_fields(url, 4)
            if list(query) != ["seed"] or len(query["seed"]) != 1:
                raise BadRequest("use /api/face?seed=N")
            z = sample_noise([seed_value(query["seed"][0])], app.G.nz)[0]
            self.send(HTTPStatus.OK, app.png(z), "image/png")
        elif url.path == "/favicon.ico":
            self.send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        else:
            raise BadRequest("not found", HTTPStatus.NOT_FOUND)

    def post(self, url, read):
        app = self.server.app
        self.check_write()
        body, too_big = read
        if url.path not in ("/api/render", "/api/vector"):
            raise BadRequest("not found", HTTPStatus.NOT_FOUND)
        if body is None:
            raise BadRequest("a JSON body with a Content-Length is needed", HTTPStatus.LENGTH_REQUIRED)
        if too_big:
            raise BadRequest(f"the body must be at most {MAX_BODY} bytes", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        try:
            body = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: [[[[...]]]] nested thousands deep
            raise BadRequest("the body is not valid JSON") from None
        if url.path == "/api/render":
            self.send(HTTPStatus.OK, app.png(app.latent_of(body)), "image/png")
        else:
            try:
                summary = app.build_vector(body)
            except UserError as err:
                raise BadRequest(str(err)) from None
            self.send(HTTPStatus.OK, json.dumps(summary).encode(), "application/json")

    def read_body(self):
        """(body bytes, or None without a Content-Length; too_big). A body over MAX_BODY is read and dropped
        (up to MAX_DRAIN) so that the answer reaches the client; a larger one is left unread. A body cut short,
        or late past the request's deadline, is a 400 or 408 and ends the connection."""
        try:
            length = max(int(self.headers["Content-Length"]), 0)
        except (TypeError, ValueError):
            return None, False
        if length > MAX_DRAIN:
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
        if length > MAX_BODY:
            self.close_connection = True
            return b"", True
        return body, False

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
    """One thread per connection, at most MAX_THREADS at once; the Host names and token it accepts."""

    daemon_threads = True
    request_queue_size = 64  # connections waiting for a thread; the default 5 would refuse a page's burst

    def __init__(self, port, app, verbose=False, read_timeout=10.0, host=HOST):
        self.address_family, loopback = listen_address(host)
        super().__init__((host, port), Handler)
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


def build_parser():
    p = ArgumentParser(description=__doc__)
    p.add_argument("--ckpt", required=True, help="checkpoint of train.py or a generator from generate.py --export")
    p.add_argument("--host", default=HOST,
                   help=f"address to serve on (default {HOST}, this machine only); another one lets anyone who "
                        "reaches it and has the printed URL see faces and save vectors: a warning says so")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--latent-dir", help="saved directions and vectors (default outputs/<run>/latent/)")
    p.add_argument("--k", type=int, default=8, help="SeFa directions to compute when there is no sefa.pt")
    p.add_argument("--read-timeout", type=float, default=10.0,
                   help="seconds a client has to send each request, else it is dropped (default 10)")
    p.add_argument("--verbose", action="store_true", help="log every request")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be from 0 to 65535, not {args.port}")
    if args.k < 1:
        raise UserError(f"--k must be at least 1, not {args.k}")
    if not 0 < args.read_timeout <= 3600:
        raise UserError(f"--read-timeout must be over 0 and at most 3600 seconds, not {args.read_timeout:g}")
    exposed = not listen_address(args.host)[1]  # before loading anything: a bad --host is one line
    device = resolve_device(args.device)
    app = Explorer(args.ckpt, device, args.latent_dir or default_latent_dir(args.ckpt), args.k)
    try:
        server = ExploreServer(args.port, app, args.verbose, args.read_timeout, args.host)
    except OSError as err:
        raise UserError(f"cannot listen on {args.host}:{args.port} ({err.strerror}): pass another --port, or 0 "
                        "for any free one") from None
    if exposed:
        print(f"warning: --host {args.host} is reachable from other machines: anyone there with the URL below "
              f"can see the faces and save vectors into {app.latent_dir}, over plain HTTP; ssh -L to "
              f"{HOST} is safer", file=sys.stderr)
    print(f"explore: {server.url} (run {app.info()['run']}, "
          f"{len(app.directions)} SeFa directions, {len(app.vector_names())} saved vectors; Ctrl-C stops)",
          flush=True)
    with server:
        server.serve_forever()


if __name__ == "__main__":
    run(main)
