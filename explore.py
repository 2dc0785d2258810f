"""Explore a generator in your browser: a grid of faces, SeFa and attribute sliders, interpolation, labelling,
truncation, edit strips, and your own photo projected into the generator and edited with the same sliders.

    python explore.py --ckpt checkpoints/<run>/latest.pt            # then open the URL it prints
    python explore.py --ckpt ... --port 0 --device cpu              # any free port
    python explore.py --ckpt g.safetensors                          # a generator from generate.py --export

The page (explore.html) talks to a small JSON/PNG API on 127.0.0.1 (--host to serve on another address of this
machine, with a warning: anyone who reaches it with the URL can write vectors); nothing is served from disk but
that page, and the only files read or written are outputs/<run>/latent/sefa.pt, vectors/<name>.pt and
projected/<name>.npy, .png and .json (--latent-dir to change), the ones latent.py uses. Directions come from
sefa.pt when latent.py sefa made one, else they are computed at start (--k of them). An uploaded photo is cut
as the checkpoint's training data was, projected as latent.py project does, and its code saved as
projected/upload-<hash of the photo>.npy; the photo itself is not kept.

API: GET /api/info; GET /api/face?seed=S (a plain sample, PNG); POST /api/render with JSON {"seed": S or
"code": NAME (a projected code), "seed_b": S2, "t": 0..1, "psi": 0..1, "sefa": [alpha, ...], "vectors":
{"name": strength}} (PNG); POST /api/strip with {"face": a render request, "along": "sefa:K" or "vector:NAME",
"strength": S, "steps": N} (PNG, as latent.py edit draws); POST /api/vector with {"name": N, "positive":
[seeds], "negative": [seeds]} (builds and saves a vector); POST /api/project with {"image": the photo's bytes in
base64, "crop": "celeba" | "center" | "none"} (JSON: the code's name, the cut photo and its projection as PNG
data URLs, the distances), one at a time. Every API request carries the launch token in an X-Explore-Token
header (the printed URL's ?token= value opens the page only); a refused one is JSON {"error": "..."} with a
4xx status. docs/editing.md has a curl example.

The server checks every request's Host and launch token, and where writes come from
(fakefacegen/editing/explore_server.py); this file holds what it serves.
"""
import fakefacegen  # noqa: F401  (first: an older Python stops there with one line)

# isort: split
import base64
import binascii
import hashlib
import io
import math
import re
import sys
import threading
from http import HTTPStatus
from pathlib import Path

import torch
from PIL import Image

from fakefacegen.checkpoint import discriminator_from_state, generator_from_state, load_checkpoint
from fakefacegen.cli import SEED_MAX, ArgumentParser, UserError, resolve_device, run
from fakefacegen.data.image_files import CROPS, BadImage, crop_label
from fakefacegen.editing.explore_server import (
    HOST,
    PAGES,
    TOKEN_HEADER,
    BadRequest,
    ExploreServer,
    SecureHandler,
    listen_address,
    number,
    query_fields,
    whole_number,
)
from fakefacegen.editing.latent_directions import (
    NAME_PATTERN,
    attribute_vector,
    check_name,
    check_seed,
    default_latent_dir,
    edit_strip,
    first_layer_weight,
    list_vectors,
    load_sefa,
    load_vector,
    save_vector,
    sefa,
    vector_path,
)
from fakefacegen.editing.projection import (
    STARTS,
    STEPS,
    code_path,
    list_codes,
    load_code,
    photo_face,
    project,
    save_projection,
    training_crop,
)
from fakefacegen.grids import grid_image
from fakefacegen.runs import run_of_checkpoint
from fakefacegen.sampling import render, sample_noise, slerp, truncate

PAGE = Path(__file__).resolve().parent / "fakefacegen" / "editing" / "explore.html"
ALPHA_MAX = 6.0  # SeFa sliders, in standard deviations of z (the directions have unit norm)
STRENGTH_MAX = 3.0  # attribute sliders, in multiples of the saved vector
MAX_LABELLED = 1000  # seeds per side when building a vector
MAX_PHOTO = 8 * 2**20  # bytes of an uploaded photo: a phone's JPEG fits
MAX_STRIP_FRAMES = 15
RENDER_FIELDS = {"seed", "code", "seed_b", "t", "psi", "sefa", "vectors"}


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


def png_bytes(image):
    """uint8 (H, W, 3) or a PIL image -> PNG bytes."""
    buffer = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(image):
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode()


