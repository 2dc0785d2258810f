"""explore.py: the API answers like generate.py, bad requests get a 4xx and the server keeps serving, and the
page works in a real headless browser (skipped where Playwright or Chromium is missing)."""
import http.client
import io
import json
import select
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import latent_directions
from checkpoint import load_generator
from conftest import REPO
from sampling import render, sample_noise

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def server(tiny_run, tmp_path_factory):
    """explore.py on a free port of 127.0.0.1, as a user starts it: (host, port, latent dir, checkpoint)."""
    cwd, ckpt = tiny_run
    folder = tmp_path_factory.mktemp("explore_latent")
    proc = subprocess.Popen([sys.executable, str(REPO / "explore.py"), "--ckpt", str(ckpt), "--port", "0",
                             "--device", "cpu", "--latent-dir", str(folder)], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        line = proc.stdout.readline() if ready else ""
        assert line.startswith("explore: http://127.0.0.1:"), (line, proc.poll())
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        yield "127.0.0.1", port, folder, ckpt
        assert proc.poll() is None, "the server died"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def call(server, method, path, body=None, headers=None):
    """(status, content type, body bytes); body: a dict/list (sent as JSON), bytes, or None."""
    host, port = server[:2]
    connection = http.client.HTTPConnection(host, port, timeout=30)
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    result = response.status, response.getheader("Content-Type"), response.read()
    connection.close()
    return result


def face(png):
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_api_draws_the_faces_generate_draws(server):
    _, _, folder, ckpt = server
    G, _ = load_generator(ckpt)
    status, kind, page = call(server, "GET", "/")
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


BAD_REQUESTS = [
    ("GET", "/api/face?seed=-1", None, 400),
    ("GET", "/api/face?seed=abc", None, 400),
    ("GET", "/api/face?seed=99999999999", None, 400),
    ("GET", "/api/face?seed=1&seed=2", None, 400),
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
]


def test_bad_requests_get_4xx_and_the_server_keeps_serving(server):
    for method, path, body, expected in BAD_REQUESTS:
        status, kind, answer = call(server, method, path, body)
        assert status == expected, (method, path, body, status, answer[:200])
        assert kind == "application/json" and len(json.loads(answer)["error"]) < 200
        assert b"root:" not in answer
    # Raw requests: no Content-Length, a header line too long, a request line that is not HTTP at all (which
    # http.server answers 400 in HTTP/0.9 style: the error page without a status line).
    raw_requests = {b"POST /api/render HTTP/1.0\r\n\r\n": b"HTTP/1.0 411",
                    b"GET / HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n": b"HTTP/1.0 431",
                    b"NONSENSE\r\n\r\n": b"Error code: 400"}
    for request, expected in raw_requests.items():
        with socket.create_connection(server[:2], timeout=10) as raw:
            raw.sendall(request)
            assert expected in raw.recv(1000), request[:40]
    assert call(server, "GET", "/api/info")[0] == 200
    assert call(server, "GET", "/api/face?seed=7")[0] == 200


def test_page_in_a_headless_browser(server):
    """Chromium loads the page; moving a SeFa slider changes the face."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no `playwright install`)",
                                   exc_type=ImportError)
    if not shutil.which(CHROMIUM):
        pytest.skip(f"no {CHROMIUM}: apt-get install -y chromium")
    host, port = server[:2]
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"http://{host}:{port}/")
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
            assert not errors, errors
        finally:
            browser.close()
