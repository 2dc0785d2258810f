"""explore.py: the API answers like generate.py, bad requests get a 4xx and the server keeps serving, other web
pages (foreign Host, no token, cross-origin writes) and slow clients are refused, and the page works in a real
headless browser (skipped where Playwright or Chromium is missing)."""
import base64
import http.client
import io
import json
import os
import select
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import REPO
from PIL import Image

from fakefacegen.checkpoint import load_generator
from fakefacegen.data.toyfaces import toyfaces
from fakefacegen.editing import latent_directions, projection
from fakefacegen.sampling import render, sample_noise

READ_TIMEOUT = 2  # seconds: short, so that the slow-client test is quick
MAX_THREADS = 16  # explore.MAX_THREADS (explore.py is a script: tests do not import it)


@pytest.fixture(scope="module")
def server(tiny_run, tmp_path_factory):
    """explore.py on a free port of 127.0.0.1, as a user starts it: host, port, url (the printed one, with the
    token), token, folder (latent dir), ckpt, pid."""
    cwd, ckpt = tiny_run
    folder = tmp_path_factory.mktemp("explore_latent")
    proc = subprocess.Popen([sys.executable, str(REPO / "explore.py"), "--ckpt", str(ckpt), "--port", "0",
                             "--device", "cpu", "--latent-dir", str(folder), "--read-timeout", str(READ_TIMEOUT)],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        line = proc.stdout.readline() if ready else ""
        assert line.startswith("explore: http://127.0.0.1:"), (line, proc.poll())
        url = line.split()[1]
        port = int(url.split("http://127.0.0.1:")[1].split("/")[0])
        token = url.split("/?token=")[1]
        advice = proc.stdout.readline()  # the line for scripts
        yield SimpleNamespace(host="127.0.0.1", port=port, url=url, token=token, folder=folder, ckpt=ckpt,
                              pid=proc.pid, advice=advice)
        assert proc.poll() is None, "the server died"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def call(server, method, path, body=None, headers=None):
    """(status, content type, body bytes) of a request as the page sends it (the token header; JSON content
    type with a body); body: a dict/list (sent as JSON), bytes, or None; a header given None is left out."""
    connection = http.client.HTTPConnection(server.host, server.port, timeout=30)
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
    sent = {"X-Explore-Token": server.token, **({"Content-Type": "application/json"} if body is not None else {})}
    sent.update(headers or {})
    connection.request(method, path, body=body, headers={k: v for k, v in sent.items() if v is not None})
    response = connection.getresponse()
    result = response.status, response.getheader("Content-Type"), response.read()
    connection.close()
    return result


def face(png):
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_api_draws_the_faces_generate_draws(server):
    folder = server.folder
    G, _ = load_generator(server.ckpt)
    status, kind, page = call(server, "GET", f"/?token={server.token}", headers={"X-Explore-Token": None})
    assert status == 200 and kind.startswith("text/html") and b"FakeFaceGen explorer" in page
    info = json.loads(call(server, "GET", "/api/info")[2])
    assert info["res"] == 32 and info["nz"] == 100 and len(info["sefa"]) == 8 and info["vectors"] == []

    status, kind, png = call(server, "GET", "/api/face?seed=3")
    assert status == 200 and kind == "image/png"
    assert np.array_equal(face(png), render(G, sample_noise([3], 100), "cpu")[0])  # seeds mean what they mean
    assert np.array_equal(face(call(server, "POST", "/api/render", {"seed": 3})[2]), face(png))
    directions, _ = latent_directions.sefa(latent_directions.first_layer_weight(G), 8)
    moved = call(server, "POST", "/api/render", {"seed": 3, "sefa": [0, 2.5]})[2]
    assert np.array_equal(face(moved), render(G, sample_noise([3], 100) + 2.5 * directions[1], "cpu")[0])
    halfway = face(call(server, "POST", "/api/render", {"seed": 3, "seed_b": 4, "t": 0.5})[2])
    assert not np.array_equal(halfway, face(png))

    # + and - labels build a vector on the spot; it is saved in the run's latent folder and usable at once.
    status, _, body = call(server, "POST", "/api/vector", {"name": "mine", "positive": [1, 2], "negative": [5]})
    assert status == 200 and json.loads(body)["vectors"] == ["mine"]
    z = sample_noise([1, 2, 5], 100)
    vector = z[:2].mean(0) - z[2]
    assert torch.allclose(latent_directions.load_vector(folder, "mine", 100), vector, atol=1e-6)
    edited = call(server, "POST", "/api/render", {"seed": 3, "vectors": {"mine": -1.5}})[2]
    assert np.array_equal(face(edited), render(G, sample_noise([3], 100) - 1.5 * vector, "cpu")[0])


def png_base64(image):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def data_url_image(url):
    assert url.startswith("data:image/png;base64,")
    return face(base64.b64decode(url.split(",", 1)[1]))


PNG_1X1 = png_base64(np.zeros((1, 1, 3), np.uint8))

BAD_REQUESTS = [
    ("GET", "/api/face?seed=-1", None, 400),
    ("GET", "/api/face?seed=abc", None, 400),
    ("GET", "/api/face?seed=99999999999", None, 400),
    ("GET", "/api/face?seed=1&seed=2", None, 400),
    ("GET", "/api/face?seed=1&a=1&b=2&c=3&d=4&e=5", None, 400),
    ("GET", "/api/face?" + "&" * 10_000, None, 400),
    ("GET", "/api/face?seed=%ff%fe", None, 400),
    ("GET", "/api/face", None, 400),
    ("POST", "/api/render", {"seed": 1, "sefa": [100]}, 400),
    ("POST", "/api/render", {"seed": 1, "sefa": [0] * 9}, 400),
    ("POST", "/api/render", {"seed": 1, "sefa": ["1"]}, 400),
    ("POST", "/api/render", {"seed": 1, "sefa": [10**400]}, 400),
    ("POST", "/api/render", {"seed": 1.5}, 400),
    ("POST", "/api/render", {"seed": True}, 400),
    ("POST", "/api/render", {"seed": 1, "seed_b": 2, "t": 2}, 400),
    ("POST", "/api/render", b'{"seed": 1, "sefa": [NaN]}', 400),
    ("POST", "/api/render", {"seed": 1, "vectors": {"nosuch": 1}}, 404),
    ("POST", "/api/render", {"seed": 1, "vectors": {"../../etc/passwd": 1}}, 400),
    ("POST", "/api/render", {"seed": 1, "vectors": {"mine": 99}}, 400),
    ("POST", "/api/render", {"seed": 1, "extra": 1}, 400),
    ("POST", "/api/render", b"{not json", 400),
    ("POST", "/api/render", b"\xff\xfe", 400),
    ("POST", "/api/render", [1, 2], 400),
    ("POST", "/api/render", b"[" * 30_000, 400),
    ("POST", "/api/render", b"x" * 70_000, 413),
    ("POST", "/api/vector", {"name": "a/b", "positive": [1], "negative": [2]}, 400),
    ("POST", "/api/vector", {"name": "ok", "positive": [1], "negative": [1]}, 400),
    ("POST", "/api/vector", {"name": "ok", "positive": [], "negative": [2]}, 400),
    ("GET", "/../../etc/passwd", None, 404),
    ("GET", "/%2e%2e/%2e%2e/etc/passwd", None, 404),
    ("GET", "/explore.py", None, 404),
    ("GET", "/api/../explore.html", None, 404),
    ("GET", "/api/render", None, 404),
    ("POST", "/", {}, 404),
    ("PUT", "/api/render", {"seed": 1}, 405),
    ("POST", "/api/render", {"seed": 1, "code": "x"}, 400),
    ("POST", "/api/render", {}, 400),
    ("POST", "/api/render", {"code": "nosuch"}, 404),
    ("POST", "/api/render", {"code": "../../etc/passwd"}, 400),
    ("POST", "/api/render", {"seed": 1, "psi": 1.5}, 400),
    ("POST", "/api/strip", {"face": {"seed": 1}, "along": "sefa:99"}, 400),
    ("POST", "/api/strip", {"face": {"seed": 1}, "along": "vector:nosuch"}, 404),
    ("POST", "/api/strip", {"face": {"seed": 1}, "along": "sefa:0", "steps": 500}, 400),
    ("POST", "/api/strip", {"face": {"seed": 1}, "along": "sefa:0", "strength": 100}, 400),
    ("POST", "/api/project", {"image": "not base64!"}, 400),
    ("POST", "/api/project", {"image": base64.b64encode(b"not an image").decode()}, 422),
    ("POST", "/api/project", {"image": PNG_1X1}, 422),
    ("POST", "/api/project", {"image": PNG_1X1, "crop": "../x"}, 400),
    ("POST", "/api/project", {"image": PNG_1X1, "extra": 1}, 400),
    ("POST", "/api/project", {"image": "A" * (8 * 2**20 * 4 // 3 + 100)}, 413),  # explore.MAX_PHOTO
    ("POST", "/api/project", {"image": base64.b64encode(bytes(8 * 2**20 + 1)).decode()}, 413),  # one byte over
    ("POST", "/api/project", {"image": base64.b64encode(bytes(8 * 2**20)).decode()}, 422),  # the limit: not a photo
    ("POST", "/api/strip", {"face": {"seed": 1}, "along": "sefa:0", "steps": 2.5}, 400),
]


def test_bad_requests_get_4xx_and_the_server_keeps_serving(server):
    for method, path, body, expected in BAD_REQUESTS:
        status, kind, answer = call(server, method, path, body)
        assert status == expected, (method, path, body, status, answer[:200])
        assert kind == "application/json" and len(json.loads(answer)["error"]) < 200
        assert b"root:" not in answer
    # Raw requests: no Content-Length, a header line too long, a request line that is not HTTP at all (which
    # http.server answers 400 in HTTP/0.9 style: the error page without a status line).
    allowed = f"Host: 127.0.0.1:{server.port}\r\nX-Explore-Token: {server.token}\r\n".encode()
    raw_requests = {b"POST /api/render HTTP/1.0\r\nContent-Type: application/json\r\n" + allowed + b"\r\n":
                    b"HTTP/1.0 411",
                    b"GET / HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n": b"HTTP/1.0 431",
                    b"NONSENSE\r\n\r\n": b"Error code: 400",
                    b"GET http://evil.example/ HTTP/1.1\r\n" + allowed + b"\r\n": b"HTTP/1.0 400",
                    b"GET * HTTP/1.1\r\n" + allowed + b"\r\n": b"HTTP/1.0 400",
                    b"GET //[evil HTTP/1.1\r\n" + allowed + b"\r\n": b"HTTP/1.0 4"}  # http.server: /[evil, 404
    for request, expected in raw_requests.items():
        with socket.create_connection((server.host, server.port), timeout=10) as raw:
            raw.sendall(request)
            assert expected in raw.recv(1000), request[:40]
    assert call(server, "GET", "/api/info")[0] == 200
    assert call(server, "GET", "/api/face?seed=7")[0] == 200


def error_of(answer):
    return json.loads(answer)["error"]


def closed(sock):
    """True once the server has closed the connection (EOF, or a reset for the bytes sent after it)."""
    try:
        return sock.recv(1000) == b""
    except ConnectionResetError:
        return True


def test_a_foreign_host_is_refused(server):
    """DNS rebinding: a name the attacker points at 127.0.0.1 reaches the server with Host: that name."""
    page = f"/?token={server.token}"
    for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}", f"LOCALHOST:{server.port}"):
        assert call(server, "GET", page, headers={"Host": host, "X-Explore-Token": None})[0] == 200
        assert call(server, "GET", "/api/info", headers={"Host": host})[0] == 200
    for host in ("evil.example", f"evil.example:{server.port}", f"127.0.0.1:{server.port + 1}", "127.0.0.1", ""):
        for method, path, body in (("GET", page, None), ("GET", "/api/info", None), ("GET", "/api/face?seed=1", None),
                                   ("POST", "/api/render", {"seed": 1}), ("PUT", "/api/render", {})):
            status, _, answer = call(server, method, path, body, headers={"Host": host})
            assert status == 403 and "Host" in error_of(answer), (host, method, path, status)
    with socket.create_connection((server.host, server.port), timeout=10) as raw:  # no Host at all
        raw.sendall(f"GET /api/info HTTP/1.0\r\nX-Explore-Token: {server.token}\r\n\r\n".encode())
        assert raw.recv(1000).startswith(b"HTTP/1.0 403")


def test_the_token_is_needed(server):
    """Other pages in the user's browser do not know the token: no page, no faces, no writes without it."""
    no_token = {"X-Explore-Token": None}
    for path in (f"/?token={server.token}", f"/index.html?token={server.token}"):
        assert call(server, "GET", path, headers=no_token)[0] == 200
    for token in (None, "", server.token[:-1], server.token + "x", server.token.upper(), "\xe9" * len(server.token)):
        for method, path, body in (("GET", "/api/info", None), ("GET", "/api/face?seed=1", None),
                                   ("POST", "/api/render", {"seed": 1}), ("GET", "/", None), ("GET", "/nosuch", None)):
            status, _, answer = call(server, method, path, body, headers={"X-Explore-Token": token})
            assert status == 403 and "?token=" in error_of(answer), (token, method, path, status)
    for query in ("", "?token=", "?token=wrong", f"?token={server.token}&token={server.token}",
                  f"?token={server.token}x", f"?t={server.token}"):
        assert call(server, "GET", "/" + query, headers=no_token)[0] == 403, query
    status, _, answer = call(server, "GET", f"/api/info?token={server.token}", headers=no_token)
    assert status == 403 and "X-Explore-Token header" in error_of(answer)  # the API: header only, and it says so
    assert call(server, "GET", "/?" + "a&" * 100 + f"token={server.token}", headers=no_token)[0] == 400


def test_cross_origin_writes_are_refused_and_the_saved_vector_is_unchanged(server):
    """What another site can send (a form post, a no-cors fetch: text/plain, its own Origin) cannot overwrite a
    vector, and its preflight for a JSON post is refused; the page's own writes still pass."""
    path = latent_directions.vector_path(server.folder, "kept")
    assert call(server, "POST", "/api/vector", {"name": "kept", "positive": [1], "negative": [2]})[0] == 200
    saved = path.read_bytes()
    attack = {"name": "kept", "positive": [3], "negative": [4]}
    same_origin = f"http://127.0.0.1:{server.port}"
    refused = [({"Origin": "http://evil.example", "Content-Type": "text/plain", "X-Explore-Token": None}, 403),
               ({"Origin": "http://evil.example"}, 403), ({"Origin": "null"}, 403),
               ({"Origin": f"http://127.0.0.1:{server.port + 1}"}, 403),
               ({"Origin": f"http://localhost:{server.port}"}, 403),  # Host is 127.0.0.1: another origin
               ({"Origin": same_origin, "Content-Type": "text/plain"}, 415),
               ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
               ({"Content-Type": "multipart/form-data; boundary=x"}, 415), ({"Content-Type": None}, 415),
               ({"Content-Type": "application/json, text/plain"}, 415)]
    for headers, expected in refused:
        status, _, answer = call(server, "POST", "/api/vector", attack, headers)
        assert status == expected, (headers, status, answer)
        assert path.read_bytes() == saved, headers
    preflight = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    assert call(server, "OPTIONS", "/api/vector", headers=preflight)[0] == 405
    headers = {"Origin": same_origin, "Content-Type": "application/json; charset=utf-8"}
    assert call(server, "POST", "/api/vector", attack, headers)[0] == 200  # so the checks above were what refused
    assert path.read_bytes() != saved


def test_slow_clients_are_dropped_and_do_not_hold_up_others(server):
    """One deadline per request: a client that sends a header line every 0.3 s (a plain socket timeout would
    never fire), one that sends nothing and one whose body stops short are dropped after READ_TIMEOUT seconds,
    while a normal request is answered at once."""
    address = (server.host, server.port)
    start = time.monotonic()
    idle, slow, short = (socket.create_connection(address, timeout=10) for _ in range(3))
    try:
        slow.sendall(b"GET /api/info HTTP/1.1\r\n")
        short.sendall(f"POST /api/vector HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nX-Explore-Token: "
                      f"{server.token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                      '{"name": "slow"'.encode())
        assert call(server, "GET", "/api/info")[0] == 200
        assert time.monotonic() - start < READ_TIMEOUT * 0.75
        dropped = None
        while dropped is None and time.monotonic() - start < READ_TIMEOUT + 5:
            if select.select([slow], [], [], 0.3)[0]:
                dropped = time.monotonic() - start
            else:
                try:
                    slow.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    dropped = time.monotonic() - start
        assert dropped is not None and READ_TIMEOUT * 0.8 < dropped < READ_TIMEOUT + 2, dropped
        assert closed(slow)
        assert short.recv(1000).startswith(b"HTTP/1.0 408")
        assert closed(idle) and time.monotonic() - start < READ_TIMEOUT + 3
        assert not latent_directions.vector_path(server.folder, "slow").exists()
    finally:
        for sock in (idle, slow, short):
            sock.close()


def threads_of(pid):
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("Threads:"))


def test_connections_beyond_the_cap_wait_for_a_thread(server):
    """30 silent connections get at most MAX_THREADS threads; the others wait their turn, and all are served."""
    if not os.path.exists(f"/proc/{server.pid}/status"):
        pytest.skip("needs Linux's /proc to count the server's threads")
    base = threads_of(server.pid)
    sockets = [socket.create_connection((server.host, server.port), timeout=10) for _ in range(30)]
    try:
        deadline = time.monotonic() + READ_TIMEOUT / 2  # before the first ones are dropped
        while threads_of(server.pid) - base < MAX_THREADS and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        assert MAX_THREADS // 2 <= threads_of(server.pid) - base <= MAX_THREADS
    finally:
        for sock in sockets:
            sock.close()
    assert call(server, "GET", "/api/info")[0] == 200


def test_a_photo_is_projected_saved_in_the_run_and_edited_like_a_seed(server):
    G, _ = load_generator(server.ckpt)
    photo = toyfaces([777_777], 96, 0)[0][0]
    status, kind, body = call(server, "POST", "/api/project", {"image": png_base64(photo), "crop": "center"})
    assert status == 200 and kind == "application/json", body[:300]
    answer = json.loads(body)
    assert answer["code"].startswith("upload-") and answer["pixel_rmse"] > 0
    assert np.array_equal(data_url_image(answer["photo"]), projection.photo_face(io.BytesIO(base64.b64decode(
        png_base64(photo))), 32, "center"))  # cut as preprocess.py cuts, at the generator's size
    code = projection.load_code(projection.code_path(server.folder, answer["code"]), 100)
    assert np.array_equal(data_url_image(answer["projection"]), render(G, code[None], "cpu")[0])
    assert (server.folder / "projected" / f"{answer['code']}.png").is_file()  # in the run's latent folder only
    assert answer["code"] in json.loads(call(server, "GET", "/api/info")[2])["codes"]
    # The code goes wherever a seed goes: rendering, truncation, a strip along a SeFa direction.
    rendered = call(server, "POST", "/api/render", {"code": answer["code"]})[2]
    assert np.array_equal(face(rendered), data_url_image(answer["projection"]))
    truncated = call(server, "POST", "/api/render", {"code": answer["code"], "psi": 0.5})[2]
    assert np.array_equal(face(truncated), render(G, 0.5 * code[None], "cpu")[0])
    status, kind, strip = call(server, "POST", "/api/strip", {"face": {"code": answer["code"]}, "along": "sefa:0",
                                                              "strength": 3, "steps": 5})
    assert status == 200 and kind == "image/png"
    tiles = face(strip)
    assert tiles.shape == (36, 5 * 34 + 2, 3)
    directions, _ = latent_directions.sefa(latent_directions.first_layer_weight(G), 8)
    assert np.array_equal(tiles[2:34, 2 + 34 * 4:34 + 34 * 4], render(G, code[None] + 3 * directions[0], "cpu")[0])
    assert np.array_equal(tiles[2:34, 2 + 34 * 2:34 + 34 * 2], data_url_image(answer["projection"]))


def test_a_cross_site_upload_is_refused_and_writes_nothing(server):
    before = sorted(p.name for p in server.folder.rglob("*"))
    photo = {"image": png_base64(toyfaces([5], 32, 0)[0][0])}
    for headers, expected in (({"Origin": "http://evil.example"}, 403), ({"X-Explore-Token": None}, 403),
                              ({"Content-Type": "text/plain"}, 415),
                              ({"Host": "evil.example"}, 403)):
        status, _, answer = call(server, "POST", "/api/project", photo, headers)
        assert status == expected, (headers, status, answer[:200])
    assert sorted(p.name for p in server.folder.rglob("*")) == before


def test_page_in_a_headless_browser(server, browser_page):
    """Chromium loads the page from the printed URL; the grid's faces arrive, moving a SeFa slider changes the face
    and labelled faces build a vector."""
    page, errors = browser_page
    page.goto(server.url)
    page.wait_for_function("Number(document.getElementById('face').dataset.version) >= 1")
    page.wait_for_function("document.getElementById('face').complete")
    read_face = """() => { const img = document.getElementById('face');
        const canvas = document.createElement('canvas');
        canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
        const context = canvas.getContext('2d'); context.drawImage(img, 0, 0);
        return Array.from(context.getImageData(0, 0, canvas.width, canvas.height).data); }"""
    before = page.evaluate(read_face)
    assert len(before) == 32 * 32 * 4
    assert page.locator("#grid img").count() == 24
    page.wait_for_function("[...document.querySelectorAll('#grid img')].every(i => i.naturalWidth === 32)")
    version = int(page.get_attribute("#face", "data-version"))
    page.focus("#sefa-0")
    for _ in range(20):
        page.keyboard.press("ArrowRight")  # 20 steps of 0.1: alpha = 2
    page.wait_for_function(f"Number(document.getElementById('face').dataset.version) > {version}")
    page.wait_for_function("!document.querySelector('#render-msg').textContent && "
                           "document.getElementById('face').complete")
    page.wait_for_timeout(300)  # let the last slider position's render land
    assert page.input_value("#sefa-0") == "2"
    after = page.evaluate(read_face)
    assert after != before
    # A write from the page itself (Chromium sends its Origin, the page the token) saves a vector.
    page.click("#grid .cell:nth-child(1) .plus")
    page.click("#grid .cell:nth-child(2) .minus")
    page.fill("#vector-name", "browser")
    page.click("#build")
    page.wait_for_function("document.getElementById('vector-msg').className === 'msg ok'", timeout=15_000)
    assert latent_directions.vector_path(server.folder, "browser").exists()
    # Your photo: a face goes in, its projection comes back and becomes the face the sliders edit; a strip of it.
    photo = server.folder.parent / "browser_photo.png"
    Image.fromarray(toyfaces([424_242], 64, 0)[0][0]).save(photo)
    version = int(page.get_attribute("#face", "data-version"))
    page.set_input_files("#photo-file", str(photo))
    page.wait_for_function("document.getElementById('photo-msg').className === 'msg ok'", timeout=60_000)
    page.wait_for_function("document.getElementById('projection').naturalWidth === 32")
    page.wait_for_function(f"Number(document.getElementById('face').dataset.version) > {version}")
    assert page.text_content("#caption").startswith("A = your photo (upload-")
    page.select_option("#strip-along", "sefa:0")
    page.click("#strip")
    page.wait_for_function("!document.getElementById('strip-image').hidden && "
                           "document.getElementById('strip-image').naturalWidth === 7 * 34 + 2")
    assert not errors, errors


def test_a_script_is_told_the_header_and_its_advice_works(server):
    """The start-up line for scripts names the header and a curl command; sent as it says, /api/info answers.
    --help and docs/editing.md name the header too."""
    assert server.advice.startswith("scripts: send the header X-Explore-Token: ") and "curl -H" in server.advice
    header, token = server.advice.split("curl -H '")[1].split("'")[0].split(": ")
    assert token == server.token
    connection = http.client.HTTPConnection(server.host, server.port, timeout=30)
    connection.request("GET", "/api/info", headers={header: token})  # http.client sends Host 127.0.0.1:PORT
    answer = connection.getresponse()
    assert answer.status == 200 and json.loads(answer.read())["nz"] == 100
    connection.close()
    assert "X-Explore-Token" in subprocess.run([sys.executable, str(REPO / "explore.py"), "--help"],
                                               capture_output=True, text=True).stdout
    api = (REPO / "docs" / "editing.md").read_text().split("### The explorer's API")[1]
    assert "X-Explore-Token" in api and "curl -H" in api and "/api/render" in api