def decoded_photo(request):
    """The bytes of an upload request's photo, checked: base64, at most MAX_PHOTO."""
    if not isinstance(request, dict) or set(request) - {"image", "crop"} or not isinstance(request.get("image"), str):
        raise BadRequest('the body must be {"image": the photo\'s bytes in base64, "crop": "celeba|center|none"}')
    too_big = BadRequest(f"the photo must be at most {MAX_PHOTO // 2**20} MiB ({MAX_PHOTO} bytes)",
                         HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
    if len(request["image"]) > 4 * math.ceil(MAX_PHOTO / 3):  # base64's length for MAX_PHOTO bytes
        raise too_big
    try:
        data = base64.b64decode(request["image"], validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("image must be the photo's bytes in base64") from None
    if len(data) > MAX_PHOTO:  # base64's last group may carry one or two bytes past MAX_PHOTO
        raise too_big
    return data


class Explorer:
    """The generator, its SeFa directions and the run's saved vectors; thread-safe rendering."""

    def __init__(self, ckpt, device, latent_dir, k=8):
        loaded = load_checkpoint(ckpt, device)
        self.G, self.config = generator_from_state(loaded, ckpt, device), loaded["config"]
        self.D = discriminator_from_state(loaded, ckpt, device)  # None for an exported generator: pixels only
        self.device, self.latent_dir, self.ckpt = device, Path(latent_dir), Path(ckpt)
        saved = load_sefa(self.latent_dir, self.G.nz)
        self.directions, self.eigenvalues = saved or sefa(first_layer_weight(self.G), k)
        self.crop = training_crop(self.config)
        self.lock = threading.Lock()  # one forward pass at a time: the CPU is shared anyway
        self.projecting = threading.Lock()  # one upload at a time: the next is refused, not queued
        self.files = {}  # path -> (mtime, tensor): vectors and codes, reread when latent.py rewrites them

    def info(self):
        return {"run": run_of_checkpoint(self.ckpt), "res": self.G.res, "nz": self.G.nz,
                "sefa": [round(v, 4) for v in self.eigenvalues.tolist()], "vectors": self.vector_names(),
                "codes": list_codes(self.latent_dir), "crop": crop_label(self.crop),
                "limits": {"seed_max": SEED_MAX, "alpha_max": ALPHA_MAX, "strength_max": STRENGTH_MAX,
                           "name_pattern": NAME_PATTERN.pattern, "photo_bytes": MAX_PHOTO,
                           "strip_frames": MAX_STRIP_FRAMES}}

    def vector_names(self):
        return list_vectors(self.latent_dir)

    def cached(self, path, what, load):
        """load(path), reread only when the file changes; a missing file is a 404, a bad one a 422."""
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            raise BadRequest(f"unknown {what}", HTTPStatus.NOT_FOUND) from None
        if path not in self.files or self.files[path][0] != mtime:
            try:
                self.files[path] = mtime, load()
            except UserError as err:
                raise BadRequest(str(err), HTTPStatus.UNPROCESSABLE_ENTITY) from None
        return self.files[path][1]

    def vector(self, name):
        path = vector_path(self.latent_dir, vector_name(name))
        return self.cached(path, f"vector {name!r}", lambda: load_vector(self.latent_dir, name, self.G.nz))

    def code(self, name):
        path = code_path(self.latent_dir, vector_name(name))
        return self.cached(path, f"projected code {name!r}", lambda: load_code(path, self.G.nz))

    def base_of(self, request):
        """The face a render request starts from: a seed or a projected code, towards seed_b by t."""
        if (request.get("seed") is None) == (request.get("code") is None):
            raise BadRequest("give a seed or a code (a projected photo), not both")
        if request.get("code") is not None:
            z = self.code(request["code"])
        else:
            z = sample_noise([seed_value(request.get("seed"))], self.G.nz)[0]
        if request.get("seed_b") is not None:
            z_b = sample_noise([seed_value(request["seed_b"], "seed_b")], self.G.nz)[0]
            z = slerp(z, z_b, torch.tensor(number(request.get("t", 0), "t", 0, 1)))
        return truncate(z, number(request.get("psi", 1), "psi", 0, 1))

    def latent_of(self, request):
        """The latent code a render request describes, every field checked; truncation (psi) applies to the
        face before the sliders' edits, so an edit keeps its strength."""
        if not isinstance(request, dict):
            raise BadRequest("the body must be a JSON object")
        unknown = set(request) - RENDER_FIELDS
        if unknown:
            raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))[:80]}")
        z = self.base_of(request)
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
        return png_bytes(image)

    def strip(self, request):
        """A strip of a face moved along one direction, as latent.py edit draws it (PNG bytes)."""
        if not isinstance(request, dict) or set(request) - {"face", "along", "strength", "steps"}:
            raise BadRequest('the body must be {"face": {...}, "along": "sefa:K" or "vector:NAME", "strength": S, '
                             '"steps": N}')
        along = str(request.get("along", ""))
        kind, _, which = along.partition(":")
        if kind == "sefa" and re.fullmatch(r"[0-9]{1,4}", which) and int(which) < len(self.directions):
            direction, most = self.directions[int(which)], ALPHA_MAX
        elif kind == "vector":
            direction, most = self.vector(which), STRENGTH_MAX
        else:
            raise BadRequest(f"along must be sefa:0..{len(self.directions) - 1} or vector:NAME, not {along[:40]!r}")
        strength = number(request.get("strength", 2), "strength", 0, most)
        steps = whole_number(request.get("steps", 7), "steps", 2, MAX_STRIP_FRAMES)
        z = self.latent_of(request.get("face"))
        with self.lock:
            frames = edit_strip(self.G, z, direction, strength, steps, self.device)
        return png_bytes(grid_image(frames, ncols=len(frames)))

    def project_upload(self, request):
        """Project an uploaded photo as latent.py project does; its code is saved as projected/upload-<hash>."""
        data = decoded_photo(request)
        crop = self.crop if request.get("crop") is None else request["crop"]
        if crop not in CROPS:
            raise BadRequest(f"crop must be one of {', '.join(CROPS)}")
        try:
            face = photo_face(io.BytesIO(data), self.G.res, crop)
        except BadImage as err:
            raise BadRequest(f"the photo cannot be used: {err}", HTTPStatus.UNPROCESSABLE_ENTITY) from None
        if not self.projecting.acquire(blocking=False):
            raise BadRequest("another photo is being projected: send this one when it is done",
                             HTTPStatus.TOO_MANY_REQUESTS)
        try:
            with self.lock:
                result = project(self.G, face, self.D, progress=False)
        finally:
            self.projecting.release()
        name = "upload-" + hashlib.sha256(data + crop.encode()).hexdigest()[:12]
        meta = {"image": "uploaded to explore.py", "crop": crop, "ckpt": str(self.ckpt), "starts": STARTS,
                "steps": STEPS, "seed": 0, "perceptual": "discriminator" if self.D is not None else "none"}
        save_projection(self.latent_dir, name, face, result, meta)
        return {"code": name, "photo": data_url(face), "projection": data_url(result.sample), **result.summary()}

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


class Routes(SecureHandler):
    """The page and the API, by exact path."""

    POST_PATHS = ("/api/render", "/api/strip", "/api/vector", "/api/project")
    BODY_LIMITS = {"/api/project": MAX_PHOTO * 4 // 3 + 1024}  # base64 is 4/3 of the bytes, and the JSON around

    def get(self, url):
        app = self.server.app
        if url.path in PAGES:
            self.send(HTTPStatus.OK, PAGE.read_bytes(), "text/html; charset=utf-8")
        elif url.path == "/api/info":
            self.send_json(app.info())
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

    def post(self, url, body):
        app = self.server.app
        if url.path == "/api/render":
            self.send(HTTPStatus.OK, app.png(app.latent_of(body)), "image/png")
        elif url.path == "/api/strip":
            self.send(HTTPStatus.OK, app.strip(body), "image/png")
        elif url.path == "/api/project":
            self.send_json(app.project_upload(body))
        else:
            try:
                summary = app.build_vector(body)
            except UserError as err:
                raise BadRequest(str(err)) from None
            self.send_json(summary)


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
        server = ExploreServer(args.port, Routes, app, args.verbose, args.read_timeout, args.host)
    except OSError as err:
        raise UserError(f"cannot listen on {args.host}:{args.port} ({err.strerror}): pass another --port, or 0 "
                        "for any free one") from None
    if exposed:
        print(f"warning: --host {args.host} is reachable from other machines: anyone there with the URL below "
              f"can see the faces and save vectors into {app.latent_dir}, over plain HTTP; ssh -L to "
              f"{HOST} is safer", file=sys.stderr)
    print(f"explore: {server.url} (run {app.info()['run']}, "
          f"{len(app.directions)} SeFa directions, {len(app.vector_names())} saved vectors; Ctrl-C stops)")
    print(f"scripts: send the header {TOKEN_HEADER}: {server.token} with every /api/ request, e.g. curl -H "
          f"'{TOKEN_HEADER}: {server.token}' {server.url.split('/?')[0]}/api/info", flush=True)
    with server:
        server.serve_forever()


if __name__ == "__main__":
    run(main)
